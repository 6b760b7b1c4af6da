import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

// The dashboard's build is part of `npm start` and `npm test`, so it must cost nothing when nothing
// changed: the second run answers from its stamp without touching web/dist.

const root = path.resolve(import.meta.dirname, '..');
const index = path.join(root, 'web', 'dist', 'index.html');

function build(): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(
      process.execPath,
      [path.join(root, 'scripts', 'build-web.ts')],
      { cwd: root, timeout: 120_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
    ),
  );
}

test('a second build with nothing changed is a no-op that takes well under a second', async () => {
  await build(); // builds if needed (npm test has built already)
  const before = fs.statSync(index).mtimeMs;
  const out = await build();
  const ms = Number(/dashboard up to date \((\d+) ms\)/.exec(out)?.[1]);
  assert.ok(Number.isFinite(ms), `cached answer expected, got: ${out}`);
  assert.ok(ms < 1000, `the cached check took ${ms} ms`);
  assert.equal(fs.statSync(index).mtimeMs, before, 'web/dist untouched');
});

test('the built page has no inline script or style, and only hashed assets', () => {
  const html = fs.readFileSync(index, 'utf8');
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/i, 'every script has a src');
  assert.doesNotMatch(html, /<style|\sstyle=/i, 'no inline style');
  const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1] as string);
  for (const ref of refs.filter((r) => r.startsWith('/assets/')))
    assert.match(ref, /^\/assets\/[\w-]+-[\w-]{8}\.(js|css)$/, `${ref} carries a content hash`);
  assert.ok(
    refs.some((r) => r.endsWith('.js')),
    'the entry script is referenced',
  );
  for (const ref of refs) assert.ok(ref.startsWith('/'), `${ref} is same-origin`);
});
