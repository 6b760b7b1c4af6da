/**
 * Audit chain verification throughput vs raw SHA-256 of the same bytes.
 *
 *   node bench/audit-verify.bench.ts [events=200000] [runs=5]
 *
 * Builds N canonical events (~300 bytes each) in memory, then interleaves timed runs of:
 *   - verifyChain over them (rows shaped as node-pg returns them: seq string, hash Buffer),
 *   - raw: a loop that only hashes each canonical string alone with the one-shot crypto.hash and
 *     a 'binary' string digest (the cheapest raw SHA-256 per string Node offers; the baseline),
 *   - raw-buffer: the same with a Buffer digest (what naive code does), for reference.
 * Prints per-run figures, medians, the ratio verifyChain / raw and a final JSON line.
 */
import { hash, randomBytes, randomInt } from 'node:crypto';
import {
  type AuditEventInput,
  type ChainRow,
  canonicalEncode,
  chainHash,
  GENESIS_HASH,
  verifyChain,
} from '../src/server/modules/audit/audit-chain.ts';

const N = Number(process.argv[2] ?? 200_000);
const RUNS = Number(process.argv[3] ?? 5);

const ACTIONS = ['query.execute', 'database.create', 'key.create', 'key.revoke', 'login', 'role.grant'];

function event(i: number): AuditEventInput {
  return {
    actorType: i % 7 === 0 ? 'agent' : 'key',
    actorId: `key_${randomBytes(6).toString('hex')}`,
    action: ACTIONS[i % ACTIONS.length]!,
    targetType: 'database',
    targetId: `db_${randomBytes(6).toString('hex')}`,
    accountId: `acc_${i % 100}`,
    sourceIp: `10.${i % 256}.${(i >> 8) % 256}.${randomInt(256)}`,
    outcome: i % 50 === 0 ? 'denied' : 'success',
    requestId: randomBytes(6).toString('hex'),
    details: { rows: randomInt(10_000), ms: randomInt(500), sql: 'SELECT * FROM users WHERE id = $1' },
    occurredAt: new Date(1_735_689_600_000 + i * 1000).toISOString(),
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

// ---- build ------------------------------------------------------------------------------------
const rows: ChainRow[] = new Array(N);
const canonicals: string[] = new Array(N);
let prev = GENESIS_HASH;
let bytes = 0;
for (let i = 0; i < N; i++) {
  const seq = i + 1;
  const canonical = canonicalEncode(seq, event(i));
  prev = chainHash(prev, canonical);
  // As node-pg returns them: int8 as string, bytea as Buffer.
  rows[i] = { seq: String(seq), canonical, hash: prev };
  canonicals[i] = canonical;
  bytes += Buffer.byteLength(canonical);
}
const avgBytes = bytes / N;
console.log(`built ${N} events, average canonical size ${avgBytes.toFixed(1)} bytes`);

// ---- measure ----------------------------------------------------------------------------------
function timeVerify(): number {
  const t0 = process.hrtime.bigint();
  const r = verifyChain(rows);
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  if (!r.ok || r.count !== N) throw new Error(`verification failed: ${JSON.stringify(r)}`);
  return N / dt;
}

let sink = 0;
function timeRaw(): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) sink ^= hash('sha256', canonicals[i]!, 'binary').charCodeAt(0);
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  return N / dt;
}

function timeRawBuffer(): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) sink ^= hash('sha256', canonicals[i]!, 'buffer')[0]!;
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  return N / dt;
}

// warm-up (JIT, buffer caches)
verifyChain(rows.slice(0, 20_000));
for (let i = 0; i < 20_000; i++) sink ^= hash('sha256', canonicals[i]!, 'binary').charCodeAt(0);
for (let i = 0; i < 20_000; i++) sink ^= hash('sha256', canonicals[i]!, 'buffer')[0]!;

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const verifyRates: number[] = [];
const rawRates: number[] = [];
const rawBufferRates: number[] = [];
for (let r = 0; r < RUNS; r++) {
  verifyRates.push(timeVerify());
  rawRates.push(timeRaw());
  rawBufferRates.push(timeRawBuffer());
  console.log(
    `run ${r + 1}: verifyChain ${fmt(verifyRates[r]!)} ev/s, raw sha256 ${fmt(rawRates[r]!)} ev/s, ` +
      `raw sha256 (Buffer digest) ${fmt(rawBufferRates[r]!)} ev/s`,
  );
}

const verifyMedian = median(verifyRates);
const rawMedian = median(rawRates);
const rawBufferMedian = median(rawBufferRates);
const ratio = verifyMedian / rawMedian;
console.log(`median verifyChain:                 ${fmt(verifyMedian)} events/s`);
console.log(`median raw sha256:                  ${fmt(rawMedian)} events/s`);
console.log(`median raw sha256 (Buffer digest):  ${fmt(rawBufferMedian)} events/s`);
console.log(`ratio verifyChain / raw sha256: ${ratio.toFixed(3)} (goal: verifyChain >= 500,000 events/s)`);
console.log(
  JSON.stringify({
    bench: 'audit-verify',
    events: N,
    runs: RUNS,
    avgCanonicalBytes: Math.round(avgBytes),
    verifyEventsPerSec: Math.round(verifyMedian),
    rawSha256EventsPerSec: Math.round(rawMedian),
    rawSha256BufferDigestEventsPerSec: Math.round(rawBufferMedian),
    ratio: Number(ratio.toFixed(3)),
    node: process.version,
    sink: sink & 1,
  }),
);
