/**
 * What the attack tests of PgBouncer cuts share (test/zz-attack-cut-*.test.ts,
 * test/zz-attack-warm-pgbouncer-kill.test.ts): a private PgBouncer per file, tenant databases made
 * cold by the agent's `database.create` job, and raw PostgreSQL-wire pieces for logins, SSL and
 * cancel requests that no driver would send.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before } from 'node:test';
import { databaseHandlers } from '../../src/agent/jobs/database-handlers.ts';
import type { PoolerManager } from '../../src/agent/pgbouncer/pooler-manager.ts';
import { ensureTenantTemplate } from '../../src/agent/postgres/catalog-visibility.ts';
import { DEFAULT_LIMITS } from '../../src/shared/contracts/jobs.ts';
import { roleNames } from '../../src/shared/identifiers.ts';
import { scramVerifier } from '../../src/shared/scram.ts';
import {
  databaseJobKit,
  newPassword,
  type PrivatePooler,
  startPrivatePooler,
  uniqueName,
} from '../pooler-harness.ts';

/** A test file's own PgBouncer, its manager, the database jobs' kit and the raw sockets still open. */
export type CutKit = {
  p: PrivatePooler;
  pooler: PoolerManager;
  kit: ReturnType<typeof databaseJobKit>;
  sockets: Set<net.Socket>;
};

/** A tenant database made by `coldCreate`: its name, owner login and database id. */
export type TenantLogin = { database: string; user: string; password: string; id: string };

/** Starts a private PgBouncer and its manager, and readies the tenant template. */
async function startCutKit(): Promise<CutKit> {
  const p = await startPrivatePooler();
  const pooler = p.manager();
  await pooler.start();
  const kit = databaseJobKit(p, pooler);
  await ensureTenantTemplate(kit.admin, kit.connectAdmin);
  return { p, pooler, kit, sockets: new Set() };
}

/** Gives the calling test file its own kit: filled in by a `before` hook, torn down by an `after` hook. */
export function cutKitPerFile(): CutKit {
  const k = {} as CutKit;
  before(async () => {
    Object.assign(k, await startCutKit());
  });
  after(async () => {
    for (const s of k.sockets) s.destroy();
    await k.kit.close();
    await k.p.stop().catch(() => {});
  });
  return k;
}

/** The agent's database job handlers on the kit's PgBouncer (the platform's own database kept out). */
export function jobHandlers(k: CutKit) {
  return new Map(databaseHandlers({ ...k.kit.deps, platform: { databases: ['bulwark'], roles: [] } }));
}

/** Makes a tenant database (name from `prefix`, fresh password, loopback allowlist) through database.create. */
export async function coldCreate(k: CutKit, prefix: string, exact?: string): Promise<TenantLogin> {
  const password = newPassword();
  const name = exact ?? uniqueName(prefix);
  const id = randomUUID();
  await jobHandlers(k).get('database.create')!(
    {
      database_id: id,
      name,
      verifier: scramVerifier(password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: DEFAULT_LIMITS,
    },
    k.kit.ctx(password),
  );
  return { database: name, user: roleNames(name).owner, password, id };
}

/** Whether the kit's PgBouncer still answers on its console. */
export function alive(k: CutKit): Promise<boolean> {
  return k.pooler.admin('SHOW VERSION').then(
    () => true,
    () => false,
  );
}

/** The last `chars` characters of the PgBouncer's log (or why it could not be read). */
export function poolerLog(k: CutKit, chars = 1500): Promise<string> {
  return fs
    .readFile(path.join(path.dirname(k.p.dir), 'pgbouncer.log'), 'utf8')
    .then((t) => t.slice(-chars), String);
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<unknown> {
  return new Promise((res) => setTimeout(res, ms));
}

/** A random whole number from 0 to n - 1. */
export function rnd(n: number): number {
  return Math.floor(Math.random() * n);
}

/** A protocol message: its type byte, its length, its body. */
export function message(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0);
  head.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
}

/** A protocol 3.0 StartupMessage naming the user and the database. */
export function startupPacket(user: string, database: string): Buffer {
  const params = Buffer.from(`user\0${user}\0database\0${database}\0\0`);
  const b = Buffer.alloc(8 + params.length);
  b.writeInt32BE(b.length, 0);
  b.writeInt32BE(196608, 4);
  params.copy(b, 8);
  return b;
}

/** An SSLRequest. */
export function sslRequest(): Buffer {
  const b = Buffer.alloc(8);
  b.writeInt32BE(8, 0);
  b.writeInt32BE(80877103, 4);
  return b;
}

/** A CancelRequest for the backend key `pid`/`key`. */
export function cancelRequest(pid: number, key: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeInt32BE(16, 0);
  b.writeInt32BE(80877102, 4);
  b.writeInt32BE(pid | 0, 8);
  b.writeInt32BE(key | 0, 12);
  return b;
}

/** SASLInitialResponse with a SCRAM client-first message (the exchange's first step). */
export function saslInitial(): Buffer {
  const mech = Buffer.from('SCRAM-SHA-256\0');
  const first = Buffer.from(`n,,n=,r=${randomBytes(18).toString('base64')}`);
  const body = Buffer.concat([mech, Buffer.alloc(4), first]);
  body.writeInt32BE(first.length, mech.length);
  return message('p', body);
}

/** A bogus SCRAM client-final (a wrong proof): PgBouncer verifies it and closes the client. */
export function saslBogusFinal(): Buffer {
  return message('p', Buffer.from(`c=biws,r=x,p=${randomBytes(32).toString('base64')}`));
}

/** A TCP connection to the kit's PgBouncer, destroyed by the file's `after` hook if still open. */
export function raw(k: CutKit): net.Socket {
  const s = net.connect({ host: '127.0.0.1', port: k.p.port });
  k.sockets.add(s);
  s.on('error', () => {});
  s.on('close', () => k.sockets.delete(s));
  return s;
}

/** Waits (bounded) for the next chunk PgBouncer sends; null on close or timeout. */
export function nextData(s: net.Socket, ms = 2_000): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const done = (v: Buffer | null) => {
      clearTimeout(t);
      s.off('data', onData);
      s.off('close', onClose);
      resolve(v);
    };
    const onData = (d: Buffer) => done(d);
    const onClose = () => done(null);
    const t = setTimeout(() => done(null), ms);
    s.on('data', onData);
    s.once('close', onClose);
  });
}

/** Whether a raw socket connects within 2 s. */
export function connected(s: net.Socket): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    s.once('connect', () => resolve(true));
    s.once('error', () => resolve(false));
    setTimeout(() => resolve(false), 2_000).unref();
  });
}

/** Sends a CancelRequest on a fresh connection and waits (up to 500 ms) for PgBouncer to close it. */
export async function sendCancel(k: CutKit, pid: number, key: number): Promise<void> {
  const s = raw(k);
  try {
    if (!(await connected(s))) return;
    s.write(cancelRequest(pid, key));
    await nextData(s, 500);
  } finally {
    s.destroy();
  }
}
