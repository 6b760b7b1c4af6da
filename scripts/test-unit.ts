/**
 * `npm run test:unit`: the test files that need no database, server, PostgreSQL or
 * PgBouncer (the rule is in scripts/test-files.ts), run with node's test runner in seconds.
 * BULWARK_TEST_FILTER narrows the set as for `npm test`; `--list` shows which files run and
 * why each other one is left to `npm test`. Fails when it selects no file or runs no test.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { listTests, needsStack, root } from './test-files.ts';

const started = Date.now();
const all = await listTests();
const verdicts = await Promise.all(all.map(needsStack));
const files = all.filter((_, i) => verdicts[i] === null);

if (process.argv.includes('--list')) {
  all.forEach((f, i) => {
    const why = verdicts[i];
    process.stdout.write(why ? `stack  ${f}  (${why})\n` : `unit   ${f}\n`);
  });
  process.exit(files.length ? 0 : 1);
}
if (files.length === 0) {
  const filtered = process.env.BULWARK_TEST_FILTER ? ', BULWARK_TEST_FILTER applied' : '';
  process.stderr.write(`test:unit: no unit test file among ${all.length} test files${filtered}\n`);
  process.exit(1);
}
process.stdout.write(`test:unit: ${files.length} of ${all.length} test files need no database\n`);

// A unit test that reaches for the stack must fail, not find one left over from `npm test`.
const env = { ...process.env };
delete env.BULWARK_TEST_ENV;
const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-unit-'));
const tap = path.join(tmp, 'report.tap');
const code = await new Promise<number>((resolve) => {
  const child = spawn(
    process.execPath,
    [
      '--test',
      '--test-concurrency=8',
      '--test-timeout=60000',
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      '--test-reporter=tap',
      `--test-reporter-destination=${tap}`,
      ...files,
    ],
    { cwd: root, stdio: 'inherit', env },
  );
  child.on('close', (c) => resolve(c ?? 1));
});
const report = await fs.readFile(tap, 'utf8').catch(() => '');
await fs.rm(tmp, { recursive: true, force: true });
const tests = Number(/^# tests (\d+)$/m.exec(report)?.[1] ?? 0);
const seconds = ((Date.now() - started) / 1000).toFixed(1);
process.stdout.write(`npm run test:unit: ${tests} tests in ${files.length} files, ${seconds} s\n`);
if (tests === 0) process.stderr.write('test:unit: no test ran\n');
process.exit(code || (tests === 0 ? 1 : 0));
