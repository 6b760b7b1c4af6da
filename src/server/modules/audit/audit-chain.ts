/**
 * Pure core of the tamper-evident audit log: canonical encoding, hash chain, verification and
 * signed checkpoints. No I/O; the database layer builds on this.
 *
 * Chain: hash[n] = SHA-256(hash[n-1] || 0x0a || utf8(canonical[n])), hash[0] = 32 zero bytes
 * (GENESIS_HASH), seq starts at 1 and is strictly consecutive.
 *
 * Contract for the database layer:
 *   - Store `canonical` (text) and `hash` (bytea, or 64-char lowercase hex) per row, and verify
 *     those stored bytes. Never re-serialise a row to verify it.
 *   - Assign seq as head.seq + 1 while holding a lock on the chain head (e.g. a one-row
 *     `audit_head` table updated with SELECT … FOR UPDATE in the same transaction as the insert).
 *     Do NOT use a Postgres sequence/bigserial: sequences are not transactional, a rolled-back
 *     insert burns a number and would show up as a gap.
 *   - Periodically sign the head (signCheckpoint) and store checkpoints outside the audit table
 *     (ideally also shipped off-box). Pass them to verifyChain so that a rewritten chain (all
 *     hashes recomputed) or a truncated tail is detected.
 *   - Verify in batches by passing the previous batch's { headSeq, headHash } as `anchor`.
 *   - seq values above Number.MAX_SAFE_INTEGER (2^53 - 1) are not supported.
 */
import { createHash, hash as oneShotHash } from 'node:crypto';
import type { SigningKey } from '../../crypto/signing-key.ts';
import { verifySignature } from '../../crypto/signing-key.ts';

export type AuditActorType = 'user' | 'key' | 'agent' | 'system' | 'operator';
export type AuditOutcome = 'success' | 'failure' | 'denied';

export type AuditEventInput = {
  actorType: AuditActorType;
  actorId: string | null;
  action: string;
  targetType: string | null;
  targetId: string | null;
  accountId: string | null;
  sourceIp: string | null;
  outcome: AuditOutcome;
  requestId: string | null;
  details: Record<string, unknown>;
  /** ISO 8601 with a time zone, e.g. `2025-01-02T03:04:05.678Z`. */
  occurredAt: string;
};

export type SeqLike = bigint | number | string;
export type HashLike = Buffer | string;

export const GENESIS_HASH: Buffer = Buffer.alloc(32);
export const CANONICAL_VERSION = 1;
const SEP = 0x0a;

const ACTOR_TYPES: ReadonlySet<string> = new Set(['user', 'key', 'agent', 'system', 'operator']);
const OUTCOMES: ReadonlySet<string> = new Set(['success', 'failure', 'denied']);
const ISO_TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
const MAX_DETAILS_DEPTH = 32;

// ---------------------------------------------------------------------------------------------
// Canonical encoding

/** Every canonical string starts with this, immediately followed by the decimal seq and `"`. */
const SEQ_PREFIX = `{"v":${CANONICAL_VERSION},"seq":"`;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object') return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * Deterministic JSON of a details value: object keys sorted (UTF-16 code unit order, as in
 * RFC 8785) at every level, no whitespace, array order kept. Properties whose value is
 * `undefined` are omitted (as JSON.stringify does). Anything JSON cannot represent faithfully
 * is refused rather than silently changed: non-finite numbers, bigint, functions, symbols,
 * undefined inside arrays, and non-plain objects (Date, Map, Buffer, class instances…): convert
 * those to strings/plain objects first.
 */
