/**
 * Export (JSON Lines) and verification of the database and of an export file.
 *
 * Export format, one JSON object per line:
 *   {"type":"header","format":"bulwark-audit-export","version":1,"scope":"full"|"account",...}
 *   {"type":"public_key","key_id":…,"public_key_pem":…,"active":…}   every key that signed anything
 *   {"type":"anchor"|"checkpoint","seq","hash","at","key_id","signature"}
 *   {"type":"event","seq","hash","prev_hash","canonical"}              seq order; canonical is hashed
 *   {"type":"end","events":n}
 * A full export verifies offline (chain + checkpoints + truncation). An account export holds only
 * that account's events: each event's own link (hash = SHA-256(prev_hash‖0x0a‖canonical)) and the
 * checkpoints that fall on its events can be checked, but not completeness (one global chain).
 */
import pg from 'pg';
import type { Queryable } from '../../db/pool.ts';
import { checkpointLine, type PublicKeyInfo, toAuditCheckpoint } from './audit.checkpoints.ts';
import * as repo from './audit.repo.ts';
import {
  columnsMatch,
  type SignedCheckpoint,
  type VerifyReport,
  type VerifyRow,
  verifyLog,
} from './audit.verify.ts';
import { type AuditCheckpoint, chainHash, verifyCheckpoint } from './audit-chain.ts';

const PAGE = 5_000;

function signedCheckpoints(rows: repo.CheckpointRow[]): SignedCheckpoint[] {
  return rows.map((r) => ({ ...toAuditCheckpoint(r), kind: r.kind }));
}

/**
 * Runs fn on one connection inside a REPEATABLE READ READ ONLY transaction, so that the head,
 * checkpoints and rows are read from one snapshot while the chainer keeps appending (a pool lends
 * a connection for the duration; a client is used as is).
 */
async function* inSnapshot<T>(db: Queryable, fn: (c: Queryable) => AsyncGenerator<T>): AsyncGenerator<T> {
  const client = db instanceof pg.Pool ? await db.connect() : db;
  let open = false;
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    open = true;
    yield* fn(client);
  } finally {
    // Read only: ending it with ROLLBACK is the same as COMMIT, also when the consumer stops early.
    if (open) await client.query('ROLLBACK').catch(() => {});
    if (client !== db) (client as pg.PoolClient).release();
  }
}

/** Verifies the chain stored in the control database (one snapshot). */
export async function verifyDatabase(
  db: Queryable,
  publicKeys: Map<string, string>,
  extraCheckpoints: readonly SignedCheckpoint[] = [],
): Promise<VerifyReport> {
  let out: VerifyReport | undefined;
  for await (const r of inSnapshot(db, async function* (c) {
    yield await verifySnapshot(c, publicKeys, extraCheckpoints);
  })) {
    out = r;
  }
  return out!;
}

async function verifySnapshot(
  db: Queryable,
  publicKeys: Map<string, string>,
  /** Checkpoints kept elsewhere (the external checkpoint file): catch a rewritten database. */
  extraCheckpoints: readonly SignedCheckpoint[] = [],
): Promise<VerifyReport> {
  const checkpoints = [...signedCheckpoints(await repo.listCheckpoints(db)), ...extraCheckpoints];
  const head = await repo.readHead(db);
  const pending = (await repo.pendingStats(db)).count;
  const anchorSeq = checkpoints
    .filter((c) => c.kind === 'anchor')
    .reduce((m, c) => Math.max(m, Number(c.seq)), 0);
  async function* batches(): AsyncGenerator<VerifyRow[]> {
    let after = anchorSeq;
    for (;;) {
      const rows = await repo.chainedAfter(db, after, PAGE);
      if (rows.length === 0) return;
      yield rows.map((r) => ({
        seq: r.seq,
        canonical: r.canonical,
        hash: r.hash,
        check: () => columnsMatch(r.seq, repo.rowToEvent(r), r.canonical),
      }));
      after = rows.at(-1)!.seq;
      if (rows.length < PAGE) return;
    }
  }
  return verifyLog({ checkpoints, publicKeys, batches: batches(), head, pending });
}

/**
 * Export lines (each without the newline). `accountId` null: the whole chain (operators);
 * otherwise that account's events only.
 */
