import assert from 'node:assert/strict';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadOrCreateSigningKey, loadPublicKeys, rotateSigningKey } from '../../crypto/signing-key.ts';
import {
  type AuditEventInput,
  type ChainEntry,
  type ChainRow,
  canonicalEncode,
  canonicalJson,
  chainHash,
  checkpointMessage,
  GENESIS_HASH,
  nextEntry,
  signCheckpoint,
  verifyAgainstCheckpoint,
  verifyChain,
  verifyCheckpoint,
} from './audit-chain.ts';

const ACTORS = ['user', 'key', 'agent', 'system', 'operator'] as const;
const OUTCOMES = ['success', 'failure', 'denied'] as const;

function pick<T>(xs: readonly T[]): T {
  return xs[randomInt(xs.length)]!;
}

function maybe(s: string): string | null {
  return randomInt(4) === 0 ? null : s;
}

function randomDetails(depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const n = randomInt(5);
  for (let i = 0; i < n; i++) {
    const k = pick(['sql', 'rows', 'ok', 'z', 'a', 'ünï', 'nested', 'list', '"q"', 'x y']) + i;
    const r = randomInt(depth < 2 ? 7 : 5);
    out[k] =
      r === 0
        ? randomBytes(randomInt(40)).toString('base64')
        : r === 1
          ? randomInt(1e9) / 7
          : r === 2
            ? randomInt(2) === 1
            : r === 3
              ? null
              : r === 4
                ? 'é\u2028\n"\\ \ud83d\ude00'
                : r === 5
                  ? randomDetails(depth + 1)
                  : [1, 'two', null, { b: 1, a: [true] }];
  }
  return out;
}

function randomEvent(): AuditEventInput {
  return {
    actorType: pick(ACTORS),
    actorId: maybe(`u_${randomBytes(6).toString('hex')}`),
    action: pick(['database.create', 'key.revoke', 'query.execute', 'login']),
    targetType: maybe('database'),
    targetId: maybe(randomBytes(8).toString('hex')),
    accountId: maybe(`acc_${randomInt(1000)}`),
    sourceIp: maybe(pick(['10.0.0.1', '2001:db8::1'])),
    outcome: pick(OUTCOMES),
    requestId: maybe(randomBytes(8).toString('hex')),
    details: randomDetails(),
    occurredAt: new Date(1_700_000_000_000 + randomInt(1e9)).toISOString(),
  };
}

/** Builds a chain with the reference chainHash; hashes stored as Buffer or hex alternately. */
function buildChain(n: number, hex = false): ChainRow[] {
  const rows: ChainRow[] = [];
  let prev = GENESIS_HASH;
  for (let seq = 1; seq <= n; seq++) {
    const canonical = canonicalEncode(seq, randomEvent());
    const hash = chainHash(prev, canonical);
    rows.push({
      seq: seq % 3 === 0 ? String(seq) : seq % 3 === 1 ? BigInt(seq) : seq,
      canonical,
      hash: hex ? hash.toString('hex') : hash,
    });
    prev = hash;
  }
  return rows;
}

function head(rows: ChainRow[]): { seq: string; hash: Buffer } {
  const last = rows[rows.length - 1]!;
  return {
    seq: String(last.seq),
    hash: Buffer.isBuffer(last.hash) ? last.hash : Buffer.from(last.hash, 'hex'),
  };
}

const baseEvent: AuditEventInput = {
  actorType: 'user',
  actorId: 'u_1',
  action: 'database.create',
  targetType: 'database',
  targetId: 'db_9',
  accountId: 'acc_1',
  sourceIp: '10.0.0.1',
  outcome: 'success',
  requestId: 'req_1',
  details: { z: 1, a: { y: [3, { d: 1, c: 2 }], x: 'é' } },
  occurredAt: '2025-01-02T03:04:05.678Z',
};