function encodeValue(v: unknown, depth: number, path: string): string {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(v)) throw new TypeError(`audit details${path}: non-finite number`);
      return JSON.stringify(v);
    case 'object': {
      if (depth >= MAX_DETAILS_DEPTH)
        throw new TypeError(`audit details${path}: nested deeper than ${MAX_DETAILS_DEPTH}`);
      if (Array.isArray(v)) {
        let out = '[';
        for (let i = 0; i < v.length; i++) {
          const item: unknown = v[i];
          if (item === undefined) throw new TypeError(`audit details${path}[${i}]: undefined in array`);
          if (i > 0) out += ',';
          out += encodeValue(item, depth + 1, `${path}[${i}]`);
        }
        return out + ']';
      }
      if (!isPlainObject(v))
        throw new TypeError(`audit details${path}: only plain objects, arrays and primitives`);
      return encodeObject(v, depth, path);
    }
    default:
      throw new TypeError(`audit details${path}: unsupported type ${typeof v}`);
  }
}

function encodeObject(obj: Record<string, unknown>, depth: number, path: string): string {
  const keys = Object.keys(obj).sort();
  let out = '{';
  let first = true;
  for (const k of keys) {
    const val = obj[k];
    if (val === undefined) continue;
    if (!first) out += ',';
    first = false;
    out += JSON.stringify(k) + ':' + encodeValue(val, depth + 1, `${path}.${k}`);
  }
  return out + '}';
}

/** Canonical JSON of arbitrary details (exported for tests and for other hashed payloads). */
export function canonicalJson(details: Record<string, unknown>): string {
  if (!isPlainObject(details)) throw new TypeError('audit details must be a plain object');
  return encodeObject(details, 0, '');
}

function seqToString(seq: SeqLike, what = 'seq'): string {
  if (typeof seq === 'number') {
    if (Number.isSafeInteger(seq) && seq >= 1) return String(seq);
  } else if (typeof seq === 'bigint') {
    if (seq >= 1n && seq <= BigInt(Number.MAX_SAFE_INTEGER)) return seq.toString();
  } else if (typeof seq === 'string') {
    if (/^[1-9][0-9]{0,15}$/.test(seq) && Number.isSafeInteger(Number(seq))) return seq;
  }
  throw new TypeError(`${what} must be an integer between 1 and 2^53-1`);
}

function nullableString(v: unknown, field: string): string {
  if (v === null) return 'null';
  if (typeof v === 'string') return JSON.stringify(v);
  throw new TypeError(`audit event: ${field} must be a string or null`);
}

/**
 * The exact string stored and hashed for event `seq`. Field order is fixed:
 * v, seq, occurredAt, actorType, actorId, action, targetType, targetId, accountId, sourceIp,
 * outcome, requestId, details. seq is encoded as a JSON string (no precision loss in any
 * language).
 */
export function canonicalEncode(seq: bigint | number, e: AuditEventInput): string {
  const s = seqToString(seq);
  if (!e || typeof e !== 'object') throw new TypeError('audit event must be an object');
  if (!ACTOR_TYPES.has(e.actorType)) throw new TypeError('audit event: invalid actorType');
  if (!OUTCOMES.has(e.outcome)) throw new TypeError('audit event: invalid outcome');
  if (typeof e.action !== 'string' || e.action.length === 0)
    throw new TypeError('audit event: action is required');
  if (typeof e.occurredAt !== 'string' || !ISO_TIMESTAMP.test(e.occurredAt)) {
    throw new TypeError('audit event: occurredAt must be an ISO 8601 timestamp with a time zone');
  }
  return (
    SEQ_PREFIX +
    s +
    '","occurredAt":' +
    JSON.stringify(e.occurredAt) +
    ',"actorType":' +
    JSON.stringify(e.actorType) +
    ',"actorId":' +
    nullableString(e.actorId, 'actorId') +
    ',"action":' +
    JSON.stringify(e.action) +
    ',"targetType":' +
    nullableString(e.targetType, 'targetType') +
    ',"targetId":' +
    nullableString(e.targetId, 'targetId') +
    ',"accountId":' +
    nullableString(e.accountId, 'accountId') +
    ',"sourceIp":' +
    nullableString(e.sourceIp, 'sourceIp') +
    ',"outcome":' +
    JSON.stringify(e.outcome) +
    ',"requestId":' +
    nullableString(e.requestId, 'requestId') +
    ',"details":' +
    canonicalJson(e.details) +
    '}'
  );
}

