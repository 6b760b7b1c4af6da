/**
 * Which test files exist, and which of them are unit tests (need no database). Shared by
 * `npm test` (scripts/test.ts, runs them all) and `npm run test:unit` (scripts/test-unit.ts).
 *
 * The rule is read from the code at run time, so files can move without a list to update:
 * a test file needs the stack when it, or a helper under test/ it imports (followed
 * transitively), imports one of STACK_HELPERS or STACK_STARTERS, or its name ends in
 * `.e2e.test.ts`, or it says `@needs-stack` (for a test that starts something itself).
 */
import fs from 'node:fs/promises';
import path from 'node:path';

export const root = path.resolve(import.meta.dirname, '..');

/** Helpers that only work under `npm test` (they read BULWARK_TEST_ENV or boot `bulwark up`). */
const STACK_HELPERS = ['test/helpers/env.ts', 'test/helpers/up-stack.ts'];
/** Source modules whose import means the test starts PostgreSQL itself. */
const STACK_STARTERS = ['src/embedded/data-plane.ts', 'src/embedded/postgres-cluster.ts'];
const IMPORT = /(?:\bfrom\s*|\bimport\s*\(?\s*)'(\.{1,2}\/[^']+)'/g;

/**
 * Every `*.test.ts` under src/ and test/, relative to the root, sorted, BULWARK_TEST_FILTER (one or
 * more comma-separated substrings of the path) applied.
 */
export async function listTests(): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    for (const e of await fs.readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.endsWith('.test.ts')) out.push(path.relative(root, p));
    }
  };
  await walk(path.join(root, 'src'));
  await walk(path.join(root, 'test'));
  const filter = process.env.BULWARK_TEST_FILTER;
  // Several substrings: comma-separated (a file matching any of them runs).
  const parts = filter ? filter.split(',').filter(Boolean) : [];
  return out.sort().filter((f) => parts.length === 0 || parts.some((part) => f.includes(part)));
}

/** Why `file` needs the database stack, or null when it is a unit test. */
export async function needsStack(file: string): Promise<string | null> {
  if (file.endsWith('.e2e.test.ts')) return 'named .e2e.test.ts';
  const seen = new Set<string>();
  const visit = async (rel: string): Promise<string | null> => {
    if (seen.has(rel)) return null;
    seen.add(rel);
    const text = await fs.readFile(path.join(root, rel), 'utf8');
    if (text.includes('@needs-stack')) return `${rel} says @needs-stack`;
    for (const m of text.matchAll(IMPORT)) {
      const dep = path.relative(root, path.resolve(root, path.dirname(rel), m[1]!));
      if (STACK_HELPERS.includes(dep) || STACK_STARTERS.includes(dep)) return `${rel} imports ${dep}`;
      // Follow helpers under test/; source modules under src/ are what the test exercises.
      if (dep.startsWith(`test${path.sep}`) && dep.endsWith('.ts')) {
        const why = await visit(dep);
        if (why) return why;
      }
    }
    return null;
  };
  return visit(file);
}
