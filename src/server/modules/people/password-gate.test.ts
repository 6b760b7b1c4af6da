import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createPasswordGate } from './password-gate.ts';

test('the password gate runs at most `concurrency` at once, queues `maxWaiting`, refuses the rest at once', async () => {
  const gate = createPasswordGate({ concurrency: 2, maxWaiting: 3 });
  let running = 0;
  let peak = 0;
  const releases: (() => void)[] = [];
  const work = () =>
    new Promise<string>((resolve) => {
      running++;
      peak = Math.max(peak, running);
      releases.push(() => {
        running--;
        resolve('done');
      });
    });
  const runs = Array.from({ length: 7 }, () => gate.run(work));
  // 2 running, 3 waiting: the 6th and 7th are refused without running.
  assert.equal(await runs[5], null);
  assert.equal(await runs[6], null);
  assert.equal(running, 2);
  for (let i = 0; i < 5; i++) {
    while (releases.length === 0) await new Promise((r) => setImmediate(r));
    releases.shift()!();
    await new Promise((r) => setImmediate(r));
  }
  assert.deepEqual(await Promise.all(runs.slice(0, 5)), ['done', 'done', 'done', 'done', 'done']);
  assert.equal(peak, 2);
  // A failing piece of work frees its slot too.
  await assert.rejects(
    gate.run(() => Promise.reject(new Error('boom'))),
    /boom/,
  );
  assert.equal(await gate.run(async () => 'after'), 'after');
});
