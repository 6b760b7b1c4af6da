/**
 * The order `npm test` starts its files in. Files run four at a time; started alphabetically, a
 * long file that sorts last (the `zz-attack-*` reviews) runs alone at the end. Started longest
 * first (from the seconds each took in an earlier run, `test-durations.json`), the run ends
 * sooner. A file the record does not know (a new one) starts first: it may be long.
 *
 * Refresh the record from a full run's output (the spec reporter's top-level lines, each
 * matched to the file that names the test):
 *
 *   npm test > test.log; node scripts/test-durations.ts test.log
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { listTests, root } from './test-files.ts';

const RECORD = path.join(root, 'scripts', 'test-durations.json');

function record(): Record<string, number> {
  try {
    return JSON.parse(readFileSync(RECORD, 'utf8')) as Record<string, number>;
  } catch {
    return {};
  }
}

/** `files`, longest recorded first; unknown files before all, in their given order. */
export function longestFirst(files: readonly string[]): string[] {
  const took = record();
  const at = (f: string) => took[f] ?? Number.POSITIVE_INFINITY;
  return [...files].sort((a, b) => at(b) - at(a));
}

if (import.meta.main) {
  const log = process.argv[2];
  if (!log) {
    process.stderr.write('usage: node scripts/test-durations.ts <npm test output>\n');
    process.exit(2);
  }
  const files = await listTests();
  const texts = new Map(files.map((f) => [f, readFileSync(path.join(root, f), 'utf8')]));
  const seconds: Record<string, number> = {};
  for (const line of readFileSync(log, 'utf8').replaceAll('\0', '').split('\n')) {
    const m = /^✔ (.*) \(([0-9.]+)ms\)$/.exec(line);
    if (!m) continue;
    const name = m[1]!.slice(0, 60);
    const file = files.find((f) => texts.get(f)!.includes(name));
    if (file) seconds[file] = (seconds[file] ?? 0) + Number(m[2]) / 1000;
  }
  const sorted = Object.fromEntries(
    Object.entries(seconds)
      .sort(([, a], [, b]) => b - a)
      .map(([f, s]) => [f, Math.round(s * 10) / 10]),
  );
  writeFileSync(RECORD, `${JSON.stringify(sorted, null, 2)}\n`);
  process.stdout.write(`${Object.keys(sorted).length} files recorded in ${path.relative(root, RECORD)}\n`);
}
