/**
 * Benchmark: explorer SQL validation vs. bare parsing of the same SQL.
 * Run: node_modules/.bin/node bench/explorer-validate.bench.ts
 * Goal: median validateExplorerSql() < 0.2 ms for a ~200-character join query.
 */
import { parseSync } from 'libpg-query';
import { loadExplorerParser, validateExplorerSql } from '../src/shared/sql/explorer-validator.ts';

const SQL =
  'select o.id, c.name, sum(i.qty * i.price) as total from orders o ' +
  'join customers c on c.id = o.customer_id join items i on i.order_id = o.id ' +
  "where o.created_at > now() - interval '30 days' group by o.id, c.name";
const WARMUP = 1000;
const ITERATIONS = 5000;
const GOAL_MEDIAN_MS = 0.2;

function measure(fn: () => void): { median: number; p99: number; mean: number } {
  for (let i = 0; i < WARMUP; i++) fn();
  const samples = new Float64Array(ITERATIONS);
  for (let i = 0; i < ITERATIONS; i++) {
    const start = performance.now();
    fn();
    samples[i] = performance.now() - start;
  }
  samples.sort();
  const at = (q: number): number => samples[Math.min(ITERATIONS - 1, Math.floor(q * ITERATIONS))] ?? 0;
  const mean = samples.reduce((a, b) => a + b, 0) / ITERATIONS;
  return { median: at(0.5), p99: at(0.99), mean };
}

await loadExplorerParser();
const verdict = validateExplorerSql(SQL);
if (!verdict.ok) throw new Error(`benchmark query refused: ${verdict.code} ${verdict.reason}`);

const parse = measure(() => parseSync(SQL));
const validate = measure(() => validateExplorerSql(SQL));
const ratio = validate.median / parse.median;
const fmt = (ms: number): string => `${ms.toFixed(4)} ms`;

console.log(`query: ${SQL.length} characters, ${ITERATIONS} iterations after ${WARMUP} warm-up`);
console.log(`parseSync only        median ${fmt(parse.median)}  p99 ${fmt(parse.p99)}`);
console.log(`validateExplorerSql   median ${fmt(validate.median)}  p99 ${fmt(validate.p99)}`);
console.log(`ratio validate/parse  ${ratio.toFixed(2)}x  (goal: median < ${GOAL_MEDIAN_MS} ms)`);
console.log(
  JSON.stringify({
    bench: 'explorer-validate',
    sqlLength: SQL.length,
    iterations: ITERATIONS,
    validateMedianMs: Number(validate.median.toFixed(4)),
    validateP99Ms: Number(validate.p99.toFixed(4)),
    parseMedianMs: Number(parse.median.toFixed(4)),
    parseP99Ms: Number(parse.p99.toFixed(4)),
    ratio: Number(ratio.toFixed(2)),
    goalMet: validate.median < GOAL_MEDIAN_MS,
  }),
);
