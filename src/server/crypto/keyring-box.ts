import { statSync } from 'node:fs';
import { createSecretBox, loadKeyringFile, type SecretBox } from './secret-box.ts';

/**
 * A secret box over a keyring file that follows the file: after `bulwark master-key rotate`
 * adds a key, every running server seals with the new active key and can open values
 * re-sealed with it, without a restart. The file's mtime+size+inode is checked on each use
 * (one stat, a few µs); the file is re-read only when it changed.
 */
export function createKeyringFileBox(path: string): SecretBox {
  const stamp = () => {
    const st = statSync(path);
    return `${st.ino}:${st.size}:${st.mtimeMs}`;
  };
  let seen = stamp();
  let box = createSecretBox(loadKeyringFile(path));
  const current = (): SecretBox => {
    const now = stamp();
    if (now !== seen) {
      box = createSecretBox(loadKeyringFile(path));
      seen = now;
    }
    return box;
  };
  return {
    seal: (plaintext, context) => current().seal(plaintext, context),
    open: (sealed, context) => current().open(sealed, context),
    needsRotation: (sealed) => current().needsRotation(sealed),
    get activeKeyId() {
      return current().activeKeyId;
    },
  };
}
