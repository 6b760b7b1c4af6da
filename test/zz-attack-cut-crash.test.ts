// Attack review of ADR 0036 (safe PgBouncer cuts): a tenant with its database's owner password and
// raw TCP access to PgBouncer tries to crash PgBouncer 1.18 while the agent cuts databases —
// with every kind of login traffic it can make (good and wrong passwords, other tenants' user
// names, unknown users, SCRAM exchanges stalled half-way, startup packets sent in pieces, SSL
// requests, cancel requests with guessed keys) and every order of cuts (plain, held,
// two at once of the same database, cuts of another tenant's database, resume races).
// Own PgBouncer: were it to die, nothing else is hit.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { test } from 'node:test';
import {
  alive,
  coldCreate,
  connected,
  cutKitPerFile,
  nextData,
  poolerLog,
  raw,
  rnd,
  saslBogusFinal,
  saslInitial,
  sendCancel,
  sleep,
  sslRequest,
  startupPacket,
} from './helpers/pooler-cut-kit.ts';
import { clientFrom, tryLogin } from './pooler-harness.ts';

const rig = cutKitPerFile();

/** A SCRAM exchange stopped after the server-first message, then dropped or finished wrongly. */
async function stallHalfway(l: { database: string; user: string }) {
  const s = raw(rig);
  try {
    if (!(await connected(s))) return;
    s.write(startupPacket(l.user, l.database));
    const r = await nextData(s);
    if (r?.[0] !== 0x52) return;
    s.write(saslInitial());
    const cont = await nextData(s);
    if (!cont) return;
    await sleep(rnd(120));
    if (Math.random() < 0.5) {
      s.write(saslBogusFinal());
      await nextData(s, 500);
    }
  } finally {
    s.destroy();
  }
}

/** A startup packet sent in two pieces, a pause between them. */
async function splitStartup(l: { database: string; user: string }) {
  const s = raw(rig);
  try {
    if (!(await connected(s))) return;
    const pkt = startupPacket(l.user, l.database);
    const cut = 1 + rnd(pkt.length - 1);
    s.write(pkt.subarray(0, cut));
    await sleep(rnd(80));
    s.write(pkt.subarray(cut));
    const r = await nextData(s, 1_000);
    if (r && r[0] === 0x52 && Math.random() < 0.5) {
      s.write(saslInitial());
      await nextData(s, 1_000);
      await sleep(rnd(60));
    }
  } finally {
    s.destroy();
  }
}

/** An SSL request (answered `N`: no TLS here), then a startup packet and a stall. */
async function sslThenStartup(l: { database: string; user: string }) {
  const s = raw(rig);
  try {
    if (!(await connected(s))) return;
    s.write(sslRequest());
    const n = await nextData(s, 1_000);
    if (!n) return;
    await sleep(rnd(40));
    s.write(startupPacket(l.user, l.database));
    const r = await nextData(s, 1_000);
    if (r && r[0] === 0x52) {
      s.write(saslInitial());
      await nextData(s, 1_000);
      await sleep(rnd(80));
    }
  } finally {
    s.destroy();
  }
}

test('zz-attack-cut: every kind of login traffic racing every order of cuts does not crash PgBouncer', async () => {
  const a = await coldCreate(rig, 'zc');
  const b = await coldCreate(rig, 'zc');
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: rig.p.port, ...a })), null);
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: rig.p.port, ...b })), null);
  let stop = false;
  const loop = (fn: () => Promise<unknown>) =>
    (async () => {
      while (!stop) await fn().catch(() => {});
    })();
  const loops = [
    // good logins to both databases
    ...Array.from({ length: 6 }, (_, i) =>
      loop(() => tryLogin(clientFrom('127.0.0.1', { port: rig.p.port, ...(i % 3 === 2 ? b : a) }))),
    ),
    // wrong password
    loop(() => tryLogin(clientFrom('127.0.0.1', { port: rig.p.port, ...a, password: 'wrong' }))),
    // another tenant's user name to this database, this tenant's user to the other, unknown users
    loop(() => stallHalfway({ database: a.database, user: b.user })),
    loop(() => stallHalfway({ database: b.database, user: a.user })),
    loop(() => stallHalfway({ database: a.database, user: 'zz_nobody' })),
    // SCRAM exchanges stopped half-way, startup packets in pieces, SSL requests
    ...Array.from({ length: 3 }, () => loop(() => stallHalfway(a))),
    loop(() => stallHalfway(b)),
    ...Array.from({ length: 2 }, () => loop(() => splitStartup(a))),
    ...Array.from({ length: 2 }, () => loop(() => sslThenStartup(a))),
    // cancel requests with guessed keys (real keys of running queries: zz-attack-cut-cancel)
    loop(() => sendCancel(rig, rnd(2 ** 31), rnd(2 ** 31))),
  ];
  // Until 40 rounds (8 of each kind) or 10 s.
  const deadline = Date.now() + 10_000;
  let cuts = 0;
  let up = true;
  const errors: string[] = [];
  const note = (err: Error) => {
    if (errors.length < 5) errors.push(err.message);
  };
  while (Date.now() < deadline && up && cuts < 40) {
    const k = cuts % 5;
    if (k === 0) await rig.pooler.disconnect(a.database).catch(note);
    else if (k === 1) {
      await rig.pooler.disconnect(a.database, { hold: true }).catch(note);
      await sleep(rnd(30));
      await rig.pooler.resume(a.database).catch(note);
    } else if (k === 2) {
      // two cuts of the same database at once, one held
      await Promise.all([
        rig.pooler.disconnect(a.database).catch(note),
        rig.pooler.disconnect(a.database, { hold: true }).catch(note),
      ]);
      await rig.pooler.resume(a.database).catch(note);
    } else if (k === 3) {
      // cuts of two databases at once; a resume racing a held cut
      await Promise.all([
        rig.pooler.disconnect(a.database, { hold: true }).catch(note),
        rig.pooler.disconnect(b.database).catch(note),
        rig.pooler.resume(a.database).catch(note),
      ]);
      await rig.pooler.resume(a.database).catch(note);
    } else {
      // a spare-style RECONNECT racing a cut
      await Promise.all([
        rig.pooler.disconnect(a.database).catch(note),
        rig.pooler.reconnect(a.database).catch(note),
      ]);
    }
    cuts++;
    await sleep(rnd(25));
    up = await alive(rig);
  }
  stop = true;
  await Promise.all(loops);
  const log = await poolerLog(rig);
  assert.ok(up, `PgBouncer died after ${cuts} cut rounds; its log ends:\n${log}`);
  assert.ok(cuts >= 6, `only ${cuts} cut rounds in 10 s (errors: ${errors.join('; ')})`);
  // Nothing left refused or paused: both databases take logins at once, and no reject line is live.
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: rig.p.port, ...a })), null);
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: rig.p.port, ...b })), null);
  const hba = await fs.readFile(rig.pooler.files.hba, 'utf8');
  assert.doesNotMatch(hba, / reject$/m, 'no reject line left in the hba file');
  const dbs = await rig.pooler.admin('SHOW DATABASES');
  for (const row of dbs.rows.filter((r) => r.name === a.database || r.name === b.database))
    assert.equal(String(row.paused), '0', `${row.name} is not left paused`);
});