describe('canonicalEncode', () => {
  it('fixed field order, sorted details, no whitespace', () => {
    assert.equal(
      canonicalEncode(7, baseEvent),
      '{"v":1,"seq":"7","occurredAt":"2025-01-02T03:04:05.678Z","actorType":"user","actorId":"u_1",' +
        '"action":"database.create","targetType":"database","targetId":"db_9","accountId":"acc_1",' +
        '"sourceIp":"10.0.0.1","outcome":"success","requestId":"req_1",' +
        '"details":{"a":{"x":"é","y":[3,{"c":2,"d":1}]},"z":1}}',
    );
  });

  it('is valid JSON that round-trips the input', () => {
    for (let i = 0; i < 200; i++) {
      const e = randomEvent();
      const parsed = JSON.parse(canonicalEncode(BigInt(i + 1), e));
      assert.equal(parsed.seq, String(i + 1));
      assert.equal(parsed.v, 1);
      const { v: _v, seq: _s, ...rest } = parsed;
      assert.deepEqual(rest, e);
    }
  });

  it('does not depend on key insertion order at any depth', () => {
    const a = canonicalEncode(1, { ...baseEvent, details: { b: { y: 1, x: 2 }, a: [{ q: 1, p: 2 }] } });
    const b = canonicalEncode(1, { ...baseEvent, details: { a: [{ p: 2, q: 1 }], b: { x: 2, y: 1 } } });
    assert.equal(a, b);
    assert.equal(canonicalJson({ b: 1, a: undefined, c: [] }), '{"b":1,"c":[]}');
  });

  it('refuses values JSON cannot represent faithfully', () => {
    const bad: unknown[] = [
      { x: Number.NaN },
      { x: Number.POSITIVE_INFINITY },
      { x: 1n },
      { x: new Date() },
      { x: new Map() },
      { x: Buffer.from('a') },
      { x: [undefined] },
      { x: () => 1 },
      { x: Symbol('s') },
    ];
    for (const details of bad) {
      assert.throws(
        () => canonicalEncode(1, { ...baseEvent, details: details as Record<string, unknown> }),
        TypeError,
      );
    }
    const deep: Record<string, unknown> = {};
    let cur = deep;
    for (let i = 0; i < 40; i++) {
      const next: Record<string, unknown> = {};
      cur.n = next;
      cur = next;
    }
    assert.throws(() => canonicalEncode(1, { ...baseEvent, details: deep }), /deeper/);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    assert.throws(() => canonicalEncode(1, { ...baseEvent, details: cyclic }), TypeError);
  });

  it('validates the event fields and seq', () => {
    assert.throws(() => canonicalEncode(0, baseEvent), TypeError);
    assert.throws(() => canonicalEncode(1.5, baseEvent), TypeError);
    assert.throws(() => canonicalEncode(-1n, baseEvent), TypeError);
    assert.throws(() => canonicalEncode(2n ** 60n, baseEvent), TypeError);
    assert.throws(() => canonicalEncode(1, { ...baseEvent, actorType: 'root' as 'user' }), /actorType/);
    assert.throws(() => canonicalEncode(1, { ...baseEvent, outcome: 'ok' as 'success' }), /outcome/);
    assert.throws(() => canonicalEncode(1, { ...baseEvent, action: '' }), /action/);
    assert.throws(() => canonicalEncode(1, { ...baseEvent, occurredAt: '2025-01-02' }), /occurredAt/);
    assert.throws(
      () => canonicalEncode(1, { ...baseEvent, occurredAt: '2025-01-02T03:04:05' }),
      /occurredAt/,
    );
    assert.throws(() => canonicalEncode(1, { ...baseEvent, actorId: 5 as unknown as string }), /actorId/);
    assert.ok(canonicalEncode(1, { ...baseEvent, occurredAt: '2025-01-02T03:04:05.123456+02:00' }));
  });

  it('escapes hostile strings so fields cannot be forged', () => {
    const c = canonicalEncode(1, {
      ...baseEvent,
      action: 'x","outcome":"success',
      details: { 'a"b': '\u0000' },
    });
    const parsed = JSON.parse(c);
    assert.equal(parsed.action, 'x","outcome":"success');
    assert.deepEqual(parsed.details, { 'a"b': '\u0000' });
  });
});

describe('chainHash', () => {
  it('is SHA-256(prev || 0x0a || utf8(canonical))', () => {
    const prev = randomBytes(32);
    const c = canonicalEncode(1, baseEvent);
    const expected = createHash('sha256')
      .update(Buffer.concat([prev, Buffer.from([0x0a]), Buffer.from(c, 'utf8')]))
      .digest();
    assert.deepEqual(chainHash(prev, c), expected);
    assert.deepEqual(GENESIS_HASH, Buffer.alloc(32));
    assert.throws(() => chainHash(Buffer.alloc(31), c), TypeError);
  });

  it('nextEntry builds from genesis and from a head', () => {
    const e1 = nextEntry({ seq: 0, hash: GENESIS_HASH }, baseEvent);
    assert.equal(e1.seq, '1');
    assert.deepEqual(e1.hash, chainHash(GENESIS_HASH, e1.canonical));
    const e2 = nextEntry({ seq: e1.seq, hash: e1.hash.toString('hex') }, baseEvent);
    assert.equal(e2.seq, '2');
    assert.ok(verifyChain([e1, e2]).ok);
  });
});

