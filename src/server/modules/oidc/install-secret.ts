/**
 * Install secrets: random keys this install makes once and keeps for good, shared by every
 * replica through the control database and sealed there with the master keyring (AAD
 * `install-secret:<name>`), so a copy of the database alone cannot use them. The first replica
 * that needs one makes it under an advisory lock; the others read it.
 */
import { randomBytes } from 'node:crypto';
import { unavailable } from '../../../shared/errors.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, withTx } from '../../db/pool.ts';
import * as repo from './oidc.repo.ts';

/** The secret of this name (32 bytes), loaded once; without a master key: 503. */
export function installSecret(deps: { db: Db; box: SecretBox | null; name: string }): () => Promise<Buffer> {
  const { db, name } = deps;
  const context = `install-secret:${name}`;
  let loaded: Promise<Buffer> | null = null;
  return async () => {
    const box = deps.box;
    if (!box)
      throw unavailable('Sign-in is unavailable: the server has no master key (BULWARK_MASTER_KEY_FILE)');
    loaded ??= (async () => {
      let sealed = await repo.findInstallSecret(db, name);
      sealed ??= await withTx(db, async (tx) => {
        await repo.lockInstallSecrets(tx);
        const existing = await repo.findInstallSecret(tx, name);
        if (existing) return existing;
        const made = box.seal(randomBytes(32).toString('base64url'), context);
        await repo.insertInstallSecret(tx, name, made);
        return made;
      });
      return Buffer.from(box.open(sealed, context), 'base64url');
    })();
    try {
      return await loaded;
    } catch (err) {
      loaded = null;
      throw err;
    }
  };
}