// ---------------------------------------------------------------------------------------------
// Hash chain

function toHashBuffer(h: HashLike, what: string): Buffer {
  if (Buffer.isBuffer(h) && h.length === 32) return h;
  if (typeof h === 'string' && /^[0-9a-f]{64}$/.test(h)) return Buffer.from(h, 'hex');
  throw new TypeError(`${what} must be 32 bytes or 64 lowercase hex chars`);
}

/** SHA-256(prevHash || 0x0a || utf8(canonical)). Reference implementation. */
export function chainHash(prevHash: Buffer, canonical: string): Buffer {
  if (!Buffer.isBuffer(prevHash) || prevHash.length !== 32) throw new TypeError('prevHash must be 32 bytes');
  return createHash('sha256')
    .update(prevHash)
    .update(new Uint8Array([SEP]))
    .update(canonical, 'utf8')
    .digest();
}

export type ChainEntry = { seq: string; canonical: string; hash: Buffer };

/**
 * Builds the next entry after `head` (use { seq: 0, hash: GENESIS_HASH } for an empty log).
 * The database layer calls this while holding the chain-head lock.
 */
export function nextEntry(head: { seq: SeqLike; hash: HashLike }, e: AuditEventInput): ChainEntry {
  const prevSeq =
    head.seq === 0 || head.seq === 0n || head.seq === '0' ? 0 : Number(seqToString(head.seq, 'head.seq'));
  const canonical = canonicalEncode(prevSeq + 1, e);
  return {
    seq: String(prevSeq + 1),
    canonical,
    hash: chainHash(toHashBuffer(head.hash, 'head.hash'), canonical),
  };
}

// Hex digit value by char code (lowercase only, as stored), -1 otherwise.
const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) HEX_VALUE[48 + i] = i;
for (let i = 0; i < 6; i++) HEX_VALUE[97 + i] = 10 + i;

/**
 * Fast chain hasher. One reusable buffer holds prev || 0x0a || utf8(canonical); the digest is
 * taken with the one-shot crypto.hash as a 32-char binary string (much cheaper than a Buffer
 * result, whose allocation costs more than hashing 300 bytes) and copied back into the first
 * 32 bytes of the buffer, where it is the prev of the next step. Buffer views are cached per
 * length, so a step allocates only that short string.
 */
class ChainHasher {
  private buf: Buffer;
  private views: (Buffer | undefined)[];

  constructor(prev: Buffer) {
    this.buf = Buffer.allocUnsafe(33 + 4096);
    this.views = new Array<Buffer | undefined>(this.buf.length + 1);
    prev.copy(this.buf, 0, 0, 32);
    this.buf[32] = SEP;
  }

  /**
   * Advances the chain by `canonical` and reports whether the new hash equals `stored`
   * (32-byte Buffer or 64-char lowercase hex). The new hash becomes prev either way.
   */
  step(canonical: string, stored: HashLike): boolean {
    let buf = this.buf;
    if (33 + canonical.length * 3 > buf.length) {
      const bigger = Buffer.allocUnsafe(33 + canonical.length * 3);
      buf.copy(bigger, 0, 0, 33);
      this.buf = buf = bigger;
      this.views = new Array<Buffer | undefined>(buf.length + 1);
    }
    const total = 33 + buf.write(canonical, 33, 'utf8');
    let view = this.views[total];
    if (view === undefined) {
      view = buf.subarray(0, total);
      this.views[total] = view;
    }
    const d = oneShotHash('sha256', view, 'binary');
    let diff = 0;
    if (typeof stored === 'string') {
      if (stored.length !== 64) diff = 1;
      for (let j = 0; j < 32; j++) {
        const c = d.charCodeAt(j);
        buf[j] = c;
        const hi = stored.charCodeAt(2 * j);
        const lo = stored.charCodeAt(2 * j + 1);
        const v = hi < 128 && lo < 128 ? (HEX_VALUE[hi]! << 4) | HEX_VALUE[lo]! : -1;
        diff |= v < 0 ? 256 : c ^ v;
      }
    } else if (Buffer.isBuffer(stored) && stored.length === 32) {
      for (let j = 0; j < 32; j++) {
        const c = d.charCodeAt(j);
        buf[j] = c;
        diff |= c ^ stored[j]!;
      }
    } else {
      buf.write(d, 0, 'binary');
      diff = 1;
    }
    return diff === 0;
  }

