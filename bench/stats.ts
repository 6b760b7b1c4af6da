/** Median and tail percentiles of a sample (ms), for benchmark reports. */
export function summarize(samples: number[]): {
  n: number;
  median: number;
  p95: number;
  p99: number;
  min: number;
  max: number;
} {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
  return {
    n: s.length,
    median: at(0.5),
    p95: at(0.95),
    p99: at(0.99),
    min: s[0] ?? Number.NaN,
    max: s.at(-1) ?? Number.NaN,
  };
}
