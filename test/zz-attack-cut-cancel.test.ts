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
import { test } from 'node:test';
import {
  alive,
  coldCreate,
  cutKitPerFile,
  poolerLog,
  rnd,
  sendCancel,
  sleep,
  type TenantLogin,
} from './helpers/pooler-cut-kit.ts';
import { clientFrom, tryLogin } from './pooler-harness.ts';

const rig = cutKitPerFile();

/** A session that runs a long query and has it cancelled through PgBouncer (real keys). */
async function cancelLoop(l: TenantLogin) {
  const c = clientFrom('127.0.0.1', { port: rig.p.port, ...l });
  try {
    await c.connect();
    const q = c.query('SELECT pg_sleep(2)').catch(() => {});
    await sleep(rnd(30));
    const keys = c as unknown as { processID: number; secretKey: number };
    await sendCancel(rig, keys.processID, keys.secretKey);
    await Promise.race([q, sleep(2_500)]);
  } catch {
    // cut or cancelled: fine
  } finally {
    await c.end().catch(() => {});
  }
}

test("zz-attack-cut: cancel requests for the tenant's own queries racing cuts of its database do not crash PgBouncer", async () => {
  const a = await coldCreate(rig, 'zc');
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: rig.p.port, ...a })), null);
  let stop = false;
  const loops = Array.from({ length: 4 }, async () => {
    while (!stop) await cancelLoop(a).catch(() => {});
  });
  // Until 30 cuts or 10 s: each cut now ends the database's server sessions and waits for the
  // cancels under way, which a loaded host makes slower.
  const deadline = Date.now() + 10_000;
  let cuts = 0;
  let up = true;
  const failed: string[] = [];
  const started = performance.now();
  while (Date.now() < deadline && up && cuts < 30) {
    await rig.pooler.disconnect(a.database).catch((err: Error) => failed.push(err.message));
    cuts++;
    await sleep(rnd(25));
    up = await alive(rig);
  }
  stop = true;
  await Promise.all(loops);
  const log = await poolerLog(rig, 900);
  assert.ok(up, `PgBouncer died after ${cuts} cuts; its log ends:\n${log}`);
  assert.ok(cuts >= 6, `only ${cuts} cuts in 10 s`);
  // And the cancels do not keep the cuts from happening (a tenant with a stolen password must not
  // be able to stay connected through a rotation or an allowlist cut by cancelling).
  console.log(
    `cancel race: ${cuts} cuts in ${Math.round(performance.now() - started)} ms, ${failed.length} failed`,
  );
  assert.equal(failed.length, 0, `cuts failed: ${failed.slice(0, 3).join('; ')}`);
});
