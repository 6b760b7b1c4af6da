/**
 * Throughput runs with autocannon in a child process (so its own work does not compete with the
 * server's event loop in this process), and the server's CPU time per request.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';

const AUTOCANNON = path.resolve(import.meta.dirname, '../node_modules/.bin/autocannon');

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export type Run = { rps: number; non2xx: number; p99: number; cpuUsPerReq: number };

/** One autocannon run; also this process's CPU time per request (robust on a shared machine). */
export async function autocannon(
  url: string,
  headers: string[],
  load: { connections: number; seconds: number },
): Promise<Run> {
  const cpu0 = process.cpuUsage();
  const r = await autocannonRun(url, headers, load);
  const cpu = process.cpuUsage(cpu0);
  return { ...r, cpuUsPerReq: (cpu.user + cpu.system) / Math.max(1, r.total) };
}

function autocannonRun(
  url: string,
  headers: string[],
  load: { connections: number; seconds: number },
): Promise<{ rps: number; non2xx: number; p99: number; total: number }> {
  return new Promise((resolve, reject) => {
    const args = [
      '-j',
      '-c',
      String(load.connections),
      '-d',
      String(load.seconds),
      ...headers.flatMap((h) => ['-H', h]),
      url,
    ];
    const child = spawn(AUTOCANNON, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.on('error', reject);
    child.on('close', () => {
      try {
        const r = JSON.parse(out) as {
          requests: { average: number; total: number };
          non2xx: number;
          latency: { p99: number };
        };
        resolve({ rps: r.requests.average, non2xx: r.non2xx, p99: r.latency.p99, total: r.requests.total });
      } catch (err) {
        reject(err);
      }
    });
  });
}
