import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { JobContext } from '../jobs/job-context.ts';
import { createSampleSchedule, sampleAfterCreate } from './sample-schedule.ts';

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a round at start, early rounds coalesced and spaced, none after stop', async () => {
  let rounds = 0;
  const schedule = createSampleSchedule({
    sample: async () => {
      rounds++;
    },
    intervalMs: 60_000,
    soonMs: 20,
    minGapMs: 150,
  });
  schedule.start();
  assert.equal(rounds, 1, 'a round at start');
  // A burst of creates right after the start: one early round, and not before the gap has passed.
  for (let i = 0; i < 10; i++) schedule.soon();
  await wait(60);
  assert.equal(rounds, 1, 'spaced from the start round');
  await wait(200);
  assert.equal(rounds, 2, 'the burst cost one round');
  // Later, a single create: its round comes after soonMs.
  await wait(160);
  schedule.soon();
  await wait(80);
  assert.equal(rounds, 3);
  // Stopped: a pending early round never runs.
  schedule.soon();
  schedule.stop();
  await wait(250);
  assert.equal(rounds, 3);
});

test('a database made here asks for an early round; a failed create or another job does not', async () => {
  let asked = 0;
  const ok = async () => ({ done: true });
  const handlers = sampleAfterCreate(
    new Map([
      ['database.create', ok],
      ['database.delete', ok],
      [
        'database.rotate',
        async () => {
          throw new Error('boom');
        },
      ],
    ]),
    () => asked++,
  );
  // The wrapper only passes the context on; these handlers never read it.
  const ctx = {} as JobContext;
  assert.deepEqual(await handlers.get('database.create')!({}, ctx), { done: true });
  assert.equal(asked, 1);
  await handlers.get('database.delete')!({}, ctx);
  assert.equal(asked, 1);
  const failing = sampleAfterCreate(
    new Map([
      [
        'database.create',
        async () => {
          throw new Error('no space');
        },
      ],
    ]),
    () => asked++,
  );
  await assert.rejects(() => failing.get('database.create')!({}, ctx), /no space/);
  assert.equal(asked, 1);
});
