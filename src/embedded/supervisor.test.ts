import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { test } from 'node:test';
import { stopChild } from './process.ts';
import { type SupervisorEvent, supervise } from './supervisor.ts';

// Real (tiny) processes: one that exits at once with code 3, one that runs until stopped.
const crasher = () => spawn(process.execPath, ['-e', 'process.exit(3)'], { stdio: 'ignore' });
const sleeper = () => spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
const policy = {
  initialDelayMs: 20,
  maxDelayMs: 80,
  stableAfterMs: 60_000,
  maxCrashes: 6,
  crashWindowMs: 60_000,
};

test('backoff doubles to its ceiling, a failed start counts as a crash, and it gives up at the limit', async () => {
  const events: SupervisorEvent[] = [];
  let starts = 0;
  const s = supervise({
    name: 'agent',
    first: crasher(),
    policy,
    start: async (track) => {
      starts += 1;
      const c = crasher();
      track(c);
      // Every other start fails before "ready"; the rest come up and then crash.
      if (starts % 2 === 0) {
        await new Promise((r) => c.once('exit', r));
        throw new Error('exited before it was ready');
      }
      return c;
    },
    stopChild: (c) => stopChild(c, 'SIGTERM', 2_000),
    onEvent: (e) => events.push(e),
  });
  assert.equal(await s.done, 'gave_up');
  const delays = events.flatMap((e) => ('restartInMs' in e ? [e.restartInMs] : []));
  assert.deepEqual(delays, [20, 40, 80, 80, 80]);
  assert.deepEqual(
    events.map((e) => e.kind),
    // Six crashes in the window: three after running, two failed starts, the sixth gives up.
    [
      'crashed',
      'restarted',
      'crashed',
      'restart_failed',
      'restarted',
      'crashed',
      'restart_failed',
      'restarted',
      'gave_up',
    ],
  );
  const first = events[0];
  assert.ok(first?.kind === 'crashed' && first.exit.code === 3);
  assert.equal(s.current(), null);
});

test('a child that ran stably starts its backoff again from the first delay', async () => {
  const events: SupervisorEvent[] = [];
  let clock = 0;
  let children: ChildProcess[] = [];
  const s = supervise({
    name: 'server',
    first: crasher(),
    policy: { ...policy, stableAfterMs: 1_000 },
    now: () => clock,
    start: async (track) => {
      const c = children.length < 2 ? crasher() : sleeper();
      children.push(c);
      track(c);
      return c;
    },
    stopChild: (c) => stopChild(c, 'SIGTERM', 2_000),
    onEvent: (e) => {
      events.push(e);
      // The second incarnation "runs" 5 s (the clock is ours) before it dies.
      if (e.kind === 'restarted' && e.restarts === 1) clock += 5_000;
    },
  });
  const deadline = Date.now() + 10_000;
  while (events.filter((e) => e.kind === 'restarted').length < 3 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
  await s.stop();
  assert.equal(await s.done, 'stopped');
  const delays = events.flatMap((e) => ('restartInMs' in e ? [e.restartInMs] : []));
  assert.deepEqual(delays, [20, 20, 40]);
  for (const c of children) assert.ok(c.exitCode !== null || c.signalCode !== null, 'no child left');
  children = [];
});

test('stop() reaches a child that is still starting', async () => {
  let starting: ChildProcess | null = null;
  const s = supervise({
    name: 'agent',
    first: crasher(),
    policy,
    start: async (track) => {
      const c = sleeper();
      starting = c;
      track(c);
      await new Promise((r) => c.once('exit', r));
      throw new Error('never ready');
    },
    stopChild: (c) => stopChild(c, 'SIGTERM', 2_000),
    onEvent: () => {},
  });
  const deadline = Date.now() + 5_000;
  while (!starting && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.ok(starting);
  await s.stop();
  assert.equal(await s.done, 'stopped');
  const c = starting as ChildProcess;
  assert.ok(c.exitCode !== null || c.signalCode !== null);
});
