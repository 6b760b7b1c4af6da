/**
 * The outcomes this agent process produced, by token, until the token expires (ADR 0021): a
 * delivery repeated with the very same token — a `request.execute` job retried because its
 * `complete` call failed, a frame sent again — is answered with what happened instead of a bare
 * `replayed` refusal that would hide a committed change. Nothing runs twice: the replay cache
 * still refuses the jti first; this only remembers the answer. Kept in memory only (bounded), so a
 * crashed agent answers `replayed` (unknown) as before.
 */
import { createHash } from 'node:crypto';
import type { ExecutionOutcome } from '../../shared/contracts/execution.ts';

type Entry = { outcome: ExecutionOutcome; exp: number; bytes: number };

export function createOutcomeMemo(opts: { maxEntries?: number; maxBytes?: number; now?: () => number } = {}) {
  const maxEntries = opts.maxEntries ?? 64;
  const maxBytes = opts.maxBytes ?? 32 * 1024 * 1024;
  const now = opts.now ?? Date.now;
  const entries = new Map<string, Entry>();
  let bytes = 0;
  const keyOf = (token: string) => createHash('sha256').update(token).digest('hex');
  const drop = (key: string) => {
    const e = entries.get(key);
    if (!e) return;
    bytes -= e.bytes;
    entries.delete(key);
  };
  const prune = () => {
    const t = now() / 1000;
    for (const [key, e] of entries) if (e.exp < t) drop(key);
  };
  return {
    /** Remembers an outcome until `exp` (epoch seconds, the token's plus skew); `size` estimates its bytes. */
    remember(token: string, exp: number, outcome: ExecutionOutcome, size: number): void {
      prune();
      if (size > maxBytes) return;
      const key = keyOf(token);
      drop(key);
      // Oldest out first (a Map keeps insertion order).
      for (const k of entries.keys()) {
        if (entries.size < maxEntries && bytes + size <= maxBytes) break;
        drop(k);
      }
      entries.set(key, { outcome, exp, bytes: size });
      bytes += size;
    },
    recall(token: string): ExecutionOutcome | null {
      prune();
      return entries.get(keyOf(token))?.outcome ?? null;
    },
  };
}
export type OutcomeMemo = ReturnType<typeof createOutcomeMemo>;