type ExportOptions = {
  accountId: string | null;
  publicKeys: readonly PublicKeyInfo[];
  /** An account export may keep only the events that match (each one still verifies on its own). */
  match?: repo.EventMatch;
};

export function exportLines(db: Queryable, opts: ExportOptions): AsyncGenerator<string> {
  return inSnapshot(db, (c) => exportSnapshot(c, opts));
}

async function* exportSnapshot(db: Queryable, opts: ExportOptions): AsyncGenerator<string> {
  const cps = await repo.listCheckpoints(db);
  const anchorSeq = cps.filter((c) => c.kind === 'anchor').reduce((m, c) => Math.max(m, c.seq), 0);
  const used = new Set(cps.map((c) => c.key_id));
  yield JSON.stringify({
    type: 'header',
    format: 'bulwark-audit-export',
    version: 1,
    scope: opts.accountId === null ? 'full' : 'account',
    account_id: opts.accountId,
    exported_at: new Date().toISOString(),
    ...(opts.match && Object.values(opts.match).some((v) => v !== undefined)
      ? { filter: JSON.parse(JSON.stringify(opts.match)) }
      : {}),
  });
  for (const k of opts.publicKeys) {
    if (k.active || used.has(k.keyId)) {
      yield JSON.stringify({
        type: 'public_key',
        key_id: k.keyId,
        public_key_pem: k.publicKeyPem,
        active: k.active,
      });
    }
  }
  for (const c of cps) {
    if (c.kind === 'checkpoint' && c.seq <= anchorSeq) continue;
    if (c.kind === 'anchor' && c.seq < anchorSeq) continue;
    yield checkpointLine(c.kind, toAuditCheckpoint(c));
  }
  let after = anchorSeq;
  let count = 0;
  for (;;) {
    const rows =
      opts.accountId === null
        ? await repo.chainedAfter(db, after, PAGE)
        : await repo.chainedAfterForAccount(db, opts.accountId, after, PAGE, opts.match);
    for (const r of rows) {
      count++;
      yield JSON.stringify({
        type: 'event',
        seq: String(r.seq),
        hash: r.hash.toString('hex'),
        prev_hash: r.prev_hash.toString('hex'),
        canonical: r.canonical,
      });
    }
    if (rows.length < PAGE) break;
    after = rows.at(-1)!.seq;
  }
  yield JSON.stringify({ type: 'end', events: count });
}

export class ExportFormatError extends Error {}

type ParsedExport = {
  scope: 'full' | 'account';
  accountId: string | null;
  keys: Map<string, string>;
  checkpoints: SignedCheckpoint[];
  events: { seq: number; canonical: string; hash: string; prev_hash: string }[];
  ended: boolean;
};

const HEX64 = /^[0-9a-f]{64}$/;

function str(o: Record<string, unknown>, k: string, line: number): string {
  const v = o[k];
  if (typeof v !== 'string') throw new ExportFormatError(`line ${line}: ${k} must be a string`);
  return v;
}

/** Parses an export (lines as read from the file). Throws ExportFormatError on malformed input. */
export async function parseExport(lines: AsyncIterable<string>): Promise<ParsedExport> {
  const out: ParsedExport = {
    scope: 'full',
    accountId: null,
    keys: new Map(),
    checkpoints: [],
    events: [],
    ended: false,
  };
  let n = 0;
  for await (const raw of lines) {
    n++;
    if (raw.trim() === '') continue;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(raw) as Record<string, unknown>;
    } catch {
      throw new ExportFormatError(`line ${n}: not JSON`);
    }
    if (n === 1) {
      if (o.type !== 'header' || o.format !== 'bulwark-audit-export' || o.version !== 1) {
        throw new ExportFormatError('not a Bulwark audit export (version 1)');
      }
      out.scope = o.scope === 'account' ? 'account' : 'full';
      out.accountId = typeof o.account_id === 'string' ? o.account_id : null;
      continue;
    }
    if (out.ended) throw new ExportFormatError(`line ${n}: data after the end line`);
    switch (o.type) {
      case 'public_key':
        out.keys.set(str(o, 'key_id', n), str(o, 'public_key_pem', n));
        break;
      case 'checkpoint':
      case 'anchor': {
        const cp: AuditCheckpoint = {
          seq: str(o, 'seq', n),
          hash: str(o, 'hash', n),
          at: str(o, 'at', n),
          keyId: str(o, 'key_id', n),
          signature: str(o, 'signature', n),
        };
        out.checkpoints.push({ ...cp, kind: o.type });
        break;
      }
      case 'event': {
        const hash = str(o, 'hash', n);
        const prev = str(o, 'prev_hash', n);
        const seq = Number(str(o, 'seq', n));
        if (!HEX64.test(hash) || !HEX64.test(prev) || !Number.isSafeInteger(seq)) {
          throw new ExportFormatError(`line ${n}: malformed event`);
        }
        out.events.push({ seq, canonical: str(o, 'canonical', n), hash, prev_hash: prev });
        break;
      }
      case 'end':
        if (o.events !== out.events.length) throw new ExportFormatError(`line ${n}: event count differs`);
        out.ended = true;
        break;
      default:
        throw new ExportFormatError(`line ${n}: unknown line type`);
    }
  }
  if (n === 0) throw new ExportFormatError('empty file');
  return out;
}