  /** Whether the current hash equals a 32-byte buffer. */
  equals(h: Buffer): boolean {
    let diff = 0;
    for (let j = 0; j < 32; j++) diff |= this.buf[j]! ^ h[j]!;
    return diff === 0;
  }

  current(): Buffer {
    return Buffer.from(this.buf.subarray(0, 32));
  }
}

export type ChainFailureReason =
  | 'hash_mismatch'
  | 'gap'
  | 'reorder'
  | 'seq_mismatch'
  | 'anchor_mismatch'
  | 'checkpoint_mismatch'
  | 'tail_truncated';

export type ChainFailure = {
  ok: false;
  /** seq (decimal) of the row where the problem shows: for a gap, the first seq after it. */
  brokenAtSeq: string;
  reason: ChainFailureReason;
  /** The seq the verifier expected at that position. */
  expectedSeq: string;
};

export type ChainOk = {
  ok: true;
  /** Rows verified (an included anchor row is not counted). */
  count: number;
  headSeq: string;
  headHash: Buffer;
  /** Checkpoints whose hash was compared (those at or before the start of the rows are skipped). */
  checkpointsChecked: number;
};

export type ChainResult = ChainOk | ChainFailure;

export type ChainRow = { seq: SeqLike; canonical: string; hash: HashLike };
export type ChainAnchor = { seq: SeqLike; hash: HashLike };
export type CheckpointRef = { seq: SeqLike; hash: HashLike };

/** Row seq → number, or -1 if it is not a valid seq. */
function rowSeq(seq: SeqLike): number {
  if (typeof seq === 'number') return Number.isSafeInteger(seq) && seq >= 1 ? seq : -1;
  if (typeof seq === 'string') {
    const n = seq.length;
    if (n === 0 || n > 16) return -1;
    let v = 0;
    for (let i = 0; i < n; i++) {
      const c = seq.charCodeAt(i) - 48;
      if (c < 0 || c > 9 || (i === 0 && c === 0)) return -1;
      v = v * 10 + c;
    }
    return Number.isSafeInteger(v) ? v : -1;
  }
  if (typeof seq === 'bigint') return seq >= 1n && seq <= 9007199254740991n ? Number(seq) : -1;
  return -1;
}

/** The seq embedded in a canonical string (must equal the row seq), or -1. */
function canonicalSeq(canonical: string): number {
  if (typeof canonical !== 'string' || !canonical.startsWith(SEQ_PREFIX)) return -1;
  const start = SEQ_PREFIX.length;
  let v = 0;
  let i = start;
  for (; i < canonical.length && i - start <= 16; i++) {
    const c = canonical.charCodeAt(i);
    if (c === 34 /* " */) break;
    const d = c - 48;
    if (d < 0 || d > 9 || (i === start && d === 0)) return -1;
    v = v * 10 + d;
  }
  if (i === start || canonical.charCodeAt(i) !== 34 || !Number.isSafeInteger(v)) return -1;
  return v;
}

function hashMatches(computed: Buffer, stored: HashLike): boolean {
  if (typeof stored === 'string') return stored.length === 64 && computed.toString('hex') === stored;
  return Buffer.isBuffer(stored) && stored.length === 32 && computed.equals(stored);
}

function fail(reason: ChainFailureReason, at: number | string, expected: number): ChainFailure {
  return { ok: false, brokenAtSeq: String(at), reason, expectedSeq: String(expected) };
}

