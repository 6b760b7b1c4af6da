/**
 * Progress lines for `bulwark backup` on a terminal (stderr, redrawn in place): a download's bytes
 * and rate as they arrive, and a running backup's or restore's phase and bytes as the API reports
 * them. Nothing is drawn without a terminal (scripts get the final line or `--json` only).
 */
import { Transform } from 'node:stream';

/** 1536 → "1.5 KiB". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${Math.round(n)} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** `[#####.....]  40%` for a known total, nothing for an unknown one. */
function bar(done: number, total: number | null, width = 20): string {
  if (!total || total <= 0) return '';
  const f = Math.min(1, done / total);
  const filled = Math.round(f * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.floor(f * 100)).padStart(3)}%  `;
}

/** A download's meter: counts what passes; on a terminal, draws bytes, rate (and a bar when the size is known). */
export function transferMeter(enabled: boolean, total: number | null = null) {
  const started = Date.now();
  let bytes = 0;
  let last = 0;
  const draw = (final: boolean) => {
    const s = Math.max((Date.now() - started) / 1000, 0.001);
    process.stderr.write(
      `\r${bar(bytes, total)}${formatBytes(bytes).padStart(10)}  ${formatBytes(bytes / s)}/s   ${final ? '\n' : ''}`,
    );
  };
  return {
    meter: new Transform({
      transform(chunk: Buffer, _e, cb) {
        bytes += chunk.length;
        if (enabled && Date.now() - last > 100) {
          last = Date.now();
          draw(false);
        }
        cb(null, chunk);
      },
    }),
    done() {
      if (enabled) draw(true);
      return { bytes, seconds: (Date.now() - started) / 1000 };
    },
  };
}

export type JobProgress = {
  phase: string;
  done_bytes: number;
  total_bytes: number | null;
  updated_at: string;
} | null;

/**
 * The line of a running backup or restore while `--wait` follows it: status, phase, bytes of the
 * phase, its rate (from two reports of the same phase), a bar when the archive's size is known.
 */
export function jobMeter(enabled: boolean) {
  let prev: { phase: string; bytes: number; at: number } | null = null;
  let rate = 0;
  let drawn = false;
  return {
    update(status: string, p: JobProgress) {
      if (!enabled) return;
      let line = status;
      if (p) {
        const at = Date.parse(p.updated_at);
        if (prev && prev.phase === p.phase && at > prev.at)
          rate = ((p.done_bytes - prev.bytes) * 1000) / (at - prev.at);
        else if (!prev || prev.phase !== p.phase) rate = 0;
        prev = { phase: p.phase, bytes: p.done_bytes, at };
        line = `${status}: ${p.phase.padEnd(8)} ${bar(p.done_bytes, p.total_bytes)}${formatBytes(p.done_bytes).padStart(10)}${
          p.total_bytes ? ` of ${formatBytes(p.total_bytes)}` : ''
        }${rate > 0 ? `  ${formatBytes(rate)}/s` : ''}`;
      }
      process.stderr.write(`\r${line.padEnd(78)}`);
      drawn = true;
    },
    end() {
      if (drawn) process.stderr.write('\n');
      drawn = false;
    },
  };
}