/**
 * Verifies a parsed export offline with the public keys it carries plus `extraKeys` (keys you
 * trust from elsewhere win on conflict) and extra checkpoints (e.g. the external checkpoint file).
 */
export async function verifyExport(
  ex: ParsedExport,
  opts: { extraKeys?: Map<string, string>; extraCheckpoints?: SignedCheckpoint[] } = {},
): Promise<VerifyReport & { scope: 'full' | 'account'; complete: boolean }> {
  const keys = new Map([...ex.keys, ...(opts.extraKeys ?? [])]);
  const checkpoints = [...ex.checkpoints, ...(opts.extraCheckpoints ?? [])];
  if (ex.scope === 'full') {
    async function* one(): AsyncGenerator<VerifyRow[]> {
      for (let i = 0; i < ex.events.length; i += PAGE) yield ex.events.slice(i, i + PAGE);
    }
    const r = await verifyLog({ checkpoints, publicKeys: keys, batches: one() });
    if (r.ok && !ex.ended) {
      return {
        ...r,
        ok: false,
        scope: 'full',
        complete: false,
        failure: {
          reason: 'tail_truncated',
          seq: r.head_seq + 1,
          expected_seq: r.head_seq + 1,
          detail: 'the export file is cut short (no end line)',
        },
      };
    }
    return { ...r, scope: 'full', complete: r.ok };
  }
  // Account scope: each event links to its stated predecessor hash; checkpoints on its events match.
  const base: VerifyReport = {
    ok: false,
    events: 0,
    anchor_seq: 0,
    head_seq: 0,
    checkpoints_checked: 0,
    pending: 0,
    failure: null,
    key_ids: [...new Set(checkpoints.map((c) => c.keyId))].sort(),
  };
  for (const c of checkpoints) {
    if (!verifyCheckpoint(c, keys)) {
      const seq = Number(c.seq);
      const failure = {
        reason: 'bad_signature' as const,
        seq,
        expected_seq: seq,
        detail: 'a checkpoint signature does not verify',
      };
      return { ...base, scope: 'account', complete: false, failure };
    }
  }
  const cpBySeq = new Map(
    checkpoints.filter((c) => c.kind === 'checkpoint').map((c) => [Number(c.seq), c.hash]),
  );
  let last = 0;
  for (const e of ex.events) {
    const bad = (reason: 'hash_mismatch' | 'reorder' | 'checkpoint_mismatch') => ({
      ...base,
      ok: false,
      scope: 'account' as const,
      complete: false,
      failure: { reason, seq: e.seq, expected_seq: e.seq, detail: `event ${e.seq}: ${reason}` },
    });
    if (e.seq <= last || !e.canonical.startsWith(`{"v":1,"seq":"${e.seq}"`)) return bad('reorder');
    if (chainHash(Buffer.from(e.prev_hash, 'hex'), e.canonical).toString('hex') !== e.hash)
      return bad('hash_mismatch');
    const cp = cpBySeq.get(e.seq);
    if (cp !== undefined && cp !== e.hash) return bad('checkpoint_mismatch');
    if (cp !== undefined) base.checkpoints_checked++;
    last = e.seq;
  }
  return {
    ...base,
    ok: ex.ended,
    events: ex.events.length,
    head_seq: last,
    scope: 'account',
    complete: false,
  };
}