/**
 * Verifies rows in seq order.
 *
 * Without an anchor the rows must start at seq 1 (prev = GENESIS_HASH). With an anchor (a
 * trusted { seq, hash }, e.g. the head of the previous batch or a verified checkpoint) the rows
 * start at anchor.seq + 1, or at anchor.seq itself, in which case that row's stored hash must
 * equal the anchor hash (`anchor_mismatch`) and its content is not re-hashed (it belongs to the
 * previous segment).
 *
 * `checkpoints` (signature already verified with verifyCheckpoint) are compared with the
 * computed hash when their seq is reached (`checkpoint_mismatch`); one beyond the last row
 * means events were removed from the end (`tail_truncated`).
 *
 * Failures: `gap` (a seq is missing; reported at the first seq after the gap), `reorder` (seq
 * goes backwards or repeats), `seq_mismatch` (the row seq is not what its canonical text says,
 * or is not a valid seq), `hash_mismatch` (content or stored hash altered).
 */
export function verifyChain(
  rows: Iterable<ChainRow>,
  anchor?: ChainAnchor,
  options?: { checkpoints?: Iterable<CheckpointRef> },
): ChainResult {
  let expected = 1;
  let prev = GENESIS_HASH;
  let anchorSeq = 0;
  if (anchor !== undefined) {
    anchorSeq = anchor.seq === 0 || anchor.seq === 0n || anchor.seq === '0' ? 0 : rowSeq(anchor.seq);
    if (anchorSeq < 0) throw new TypeError('anchor.seq must be an integer between 0 and 2^53-1');
    prev = toHashBuffer(anchor.hash, 'anchor.hash');
    expected = anchorSeq + 1;
  }

  const cps: { seq: number; hash: Buffer }[] = [];
  for (const cp of options?.checkpoints ?? []) {
    const s = rowSeq(cp.seq);
    if (s < 0) throw new TypeError('checkpoint seq must be an integer between 1 and 2^53-1');
    cps.push({ seq: s, hash: toHashBuffer(cp.hash, 'checkpoint hash') });
  }
  cps.sort((a, b) => a.seq - b.seq);
  let cpIdx = 0;
  let checked = 0;
  // Checkpoints before the verified range cannot be checked (except one exactly at the anchor).
  while (cpIdx < cps.length && cps[cpIdx]!.seq <= anchorSeq) {
    const cp = cps[cpIdx++]!;
    if (anchor !== undefined && cp.seq === anchorSeq) {
      if (!cp.hash.equals(prev)) return fail('checkpoint_mismatch', anchorSeq, anchorSeq);
      checked++;
    }
  }
  let nextCpSeq = cpIdx < cps.length ? cps[cpIdx]!.seq : -1;

  const hasher = new ChainHasher(prev);
  let count = 0;
  let first = true;
  // A seq jump is a gap unless the next row goes back below it (then rows are out of order).
  let pendingJump = -1;

  for (const row of rows) {
    const seq = rowSeq(row.seq);
    if (pendingJump >= 0) {
      return fail(seq >= 0 && seq < pendingJump ? 'reorder' : 'gap', pendingJump, expected);
    }
    if (seq < 0) return fail('seq_mismatch', String(row.seq), expected);

    if (first) {
      first = false;
      if (anchor !== undefined && seq === anchorSeq && anchorSeq > 0) {
        if (canonicalSeq(row.canonical) !== seq) return fail('seq_mismatch', seq, seq);
        if (!hashMatches(prev, row.hash)) return fail('anchor_mismatch', seq, seq);
        continue;
      }
    }

    if (seq !== expected) {
      if (seq < expected) return fail('reorder', seq, expected);
      pendingJump = seq;
      continue;
    }
    if (canonicalSeq(row.canonical) !== seq) return fail('seq_mismatch', seq, expected);
    if (!hasher.step(row.canonical, row.hash)) return fail('hash_mismatch', seq, expected);
    // Several checkpoints may sign the same head (signed again before the chain moved): check each.
    while (seq === nextCpSeq) {
      if (!hasher.equals(cps[cpIdx]!.hash)) return fail('checkpoint_mismatch', seq, expected);
      checked++;
      cpIdx++;
      nextCpSeq = cpIdx < cps.length ? cps[cpIdx]!.seq : -1;
    }
    expected = seq + 1;
    count++;
  }
  if (pendingJump >= 0) return fail('gap', pendingJump, expected);
  if (cpIdx < cps.length) return fail('tail_truncated', expected, expected);

  return {
    ok: true,
    count,
    headSeq: String(expected - 1),
    headHash: hasher.current(),
    checkpointsChecked: checked,
  };
}

