import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import pg from 'pg';
import { dataLayout } from '../../embedded/layout.ts';
import { readSecretFile } from '../../embedded/secrets.ts';
import { defaultDataDir } from '../options.ts';

type UpInfo = {
  version: string;
  pid: number;
  started_at: string;
  server_url: string;
  ports: Record<string, number>;
  pids: Record<string, number | undefined>;
};

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
    .description('What runs, versions, ports and the job queue, for a data dir on this host')
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
      let queue: { status: string; count: number }[] = [];
      let nodes: { name: string; pg_version: string | null; heartbeat_age_s: number | null }[] = [];
      if (running) {
        try {
          const r = await fetch(`${info.server_url}/ready`, { signal: AbortSignal.timeout(3_000) });
          ready = r.ok ? 'ready' : `not ready (${r.status})`;
        } catch {}
        const db = new pg.Client({
          connectionString: readSecretFile(path.join(layout.secrets, 'control-database-url')),
        });
        try {
          await db.connect();
          queue = (
            await db.query('SELECT status, count(*)::int AS count FROM jobs GROUP BY status ORDER BY status')
          ).rows;
          nodes = (
            await db.query(
              `SELECT name, pg_version, extract(epoch FROM now() - last_heartbeat_at)::int AS heartbeat_age_s
                 FROM nodes ORDER BY name`,
            )
          ).rows;
        } catch {
        } finally {
          await db.end().catch(() => {});
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
        jobs: Object.fromEntries(queue.map((q) => [q.status, q.count])),
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
          `  jobs      ${queue.length ? queue.map((q) => `${q.status} ${q.count}`).join(' · ') : 'none'}`,
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
      }
      process.exit(running ? 0 : 1);
    });
}
