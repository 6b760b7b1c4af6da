import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { dataLayout } from '../../embedded/layout.ts';
import { readStackState, type StackState } from '../control-db.ts';
import { defaultDataDir } from '../options.ts';

type UpInfo = {
  version: string;
  pid: number;
  started_at: string;
  server_url: string;
  ports: Record<string, number>;
  pids: Record<string, number | undefined>;
};

/** One line, control characters shown escaped, bounded. */
const oneLine = (s: string) =>
  s
    .replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
    .slice(0, 300);

function alive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description(
      'What runs, versions, ports and the job queue, for a data dir on this host ' +
        '(exit codes: 0 running · 1 stopped, or the job queue cannot be read)',
    )
    .option('--data-dir <dir>', 'data dir of a `bulwark up` (env BULWARK_DATA_DIR)', defaultDataDir())
    .option('--json', 'machine-readable output')
    .action(async (o: { dataDir: string; json?: boolean }) => {
      const layout = dataLayout(o.dataDir);
      const infoFile = path.join(layout.root, 'up.json');
      if (!existsSync(infoFile)) {
        process.stderr.write(`no Bulwark has run in ${layout.root}\n`);
        process.exit(1);
      }
      const info = JSON.parse(readFileSync(infoFile, 'utf8')) as UpInfo;
      const running = alive(info.pid) && existsSync(layout.lockFile);
      const processes = Object.fromEntries(
        Object.entries(info.pids).map(([name, pid]) => [name, { pid, running: running && alive(pid) }]),
      );
      let ready: string = 'unreachable';
      let queue: StackState['queue'] = [];
      // Why the control database (job queue, nodes) could not be read; null when it was.
      let unreadable: string | null = running ? null : 'the stack is not running';
      let nodes: StackState['nodes'] = [];
      if (running) {
        try {
          const r = await fetch(`${info.server_url}/ready`, { signal: AbortSignal.timeout(3_000) });
          ready = r.ok ? 'ready' : `not ready (${r.status})`;
        } catch {}
        try {
          ({ queue, nodes } = await readStackState(layout.root));
        } catch (err) {
          unreadable = oneLine((err as Error)?.message || String(err));
        }
      }
      const out = {
        data_dir: layout.root,
        running,
        version: info.version,
        started_at: info.started_at,
        server: { url: info.server_url, ready },
        ports: info.ports,
        processes,
        nodes,
        // null (with jobs_error) when the queue could not be read: unknown, not empty.
        jobs: unreadable ? null : Object.fromEntries(queue.map((q) => [q.status, q.count])),
        jobs_error: unreadable,
      };
      if (o.json) {
        process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      } else {
        const lines = [
          `Bulwark ${out.version} in ${out.data_dir}: ${running ? 'running' : 'stopped'}`,
          `  server    ${out.server.url}  ${running ? out.server.ready : ''}`,
          `  ports     server ${info.ports.server} · pgbouncer ${info.ports.pooler} · postgres ${info.ports.postgres}`,
          ...Object.entries(processes).map(
            ([n, p]) => `  ${n.padEnd(9)} pid ${p.pid ?? '-'}  ${p.running ? 'running' : 'stopped'}`,
          ),
          ...nodes.map(
            (n) =>
              `  node      ${n.name}  ${n.pg_version?.split(' on ')[0] ?? '?'}  heartbeat ${n.heartbeat_age_s ?? '?'} s ago`,
          ),
          `  jobs      ${
            unreadable
              ? `unknown: cannot read the job queue (${unreadable})`
              : queue.length
                ? queue.map((q) => `${q.status} ${q.count}`).join(' · ')
                : 'none'
          }`,
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
      }
      // 0 running and the queue read · 1 stopped, or the job queue cannot be read (jobs_error).
      process.exit(running && !unreadable ? 0 : 1);
    });
}
