/**
 * Bounds the argon2 work a server process does at once. argon2id is meant to be expensive: on a
 * small host a flood of sign-ins would otherwise take every core (libuv's pool has four threads),
 * and every other route's latency with it. At most `concurrency` verifications run (default: one
 * core fewer than the host has, at least one), at most `maxWaiting` wait; past that a sign-in is
 * refused at once (429, retry in a second) without looking at the password or the user — so the
 * refusal says nothing about either.
 */
import { availableParallelism } from 'node:os';

export type PasswordGate = {
  /** Runs `work` when a slot is free; null (without running it) when too many already wait. */
  run<T>(work: () => Promise<T>): Promise<T | null>;
};

export function createPasswordGate(opts: { concurrency?: number; maxWaiting?: number } = {}): PasswordGate {
  const concurrency = opts.concurrency ?? Math.max(1, availableParallelism() - 1);
  const maxWaiting = opts.maxWaiting ?? 64;
  let running = 0;
  const waiting: (() => void)[] = [];
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else running--;
  };
  return {
    async run<T>(work: () => Promise<T>): Promise<T | null> {
      if (running >= concurrency) {
        if (waiting.length >= maxWaiting) return null;
        await new Promise<void>((resolve) => waiting.push(resolve));
      } else running++;
      try {
        return await work();
      } finally {
        release();
      }
    },
  };
}