describe('verifyChain', () => {
  it('accepts a valid chain of 10 events (Buffer and hex hashes, mixed seq types)', () => {
    for (const hex of [false, true]) {
      const rows = buildChain(10, hex);
      const r = verifyChain(rows);
      assert.ok(r.ok, JSON.stringify(r));
      assert.equal(r.count, 10);
      assert.equal(r.headSeq, '10');
      assert.deepEqual(r.headHash, head(rows).hash);
    }
  });

  it('property: 1,000 random events build a valid chain, also verified in batches via anchors', () => {
    const entries: ChainEntry[] = [];
    let h = { seq: '0', hash: GENESIS_HASH };
    for (let i = 0; i < 1000; i++) {
      const e = nextEntry(h, randomEvent());
      entries.push(e);
      h = e;
    }
    const r = verifyChain(entries);
    assert.ok(r.ok);
    assert.equal(r.count, 1000);
    assert.equal(r.headSeq, '1000');
    assert.deepEqual(r.headHash, h.hash);

    let anchor: { seq: string; hash: Buffer } | undefined;
    for (let start = 0; start < 1000; start += 137) {
      const part = verifyChain(entries.slice(start, start + 137), anchor);
      assert.ok(part.ok);
      anchor = { seq: part.headSeq, hash: part.headHash };
    }
    assert.equal(anchor?.seq, '1000');
  });

  it('an empty chain is valid; an empty chain with a checkpoint is a truncated tail', () => {
    assert.deepEqual(verifyChain([]), {
      ok: true,
      count: 0,
      headSeq: '0',
      headHash: GENESIS_HASH,
      checkpointsChecked: 0,
    });
    const r = verifyChain([], undefined, { checkpoints: [{ seq: 1, hash: randomBytes(32) }] });
    assert.deepEqual(r, { ok: false, reason: 'tail_truncated', brokenAtSeq: '1', expectedSeq: '1' });
  });

  it('tampering with one event’s field (editing the stored canonical) is detected at that seq', () => {
    const rows = buildChain(20);
    const victim = rows[11]!; // seq 12
    const before = victim.canonical;
    victim.canonical = before.replace(/"outcome":"([a-z]+)"/, (_m, o: string) =>
      o === 'denied' ? '"outcome":"success"' : '"outcome":"denied"',
    );
    assert.notEqual(victim.canonical, before);
    const r = verifyChain(rows);
    assert.deepEqual(r, { ok: false, reason: 'hash_mismatch', brokenAtSeq: '12', expectedSeq: '12' });

    const rows2 = buildChain(20);
    rows2[4]!.canonical = rows2[4]!.canonical.replace('"action":"', '"action":"X');
    assert.deepEqual(verifyChain(rows2), {
      ok: false,
      reason: 'hash_mismatch',
      brokenAtSeq: '5',
      expectedSeq: '5',
    });
  });

  it('a tampered stored hash is detected', () => {
    const rows = buildChain(5, true);
    const h = rows[2]!.hash as string;
    rows[2]!.hash = (h[0] === 'a' ? 'b' : 'a') + h.slice(1);
    assert.deepEqual(verifyChain(rows), {
      ok: false,
      reason: 'hash_mismatch',
      brokenAtSeq: '3',
      expectedSeq: '3',
    });
    const rows2 = buildChain(5, true);
    rows2[2]!.hash = (rows2[2]!.hash as string).toUpperCase();
    assert.equal(verifyChain(rows2).ok, false);
  });

  it('a re-hashed rewrite (attacker recomputes every later hash) passes alone but fails a checkpoint', () => {
    const key = loadOrCreateSigningKey(keyDir());
    const rows = buildChain(50);
    const cp = signCheckpoint(key, { ...head(rows), at: '2025-01-01T00:00:00Z' });
    const mid = signCheckpoint(key, { seq: 30, hash: rows[29]!.hash, at: '2025-01-01T00:00:00Z' });
    // attacker edits event 20 and recomputes the rest of the chain
    let prev = rows[18]!.hash as Buffer;
    for (let i = 19; i < rows.length; i++) {
      const row = rows[i]!;
      const event = JSON.parse(row.canonical) as AuditEventInput;
      if (i === 19) event.outcome = event.outcome === 'denied' ? 'success' : 'denied';
      row.canonical = canonicalEncode(i + 1, event);
      row.hash = chainHash(prev, row.canonical);
      prev = row.hash;
    }
    const alone = verifyChain(rows);
    assert.ok(alone.ok);
    assert.deepEqual(verifyAgainstCheckpoint(alone, cp), {
      ok: false,
      reason: 'checkpoint_mismatch',
      brokenAtSeq: '50',
      expectedSeq: '50',
    });
    assert.deepEqual(verifyChain(rows, undefined, { checkpoints: [mid, cp] }), {
      ok: false,
      reason: 'checkpoint_mismatch',
      brokenAtSeq: '30',
      expectedSeq: '30',
    });
  });

  it('deleting one event in the middle is a gap at the seq after it', () => {
    const rows = buildChain(20);
    rows.splice(9, 1); // remove seq 10
    assert.deepEqual(verifyChain(rows), { ok: false, reason: 'gap', brokenAtSeq: '11', expectedSeq: '10' });
    const rows2 = buildChain(20);
    rows2.splice(19, 1);
    rows2.splice(0, 1); // remove seq 1 (head of log)
    assert.deepEqual(verifyChain(rows2), { ok: false, reason: 'gap', brokenAtSeq: '2', expectedSeq: '1' });
  });

  it('deleting an event and renumbering the rest is a seq or hash mismatch', () => {
    const rows = buildChain(10);
    rows.splice(4, 1);
    for (let i = 4; i < rows.length; i++) rows[i]!.seq = i + 1;
    assert.deepEqual(verifyChain(rows), {
      ok: false,
      reason: 'seq_mismatch',
      brokenAtSeq: '5',
      expectedSeq: '5',
    });
  });

  it('deleting the tail is detected by a checkpoint beyond the head', () => {
    const key = loadOrCreateSigningKey(keyDir());
    const rows = buildChain(30);
    const cp = signCheckpoint(key, { ...head(rows), at: '2025-01-01T00:00:00Z' });
    assert.ok(verifyCheckpoint(cp, loadPublicKeys(keyDir())));
    const full = verifyChain(rows);
    assert.ok(verifyAgainstCheckpoint(full, cp).ok);
    assert.equal((verifyAgainstCheckpoint(full, cp) as { checkpointsChecked: number }).checkpointsChecked, 1);

    const truncated = rows.slice(0, 25);
    const r = verifyChain(truncated);
    assert.ok(r.ok); // the chain alone cannot tell
    assert.deepEqual(verifyAgainstCheckpoint(r, cp), {
      ok: false,
      reason: 'tail_truncated',
      brokenAtSeq: '26',
      expectedSeq: '26',
    });
    assert.deepEqual(verifyChain(truncated, undefined, { checkpoints: [cp] }), {
      ok: false,
      reason: 'tail_truncated',
      brokenAtSeq: '26',
      expectedSeq: '26',
    });
    // a checkpoint below the head: passes through verifyAgainstCheckpoint, checked by verifyChain
    const early = signCheckpoint(key, { seq: 10, hash: rows[9]!.hash, at: '2025-01-01T00:00:00Z' });
    assert.deepEqual(verifyAgainstCheckpoint(full, early), full);
    const withCps = verifyChain(rows, undefined, { checkpoints: [cp, early] });
    assert.ok(withCps.ok);
    assert.equal(withCps.checkpointsChecked, 2);
  });

  it('several checkpoints of the same head (signed again before the chain moved) all verify', () => {
    const rows = buildChain(12);
    const key = loadOrCreateSigningKey(keyDir());
    const at = (seq: number, when: string) =>
      signCheckpoint(key, { seq, hash: rows[seq - 1]!.hash, at: when });
    const cps = [
      at(5, '2025-01-01T00:00:00Z'),
      at(5, '2025-01-01T00:01:00Z'),
      at(12, '2025-01-01T00:02:00Z'),
    ];
    const r = verifyChain(rows, undefined, { checkpoints: [...cps, at(12, '2025-01-01T00:03:00Z')] });
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(r.checkpointsChecked, 4);
    // …and a forged one beside a genuine one at the same seq is still caught.
    const forged = { ...cps[0]!, hash: rows[3]!.hash };
    assert.equal(verifyChain(rows, undefined, { checkpoints: [cps[0]!, forged] }).ok, false);
  });

  it('reordering two events is detected', () => {
    const rows = buildChain(10);
    [rows[3], rows[4]] = [rows[4]!, rows[3]!]; // order 1,2,3,5,4,6…
    assert.deepEqual(verifyChain(rows), { ok: false, reason: 'reorder', brokenAtSeq: '5', expectedSeq: '4' });

    const far = buildChain(10);
    [far[2], far[7]] = [far[7]!, far[2]!];
    assert.deepEqual(verifyChain(far), { ok: false, reason: 'reorder', brokenAtSeq: '8', expectedSeq: '3' });

    const last = buildChain(10);
    [last[8], last[9]] = [last[9]!, last[8]!];
    assert.equal((verifyChain(last) as { reason: string }).reason, 'reorder');

    // swapping the seq column of two rows (DB sorted by seq): seq no longer matches the content
    const swappedSeq = buildChain(10);
    const [a, b] = [swappedSeq[3]!, swappedSeq[4]!];
    [a.seq, b.seq] = [b.seq, a.seq];
    swappedSeq[3] = b;
    swappedSeq[4] = a;
    assert.deepEqual(verifyChain(swappedSeq), {
      ok: false,
      reason: 'seq_mismatch',
      brokenAtSeq: '4',
      expectedSeq: '4',
    });

    // swapping content between two rows while keeping seqs
    const swappedContent = buildChain(10);
    const c3 = swappedContent[3]!;
    const c4 = swappedContent[4]!;
    [c3.canonical, c4.canonical, c3.hash, c4.hash] = [c4.canonical, c3.canonical, c4.hash, c3.hash];
    assert.equal((verifyChain(swappedContent) as { reason: string }).reason, 'seq_mismatch');

    const dup = buildChain(10);
    dup.splice(5, 0, dup[4]!);
    assert.deepEqual(verifyChain(dup), { ok: false, reason: 'reorder', brokenAtSeq: '5', expectedSeq: '6' });
  });

  it('a row whose seq field disagrees with its canonical text is a seq mismatch', () => {
    const rows = buildChain(5);
    rows[2]!.canonical = rows[2]!.canonical.replace('"seq":"3"', '"seq":"03"');
    assert.deepEqual(verifyChain(rows), {
      ok: false,
      reason: 'seq_mismatch',
      brokenAtSeq: '3',
      expectedSeq: '3',
    });
    for (const bad of ['', '{}', '{"v":1,"seq":"', '{"v":1,"seq":3,', '{"v":2,"seq":"3",']) {
      const r = buildChain(5);
      r[2]!.canonical = bad;
      assert.equal((verifyChain(r) as { reason: string }).reason, 'seq_mismatch', bad);
    }
    for (const seq of [0, -1, 1.5, '01', 'x', '', '99999999999999999', Number.NaN]) {
      const r = buildChain(5);
      r[2]!.seq = seq;
      assert.equal((verifyChain(r) as { reason: string }).reason, 'seq_mismatch', String(seq));
    }
  });

  it('anchors: start after the anchor, or at it (hash must match the anchor)', () => {
    const rows = buildChain(20);
    const anchor = { seq: '10', hash: rows[9]!.hash };
    const after10 = verifyChain(rows.slice(10), anchor);
    assert.ok(after10.ok);
    assert.equal(after10.count, 10);
    assert.equal(after10.headSeq, '20');
    const incl = verifyChain(rows.slice(9), anchor);
    assert.ok(incl.ok);
    assert.equal(incl.count, 10);

    const wrong = { seq: 10, hash: randomBytes(32) };
    assert.deepEqual(verifyChain(rows.slice(9), wrong), {
      ok: false,
      reason: 'anchor_mismatch',
      brokenAtSeq: '10',
      expectedSeq: '10',
    });
    assert.deepEqual(verifyChain(rows.slice(10), wrong), {
      ok: false,
      reason: 'hash_mismatch',
      brokenAtSeq: '11',
      expectedSeq: '11',
    });
    assert.deepEqual(verifyChain(rows.slice(12), anchor), {
      ok: false,
      reason: 'gap',
      brokenAtSeq: '13',
      expectedSeq: '11',
    });
    const emptyAfter = verifyChain([], anchor);
    assert.ok(emptyAfter.ok);
    assert.equal(emptyAfter.headSeq, '10');
    assert.throws(() => verifyChain(rows, { seq: -1, hash: GENESIS_HASH }), TypeError);
    assert.throws(() => verifyChain(rows, { seq: 1, hash: 'zz' }), TypeError);
  });

  it('works on any iterable (generator)', () => {
    const rows = buildChain(50);
    function* gen(): Generator<ChainRow> {
      yield* rows;
    }
    const r = verifyChain(gen());
    assert.ok(r.ok);
    assert.equal(r.count, 50);
  });

  it('handles large canonical strings (buffer growth) and non-ASCII text', () => {
    const entries: ChainEntry[] = [];
    let h = { seq: '0', hash: GENESIS_HASH };
    for (const size of [10, 5000, 20, 100_000, 30, 4100]) {
      const e = nextEntry(h, { ...baseEvent, details: { blob: '😀é'.repeat(size) } });
      entries.push(e);
      h = e;
    }
    assert.ok(verifyChain(entries).ok);
    entries[3]!.canonical = entries[3]!.canonical.replace('😀', '😁');
    assert.equal((verifyChain(entries) as { reason: string }).reason, 'hash_mismatch');
  });
});

