/**
 * The agent's replay cache for execution tokens (ADR 0019): every admitted `jti` is kept until
 * its token expired (plus the allowed skew), across restarts.
 *
 * On disk: an append-only log in the agent's data dir, mode 0600 (refused otherwise), one line
 * `<jti> <exp>\n` per admitted token, fsync'ed before `admit` answers — so a token is never run
 * before its jti is durable. On start the log is read and compacted (expired lines dropped;
 * temp file + fsync + rename + directory fsync). A torn last line (a crash mid-append, before
 * the fsync answered) is dropped: its token was never admitted. Any other damage fails closed:
 * the cache refuses to open, and the agent runs no token until an operator looks.
 *
 * Bounded: when `maxEntries` unexpired jtis are held, new tokens are refused ('full') rather
 * than an unexpired jti forgotten.
 */

import { closeSync, constants, fstatSync, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs';
import { writeFileAtomic0600 } from '../../shared/atomic-file.ts';
import type { ReplayGuard } from '../../shared/execution-token.ts';

export class ReplayCacheError extends Error {}

export type ReplayCacheOptions = {
  file: string;
  maxEntries: number;
  /** Seconds a jti is kept past its exp (the verifier's allowed skew). */
  skewSeconds?: number;
  /** Epoch milliseconds. */
  now?: () => number;
};

export type ReplayCache = ReplayGuard & { size(): number; close(): void };

const LINE = /^([A-Za-z0-9_.:-]{1,128}) (\d{1,15})$/;

export function createReplayCache(opts: ReplayCacheOptions): ReplayCache {
  const now = opts.now ?? Date.now;
  const skew = opts.skewSeconds ?? 30;
  if (!Number.isSafeInteger(opts.maxEntries) || opts.maxEntries < 1)
    throw new ReplayCacheError('replay cache: maxEntries must be a positive integer');
  const seen = new Map<string, number>();
  for (const [jti, exp] of readLog(opts.file)) seen.set(jti, Math.max(exp, seen.get(jti) ?? 0));
  const live = (exp: number) => exp + skew >= now() / 1000;
  for (const [jti, exp] of seen) if (!live(exp)) seen.delete(jti);
  if (seen.size > opts.maxEntries)
    throw new ReplayCacheError('replay cache: file holds more than maxEntries');
  compact(opts.file, seen);
  let fd: number | null = openSync(opts.file, constants.O_WRONLY | constants.O_APPEND, 0o600);
  let lines = seen.size;

  const prune = () => {
    for (const [jti, exp] of seen) if (!live(exp)) seen.delete(jti);
  };

  return {
    admit(jti: string, exp: number): 'ok' | 'replayed' | 'full' {
      if (fd === null) throw new ReplayCacheError('replay cache: closed');
      const line = `${jti} ${exp}`;
      if (!LINE.test(line)) throw new ReplayCacheError('replay cache: bad jti or exp');
      const known = seen.get(jti);
      if (known !== undefined) {
        if (live(known)) return 'replayed';
        seen.delete(jti);
      }
      if (seen.size >= opts.maxEntries) {
        prune();
        if (seen.size >= opts.maxEntries) return 'full';
      }
      writeSync(fd, `${line}\n`);
      fsyncSync(fd);
      seen.set(jti, exp);
      lines++;
      // Keep the log near the live set: rewrite it once it is mostly expired lines.
      if (lines > 2 * opts.maxEntries) {
        prune();
        closeSync(fd);
        fd = null;
        compact(opts.file, seen);
        fd = openSync(opts.file, constants.O_WRONLY | constants.O_APPEND, 0o600);
        lines = seen.size;
      }
      return 'ok';
    },
    size: () => seen.size,
    close() {
      if (fd !== null) closeSync(fd);
      fd = null;
    },
  };
}

function readLog(file: string): Array<[string, number]> {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new ReplayCacheError(`replay cache ${file}: cannot open (${(err as NodeJS.ErrnoException).code})`);
  }
  let text: string;
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new ReplayCacheError(`replay cache ${file} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
      throw new ReplayCacheError(`replay cache ${file} is accessible by group/others (mode ${mode})`);
    }
    if (typeof process.getuid === 'function' && st.uid !== process.getuid())
      throw new ReplayCacheError(`replay cache ${file} is owned by another user`);
    text = readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
  const lines = text.split('\n');
  // Complete lines end with '\n': the last element is '' or a torn append (never acknowledged).
  lines.pop();
  const out: Array<[string, number]> = [];
  for (const [i, l] of lines.entries()) {
    const m = LINE.exec(l);
    if (!m) throw new ReplayCacheError(`replay cache ${file}: line ${i + 1} is corrupt; refusing to start`);
    out.push([m[1]!, Number(m[2])]);
  }
  return out;
}

function compact(file: string, seen: ReadonlyMap<string, number>): void {
  let data = '';
  for (const [jti, exp] of seen) data += `${jti} ${exp}\n`;
  writeFileAtomic0600(file, data);
}