/**
 * Compares a verification result with one checkpoint: a checkpoint beyond the verified head
 * means the tail was deleted (`tail_truncated`, reported at the first missing seq); one exactly
 * at the head must carry the same hash (`checkpoint_mismatch`). A checkpoint below the head
 * cannot be checked from the result alone and is passed through unchanged: hand such
 * checkpoints to verifyChain's `checkpoints` option instead.
 */
export function verifyAgainstCheckpoint(result: ChainResult, cp: CheckpointRef): ChainResult {
  if (!result.ok) return result;
  const cpSeq = rowSeq(cp.seq);
  if (cpSeq < 0) throw new TypeError('checkpoint seq must be an integer between 1 and 2^53-1');
  const head = Number(result.headSeq);
  if (cpSeq > head) return fail('tail_truncated', head + 1, head + 1);
  if (cpSeq === head) {
    if (!toHashBuffer(cp.hash, 'checkpoint hash').equals(result.headHash)) {
      return fail('checkpoint_mismatch', head, head);
    }
    return { ...result, checkpointsChecked: result.checkpointsChecked + 1 };
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Signed checkpoints

export type AuditCheckpoint = {
  seq: string;
  /** 64 lowercase hex chars. */
  hash: string;
  at: string;
  keyId: string;
  /** base64 Ed25519 signature of checkpointMessage(seq, hash, at). */
  signature: string;
};

/** The exact bytes signed: `bulwark-audit-checkpoint:v1:<seq>:<hashhex>:<at>`. */
export function checkpointMessage(seq: string, hashHex: string, at: string): Buffer {
  return Buffer.from(`bulwark-audit-checkpoint:v1:${seq}:${hashHex}:${at}`, 'utf8');
}

export function signCheckpoint(
  key: SigningKey,
  head: { seq: SeqLike; hash: HashLike; at: string },
): AuditCheckpoint {
  const seq = seqToString(head.seq, 'checkpoint seq');
  const hash = toHashBuffer(head.hash, 'checkpoint hash').toString('hex');
  if (typeof head.at !== 'string' || !ISO_TIMESTAMP.test(head.at)) {
    throw new TypeError('checkpoint at must be an ISO 8601 timestamp with a time zone');
  }
  const signature = key.sign(checkpointMessage(seq, hash, head.at)).toString('base64');
  return { seq, hash, at: head.at, keyId: key.keyId, signature };
}

const B64_SIG = /^[A-Za-z0-9+/]{86}==$/;

/** True only for a well-formed checkpoint signed by one of `publicKeys` (keyId → public PEM). */
export function verifyCheckpoint(cp: AuditCheckpoint, publicKeys: Map<string, string>): boolean {
  if (!cp || typeof cp !== 'object') return false;
  const { seq, hash, at, keyId, signature } = cp;
  if (typeof seq !== 'string' || rowSeq(seq) < 0) return false;
  if (typeof hash !== 'string' || !/^[0-9a-f]{64}$/.test(hash)) return false;
  if (typeof at !== 'string' || !ISO_TIMESTAMP.test(at)) return false;
  if (typeof signature !== 'string' || !B64_SIG.test(signature)) return false;
  const pem = typeof keyId === 'string' ? publicKeys.get(keyId) : undefined;
  if (pem === undefined) return false;
  return verifySignature(pem, checkpointMessage(seq, hash, at), Buffer.from(signature, 'base64'));
}
