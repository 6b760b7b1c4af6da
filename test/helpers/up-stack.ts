import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from './ports.ts';

const CLI = path.resolve(import.meta.dirname, '../../src/cli/index.ts');

export type TenantDatabase = { name: string; user: string; database: string; password: string };

/** A real `bulwark up` (its own data dir and loopback ports) and what a test does with it. */
export type UpStack = {
  dir: string;
  ports: { server: number; pooler: number; pg: number };
  child: ChildProcess;
  output(): string;
  /** Waits until the supervisor's output matches (bounded). */
  waitForOutput(re: RegExp, timeoutMs?: number): Promise<void>;
  pids(): Record<string, number>;
  // biome-ignore lint/suspicious/noExplicitAny: API answers are read as loosely as inject().json()
  api(method: 'GET' | 'POST' | 'DELETE', url: string, body?: unknown): Promise<{ status: number; json: any }>;
  createDatabase(name: string): Promise<TenantDatabase>;
  /** A client through PgBouncer (or `port`) as the tenant owner. */
  connectTenant(db: TenantDatabase, opts?: { port?: number; database?: string }): Promise<pg.Client>;
  control(): Promise<pg.Client>;
  /** Ctrl-C; resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Last resort (after hook): kill whatever is left and remove the data dir. */
  destroy(): Promise<void>;
};

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function exited(c: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) resolve(c.exitCode);
    else c.once('exit', (code) => resolve(code));
  });
}

/** An API key for `account`, made by the operator's `bulwark admin create-key` on the stack's data dir. */
export async function operatorKey(stack: { dir: string }, account: string): Promise<string> {
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile(
      process.execPath,
      [CLI, 'admin', 'create-key', '--account', account, '--data-dir', stack.dir, '--json'],
      { timeout: 30_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
    ),
  );
  return (JSON.parse(stdout) as { key: string }).key;
}

/**
 * The stack's HTTP API as the account of `key`. An answer's body is parsed as JSON; `json:
 * 'loose'` (the default) keeps a body that is not JSON as its text, `'strict'` throws on it (an
 * empty body is null).
 */
export function accountApi(
  stack: { ports: { server: number } },
  key: string,
  opts: { json?: 'loose' | 'strict' } = {},
  // biome-ignore lint/suspicious/noExplicitAny: API answers are read as loosely as inject().json()
): (method: string, url: string, body?: unknown) => Promise<{ status: number; json: any }> {
  return async (method, url, body) => {
    const res = await fetch(`http://127.0.0.1:${stack.ports.server}${url}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    if (opts.json === 'strict') return { status: res.status, json: text ? JSON.parse(text) : null };
    let json: unknown = text;
    try {
      json = JSON.parse(text);
    } catch {}
    return { status: res.status, json };
  };
}

/** `env`: more variables for `bulwark up` (the operator's settings); `args`: more flags. */
export async function startUpStack(
  opts: { env?: NodeJS.ProcessEnv; args?: string[] } = {},
): Promise<UpStack> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-up-stack-'));
  const ports = { server: await freePort(), pooler: await freePort(), pg: await freePort() };
  const args = ['--data-dir', dir, '--port', String(ports.server)];
  args.push('--pooler-port', String(ports.pooler), '--pg-port', String(ports.pg));
  args.push(...(opts.args ?? []));
  const child = spawn(process.execPath, [CLI, 'up', ...args], {
    env: { ...process.env, BULWARK_UNSAFE_FAST: '1', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const waitForOutput = async (re: RegExp, timeoutMs = 90_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(out)) {
      if (Date.now() > deadline) throw new Error(`no ${re} in ${timeoutMs / 1000} s:\n${out}`);
      if (child.exitCode !== null) throw new Error(`bulwark up exited ${child.exitCode}:\n${out}`);
      await sleep(50);
    }
  };
  const destroy = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited(child);
      clearTimeout(timer);
    }
    await fs.rm(dir, { recursive: true, force: true });
  };
  try {
    await waitForOutput(/Bulwark is ready/);
  } catch (err) {
    await destroy();
    throw err;
  }

  const key = await operatorKey({ dir }, 'acme');
  const api: UpStack['api'] = accountApi({ ports }, key);

  const connect = async (cfg: pg.ClientConfig) => {
    const c = new pg.Client({ host: '127.0.0.1', connectionTimeoutMillis: 5_000, ...cfg });
    c.on('error', () => {});
    await c.connect();
    return c;
  };

  return {
    dir,
    ports,
    child,
    output: () => out,
    waitForOutput,
    pids: () =>
      (JSON.parse(readFileSync(path.join(dir, 'up.json'), 'utf8')) as { pids: Record<string, number> }).pids,
    api,
    async createDatabase(name) {
      const created = await api('POST', '/v1/databases', { name });
      if (created.status !== 202)
        throw new Error(`create ${name}: ${created.status} ${JSON.stringify(created.json)}`);
      const deadline = Date.now() + 60_000;
      for (;;) {
        const d = (await api('GET', `/v1/databases/${name}`)).json;
        if (d.status === 'ready') break;
        if (d.status === 'failed') throw new Error(`create ${name} failed: ${d.failure_reason}`);
        if (Date.now() > deadline) throw new Error(`${name} not ready in 60 s (${d.status})`);
        await sleep(100);
      }
      const conn = (await api('GET', `/v1/databases/${name}/connection`)).json;
      const { password } = (await api('POST', `/v1/databases/${name}/credentials/reveal`)).json;
      return { name, user: conn.user, database: conn.database, password };
    },
    connectTenant: (db, o = {}) =>
      connect({
        port: o.port ?? ports.pooler,
        user: db.user,
        database: o.database ?? db.database,
        password: db.password,
      }),
    control: () =>
      connect({
        connectionString: readFileSync(path.join(dir, 'secrets', 'control-database-url'), 'utf8').trim(),
      }),
    async stop(signal = 'SIGINT') {
      child.kill(signal);
      return exited(child);
    },
    destroy,
  };
}
