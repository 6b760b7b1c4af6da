/**
 * Waiting in tests: wait for the event itself, never for a fixed time. `waitFor` polls the exact
 * condition until a deadline and fails with what it waited for; `settles` bounds a promise the
 * code under test hands out (a job, a request, a sweep).
 */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  opts: { timeoutMs?: number; everyMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() >= deadline)
      throw new Error(`timed out after ${opts.timeoutMs ?? 10_000} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, opts.everyMs ?? 10));
  }
}

/** `promise`, or a clear failure when it has not settled within `ms`. */
export async function settles<T>(what: string, promise: Promise<T>, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `waitFor` for slow end-to-end steps (a move, a restore, a node starting): polls `fn` every
 * `everyMs` (default 100) until it returns something other than `undefined`, for at most
 * `timeoutMs` (default 90 s).
 */
export function waitUntil<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 90_000,
  everyMs = 100,
): Promise<T> {
  return waitFor(
    what,
    async () => {
      const v = await fn();
      return v === undefined ? undefined : { v };
    },
    { timeoutMs, everyMs },
  ).then((box) => box.v);
}

/**
 * Waits, when fewer than `ms` are left in the current 30-second TOTP step, for the next step to
 * begin: a test that sends the previous step's code must not see the server's clock cross a step
 * boundary (the previous code would then be two steps old and rightly refused).
 */
export async function roomInTotpStep(ms = 10_000): Promise<void> {
  const left = 30_000 - (Date.now() % 30_000);
  if (left < ms) await new Promise((r) => setTimeout(r, left + 50));
}