const keyRoot = mkdtempSync(join(tmpdir(), 'bulwark-audit-'));
after(() => rmSync(keyRoot, { recursive: true, force: true }));
const keyDir = (): string => keyRoot;

describe('checkpoints', () => {
  it('sign and verify; signed bytes are the documented message', () => {
    const key = loadOrCreateSigningKey(keyDir());
    const hash = randomBytes(32);
    const cp = signCheckpoint(key, { seq: 42n, hash, at: '2025-01-02T03:04:05.000Z' });
    assert.equal(cp.seq, '42');
    assert.equal(cp.hash, hash.toString('hex'));
    assert.equal(cp.keyId, key.keyId);
    const keys = loadPublicKeys(keyDir());
    assert.ok(verifyCheckpoint(cp, keys));
    assert.equal(
      checkpointMessage('42', cp.hash, cp.at).toString(),
      `bulwark-audit-checkpoint:v1:42:${cp.hash}:2025-01-02T03:04:05.000Z`,
    );
  });

  it('rejects any tampered field, unknown keys and malformed input', () => {
    const key = loadOrCreateSigningKey(keyDir());
    const keys = loadPublicKeys(keyDir());
    const cp = signCheckpoint(key, { seq: 42, hash: randomBytes(32), at: '2025-01-02T03:04:05.000Z' });
    const otherHash = randomBytes(32).toString('hex');
    const sig = Buffer.from(cp.signature, 'base64');
    sig[0] = sig[0]! ^ 1;
    const bad = [
      { ...cp, seq: '43' },
      { ...cp, hash: otherHash },
      { ...cp, at: '2025-01-02T03:04:06.000Z' },
      { ...cp, signature: sig.toString('base64') },
      { ...cp, keyId: '0000000000000000' },
      { ...cp, seq: '042' },
      { ...cp, hash: cp.hash.toUpperCase() },
      { ...cp, signature: cp.signature.slice(0, -4) },
      { ...cp, at: 'yesterday' },
    ];
    for (const b of bad) assert.equal(verifyCheckpoint(b, keys), false, JSON.stringify(b));
    assert.equal(verifyCheckpoint(null as unknown as typeof cp, keys), false);
    assert.equal(verifyCheckpoint(cp, new Map()), false);
    assert.throws(() => signCheckpoint(key, { seq: 0, hash: randomBytes(32), at: cp.at }), TypeError);
    assert.throws(() => signCheckpoint(key, { seq: 1, hash: randomBytes(31), at: cp.at }), TypeError);
    assert.throws(() => signCheckpoint(key, { seq: 1, hash: randomBytes(32), at: 'now' }), TypeError);
  });

  it('checkpoints signed before a key rotation still verify', () => {
    const dir = mkdtempSync(join(keyRoot, 'rot-'));
    const k1 = loadOrCreateSigningKey(dir);
    const cp1 = signCheckpoint(k1, { seq: 1, hash: randomBytes(32), at: '2025-01-01T00:00:00Z' });
    const k2 = rotateSigningKey(dir);
    const cp2 = signCheckpoint(k2, { seq: 2, hash: randomBytes(32), at: '2025-01-02T00:00:00Z' });
    const keys = loadPublicKeys(dir);
    assert.ok(verifyCheckpoint(cp1, keys));
    assert.ok(verifyCheckpoint(cp2, keys));
    assert.equal(verifyCheckpoint({ ...cp1, keyId: k2.keyId }, keys), false);
  });
});
