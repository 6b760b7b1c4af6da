/**
 * Durations in a policy file: a whole number and one unit — `90s`, `30m`, `24h`, `7d`. One unit
 * only, so a value reads the same to everyone (no `1h30m`, no bare numbers of unknown unit).
 */
const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86_400 } as const;

const DURATION = /^([1-9][0-9]{0,5})([smhd])$/;

/** Seconds, or null when the text is not a duration. */
export function parseDuration(text: string): number | null {
  const m = DURATION.exec(text);
  if (!m) return null;
  return Number(m[1]) * UNIT_SECONDS[m[2] as keyof typeof UNIT_SECONDS];
}

/** The largest whole unit: 86400 → `1d`, 5400 → `90m`, 45 → `45s`. */
export function formatDuration(seconds: number): string {
  for (const [unit, size] of [
    ['d', 86_400],
    ['h', 3600],
    ['m', 60],
  ] as const) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size}${unit}`;
  }
  return `${seconds}s`;
}
