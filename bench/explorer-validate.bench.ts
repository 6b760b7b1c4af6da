/**
 * Benchmark: explorer SQL validation with the derived allowlist (issue 19), against bare parsing of
 * the same SQL.
 * Run: npm run bench -- explorer-validate [rounds]
 * Goal: median validation < 0.2 ms for a ~200-character join, with the verdict cache OFF (every
 * call parses and walks: the cache must not be why it is fast); the cached path is reported too.
 *
 * Interleaved rounds; in each, every variant runs ITERATIONS times after a warm-up:
 *   parse      libpg-query's parseSync alone (the baseline: the least any validator must do)
 *   cold       createExplorerValidator({ cacheSize: 0 }).validate: parse + walk + allowlist + redaction
 *   cold-new   the same on a text never seen before (a distinct literal each call: no V8 string reuse)
 *   warm       createExplorerValidator().validate on a repeated text: SHA-256 + cache hit
 *   redact     redactSql, the audit log's redaction (a second parse on the server)
 */
import { parseSync } from 'libpg-query';
import { ALLOWED_FUNCTIONS } from '../src/shared/sql/explorer-functions.ts';
import {
  createExplorerValidator,
  loadExplorerParser,
  redactSql,
} from '../src/shared/sql/explorer-validator.ts';
import { summarize } from './stats.ts';

const SQL =
  'select o.id, c.name, sum(i.qty * i.price) as total from orders o ' +
  'join customers c on c.id = o.customer_id join items i on i.order_id = o.id ' +
  "where o.created_at > now() - interval '30 days' group by o.id, c.name";
const ROUNDS = Number(process.argv[2] ?? 5);
const WARMUP = 300;
const ITERATIONS = 2000;
const GOAL_MEDIAN_MS = 0.2;

if (!Number.isInteger(ROUNDS) || ROUNDS < 1 || ROUNDS > 100) throw new Error('rounds: 1–100');

await loadExplorerParser();
const cold = createExplorerValidator({ cacheSize: 0 });
const warm = createExplorerValidator();
for (const v of [cold, warm]) {
  const verdict = v.validate(SQL);
  if (!verdict.ok) throw new Error(`benchmark query refused: ${verdict.code} ${verdict.reason}`);
}

let fresh = 0;
const variants: Record<string, () => unknown> = {
  parse: () => parseSync(SQL),
  cold: () => cold.validate(SQL),
  'cold-new': () => cold.validate(SQL.replace('30 days', `${++fresh} days`)),
  warm: () => warm.validate(SQL),
  redact: () => redactSql(SQL),
};
const samples: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));

for (let round = 0; round < ROUNDS; round++) {
  for (const [name, fn] of Object.entries(variants)) {
    for (let i = 0; i < WARMUP; i++) fn();
    const out = samples[name] ?? [];
    for (let i = 0; i < ITERATIONS; i++) {
      const start = performance.now();
      fn();
      out.push(performance.now() - start);
    }
  }
}

const stats = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, summarize(v)]));
const fmt = (ms: number | undefined): string => `${(ms ?? Number.NaN).toFixed(4)} ms`;
console.log(
  `query: ${SQL.length} characters; allowlist: ${ALLOWED_FUNCTIONS.size} functions; ` +
    `${ROUNDS} interleaved rounds × ${ITERATIONS} runs per variant`,
);
for (const [name, s] of Object.entries(stats)) {
  console.log(`${name.padEnd(9)} median ${fmt(s.median)}  p95 ${fmt(s.p95)}  p99 ${fmt(s.p99)}`);
}
const parseMedian = stats['parse']?.median ?? Number.NaN;
const coldMedian = stats['cold']?.median ?? Number.NaN;
const coldNewMedian = stats['cold-new']?.median ?? Number.NaN;
console.log(
  `cold/parse ${(coldMedian / parseMedian).toFixed(2)}x; goal: cold median < ${GOAL_MEDIAN_MS} ms: ` +
    (Math.max(coldMedian, coldNewMedian) < GOAL_MEDIAN_MS ? 'met' : 'NOT met'),
);
console.log(
  JSON.stringify({
    bench: 'explorer-validate',
    sqlLength: SQL.length,
    allowlistSize: ALLOWED_FUNCTIONS.size,
    rounds: ROUNDS,
    iterations: ITERATIONS,
    medianMs: Object.fromEntries(Object.entries(stats).map(([k, s]) => [k, Number(s.median.toFixed(4))])),
    p99Ms: Object.fromEntries(Object.entries(stats).map(([k, s]) => [k, Number(s.p99.toFixed(4))])),
    coldOverParse: Number((coldMedian / parseMedian).toFixed(2)),
    goalMet: Math.max(coldMedian, coldNewMedian) < GOAL_MEDIAN_MS,
  }),
);
