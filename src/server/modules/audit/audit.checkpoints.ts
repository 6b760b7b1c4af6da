/**
 * Signed checkpoints of the chain head, anchors for retention, and the public keys that verify
 * them. A checkpoint is also appended (one JSON line) to an external file when configured, so a
 * deleted tail stays detectable even by someone who rewrote the control database.
 */
import { appendFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { loadOrCreateSigningKey, loadPublicKeys, type SigningKey } from '../../crypto/signing-key.ts';
import { type Db, type Queryable, withTx } from '../../db/pool.ts';
import * as repo from './audit.repo.ts';
import { type AuditCheckpoint, signCheckpoint } from './audit-chain.ts';

export type PublicKeyInfo = { keyId: string; publicKeyPem: string; active: boolean };

export type CheckpointDeps = {
  db: Db;
  log: Logger;
  /** The server data dir: signing-key.pem (0600) and the retired public keys live there. */
  dataDir: string;
  /** Append each checkpoint as a JSON line here (optional). */
  checkpointFile?: string | undefined;
};

export function toAuditCheckpoint(r: repo.CheckpointRow): AuditCheckpoint {
  return {
    seq: String(r.seq),
    hash: r.hash.toString('hex'),
    at: r.at,
    keyId: r.key_id,
    signature: r.signature,
  };
}

/** The JSON line shipped to the external file and written into exports. */
export function checkpointLine(kind: 'checkpoint' | 'anchor', cp: AuditCheckpoint): string {
  return JSON.stringify({
    type: kind,
    seq: cp.seq,
    hash: cp.hash,
    at: cp.at,
    key_id: cp.keyId,
    signature: cp.signature,
  });
}

export function createCheckpointer(deps: CheckpointDeps) {
  let key: SigningKey | undefined;
  // Loaded on first use: a server that never signs (tests, a read-only replica) needs no key file.
  const signingKey = (): SigningKey => {
    key ??= loadOrCreateSigningKey(deps.dataDir);
    return key;
  };

  const sign = (seq: number, hash: Buffer): AuditCheckpoint =>
    signCheckpoint(signingKey(), { seq, hash, at: new Date().toISOString() });

  const ship = async (kind: 'checkpoint' | 'anchor', cp: AuditCheckpoint) => {
    if (!deps.checkpointFile) return;
    try {
      await appendFile(deps.checkpointFile, `${checkpointLine(kind, cp)}\n`, { mode: 0o600 });
    } catch (err) {
      // The checkpoint is stored in the database; the external copy is best effort, loudly.
      deps.log.error(
        { err: { message: (err as Error).message }, file: deps.checkpointFile },
        'could not append the audit checkpoint to the external file',
      );
    }
  };

  return {
    /**
     * Signs the current head. Returns null for an empty chain, or when `onlyIfAdvanced` and the
     * head has not moved since the last checkpoint.
     */
    async checkpoint(opts: { onlyIfAdvanced?: boolean } = {}): Promise<AuditCheckpoint | null> {
      const head = await repo.readHead(deps.db);
      if (head.seq === 0) return null;
      if (opts.onlyIfAdvanced && (await repo.lastCheckpointSeq(deps.db)) >= head.seq) return null;
      const cp = sign(head.seq, head.hash);
      await repo.insertCheckpoint(deps.db, {
        kind: 'checkpoint',
        seq: head.seq,
        hash: head.hash,
        at: cp.at,
        key_id: cp.keyId,
        signature: cp.signature,
      });
      await ship('checkpoint', cp);
      return cp;
    },

    /**
     * On demand (the API): the checkpoint of the current head. When the chain has not moved
     * since the newest checkpoint — except by `ignoredAction` events, the audit records of
     * on-demand checkpoints themselves, which would otherwise feed a new one each call — that
     * checkpoint is returned (`created: false`): nothing is signed, stored or appended. Else
     * `admit` runs (rate limit, audit event) in the transaction that stores the new one, under
     * a lock that serialises on-demand checkpoints across replicas; the external file gets
     * its line after commit.
     */
    async onDemand(
      ignoredAction: string,
      admit: (tx: Queryable, cp: AuditCheckpoint) => Promise<void>,
    ): Promise<{ checkpoint: AuditCheckpoint; created: boolean } | null> {
      const out = await withTx(deps.db, async (tx) => {
        await repo.lockOnDemandCheckpoints(tx);
        const head = await repo.readHead(tx);
        if (head.seq === 0) return null;
        const last = await repo.latestCheckpoint(tx);
        if (
          last &&
          (Number(last.seq) >= head.seq ||
            !(await repo.chainMovedBetween(tx, Number(last.seq), head.seq, ignoredAction)))
        ) {
          return { checkpoint: toAuditCheckpoint(last), created: false };
        }
        const cp = sign(head.seq, head.hash);
        await admit(tx, cp);
        await repo.insertCheckpoint(tx, {
          kind: 'checkpoint',
          seq: head.seq,
          hash: head.hash,
          at: cp.at,
          key_id: cp.keyId,
          signature: cp.signature,
        });
        return { checkpoint: cp, created: true };
      });
      if (out?.created) await ship('checkpoint', out.checkpoint);
      return out;
    },

    /** Signs and stores an anchor (retention) inside the pruning transaction. */
    async anchor(tx: Queryable, seq: number, hash: Buffer): Promise<AuditCheckpoint> {
      const cp = sign(seq, hash);
      await repo.insertCheckpoint(tx, {
        kind: 'anchor',
        seq,
        hash,
        at: cp.at,
        key_id: cp.keyId,
        signature: cp.signature,
      });
      return cp;
    },

    /** Ships an anchor after its transaction committed. */
    shipAnchor: (cp: AuditCheckpoint) => ship('anchor', cp),

    /** Active key first, then retired ones. Creates the key on first use. */
    publicKeys(): PublicKeyInfo[] {
      return publicKeysOf(deps.dataDir, signingKey());
    },
  };
}

export type Checkpointer = ReturnType<typeof createCheckpointer>;

/** The active key (created if missing) and the retired ones of a server data dir. */
export function publicKeysOf(dataDir: string, active = loadOrCreateSigningKey(dataDir)): PublicKeyInfo[] {
  const out: PublicKeyInfo[] = [{ keyId: active.keyId, publicKeyPem: active.publicKeyPem, active: true }];
  for (const [keyId, pem] of loadPublicKeys(dataDir)) {
    if (keyId !== active.keyId) out.push({ keyId, publicKeyPem: pem, active: false });
  }
  return out;
}

/** Parses checkpoint JSON lines (the external checkpoint file); malformed lines are an error. */
export function parseCheckpointLines(text: string): (AuditCheckpoint & { kind: 'checkpoint' | 'anchor' })[] {
  const out: (AuditCheckpoint & { kind: 'checkpoint' | 'anchor' })[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
    } catch {
      throw new Error(`checkpoint file line ${i + 1}: not JSON`);
    }
    const { type, seq, hash, at, key_id, signature } = o;
    if (
      (type !== 'checkpoint' && type !== 'anchor') ||
      typeof seq !== 'string' ||
      typeof hash !== 'string' ||
      typeof at !== 'string' ||
      typeof key_id !== 'string' ||
      typeof signature !== 'string'
    ) {
      throw new Error(`checkpoint file line ${i + 1}: not a checkpoint`);
    }
    out.push({ kind: type, seq, hash, at, keyId: key_id, signature });
  });
  return out;
}

/** keyId → PEM, as verifyCheckpoint wants it. */
export function keyMap(keys: readonly PublicKeyInfo[]): Map<string, string> {
  return new Map(keys.map((k) => [k.keyId, k.publicKeyPem]));
}
