// Attack review of ADR 0036 (safe PgBouncer cuts), a finding now fixed. A tenant with its owner
// password (and, to pick the moment, a write key: database.rotate, allowlist.write,
// backups.restore and databases.delete all cut) keeps cancel requests for its own running queries
// flowing while its database is cut. A CancelRequest carries no user or database: PgBouncer 1.18
// matches it by key, ties it to the pool of the query's client and keeps it in that pool's cancel
// lists until a server connection forwards it. No hba line applies to it and it is no `cl_login`
// client, so the first cut design did not wait for it; `KILL <db>` then met a cancel request on its
// way out and PgBouncer aborted (`FATAL … disconnect_client(): bad client state: 1`) within a
// handful of cuts (5 in one run) with 4 cancelling sessions. The cut now also ends the database's
// server sessions in PostgreSQL and waits until its pools hold no server connection and no cancel
// request (a cancel joins a pool only for a client linked to a server) before the KILL.
// Own PgBouncer: were it to die, nothing else is hit.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { databaseHandlers } from '../src/agent/jobs/database-handlers.ts';
import type { PoolerManager } from '../src/agent/pgbouncer/pooler-manager.ts';
import { ensureTenantTemplate } from '../src/agent/postgres/catalog-visibility.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import {
  clientFrom,
  databaseJobKit,
  newPassword,
  type PrivatePooler,
  startPrivatePooler,
  tryLogin,
  uniqueName,
} from './pooler-harness.ts';

let p: PrivatePooler;
let pooler: PoolerManager;
let kit: ReturnType<typeof databaseJobKit>;
const sockets = new Set<net.Socket>();
before(async () => {
  p = await startPrivatePooler();
  pooler = p.manager();
  await pooler.start();
  kit = databaseJobKit(p, pooler);
  await ensureTenantTemplate(kit.admin, kit.connectAdmin);
});
after(async () => {
  for (const s of sockets) s.destroy();
  await kit.close();
  await p.stop().catch(() => {});
});

type Login = { database: string; user: string; password: string };

const alive = () =>
  pooler.admin('SHOW VERSION').then(
    () => true,
    () => false,
  );

async function coldCreate(): Promise<Login> {
  const password = newPassword();
  const name = uniqueName('zc');
  const h = new Map(databaseHandlers({ ...kit.deps, platform: { databases: ['bulwark'], roles: [] } }));
  await h.get('database.create')!(
    {
      database_id: randomUUID(),
      name,
      verifier: scramVerifier(password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: DEFAULT_LIMITS,
    },
    kit.ctx(password),
  );
  return { database: name, user: roleNames(name).owner, password };
}

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));
const rnd = (n: number) => Math.floor(Math.random() * n);

function cancelRequest(pid: number, key: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeInt32BE(16, 0);
  b.writeInt32BE(80877102, 4);
  b.writeInt32BE(pid | 0, 8);
  b.writeInt32BE(key | 0, 12);
  return b;
}

function raw(): net.Socket {
  const s = net.connect({ host: '127.0.0.1', port: p.port });
  sockets.add(s);
  s.on('error', () => {});
  s.on('close', () => sockets.delete(s));
  return s;
}

/** Waits (bounded) for the next chunk PgBouncer sends; null on close or timeout. */
function nextData(s: net.Socket, ms = 2_000): Promise<Buffer | null> {
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

const connected = (s: net.Socket) =>
  new Promise<boolean>((resolve) => {
    s.once('connect', () => resolve(true));
    s.once('error', () => resolve(false));
    setTimeout(() => resolve(false), 2_000).unref();
  });

async function sendCancel(pid: number, key: number) {
  const s = raw();
  try {
    if (!(await connected(s))) return;
    s.write(cancelRequest(pid, key));
    await nextData(s, 500);
  } finally {
    s.destroy();
  }
}

/** A session that runs a long query and has it cancelled through PgBouncer (real keys). */
async function cancelLoop(l: Login) {
  const c = clientFrom('127.0.0.1', { port: p.port, ...l });
  try {
    await c.connect();
    const q = c.query('SELECT pg_sleep(2)').catch(() => {});
    await sleep(rnd(30));
    const keys = c as unknown as { processID: number; secretKey: number };
    await sendCancel(keys.processID, keys.secretKey);
    await Promise.race([q, sleep(2_500)]);
  } catch {
    // cut or cancelled: fine
  } finally {
    await c.end().catch(() => {});
  }
}

test("zz-attack-cut: cancel requests for the tenant's own queries racing cuts of its database do not crash PgBouncer", async () => {
  const a = await coldCreate();
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: p.port, ...a })), null);
  let stop = false;
  const loops = Array.from({ length: 4 }, async () => {
    while (!stop) await cancelLoop(a).catch(() => {});
  });
  // Until 30 cuts or 10 s: each cut now ends the database's server sessions and waits for the
  // cancels under way, which a loaded host makes slower.
  const deadline = Date.now() + 10_000;
  let cuts = 0;
  let up = true;
  while (Date.now() < deadline && up && cuts < 30) {
    await pooler.disconnect(a.database).catch(() => {});
    cuts++;
    await sleep(rnd(25));
    up = await alive();
  }
  stop = true;
  await Promise.all(loops);
  const log = await fs
    .readFile(`${p.dir}/../pgbouncer.log`, 'utf8')
    .then((t) => t.slice(-900))
    .catch(String);
  assert.ok(up, `PgBouncer died after ${cuts} cuts; its log ends:\n${log}`);
  assert.ok(cuts >= 6, `only ${cuts} cuts in 10 s`);
});
