/**
 * Governed execution, approval → executed → result visible, on loopback (issue 14: goal median
 * < 50 ms, no poll interval anywhere on the path), against the plain statement's own time in the
 * same run.
 *
 *   plain     the same UPDATE on a persistent connection through PgBouncer as the tenant owner
 *   http      an authenticated API call that reads one control-DB row (GET one database): the
 *             floor of one HTTP round trip to this server
 *   governed  POST …/approve (a member's session) → POST …/execute (the requester's API key: the
 *             server signs a token, the agent's channel carries it, the agent verifies it, runs the
 *             UPDATE as the migrator in a transaction, checks the approved row count, commits, the
 *             result is sealed) → GET …/result: three HTTP calls, timed together; under `execute`,
 *             the agent's own time (its outcome's duration_ms: verify, login, transaction) and the
 *             delivery as the server recorded it (execution row written → outcome settled)
 *
 * Each governed sample's request is created (with its dry run) before the clock starts. A real
 * `bulwark up` stack: its server, agent (explorer channel on), PostgreSQL and PgBouncer.
 *
 *   node bench/request-execution.bench.ts [runs=60]
 */
import { randomBytes } from 'node:crypto';
import { accountApi, operatorKey, startUpStack } from '../test/helpers/up-stack.ts';
import { summarize } from './stats.ts';

const RUNS = Number(process.argv[2] ?? 60);
const WARMUP = 5;
const SQL = 'UPDATE items SET qty = qty + 1 WHERE id = 1';

const stack = await startUpStack();
const base = `http://127.0.0.1:${stack.ports.server}`;
try {
  const key = await operatorKey(stack, 'acme'); // the account stack.createDatabase uses
  const asKey = accountApi(stack, key, { json: 'strict' });
  const db = await stack.createDatabase('benchgov');
  const owner = await stack.connectTenant(db);
  await owner.query('CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL)');
  await owner.query('INSERT INTO items SELECT g, 0 FROM generate_series(1, 1000) g');

  // The approver: a member who signed up through an invite (approvals are people, never keys).
  const made = await asKey('POST', '/v1/invites', { count: 1, role: 'member' });
  if (made.status !== 201) throw new Error(`invite: ${made.status} ${JSON.stringify(made.json)}`);
  const code = made.json.invites[0].code as string;
  const password = randomBytes(18).toString('base64url');
  const redeemed = await fetch(`${base}/v1/auth/invites/redeem`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ code, username: 'bench-approver', password }),
  });
  if (redeemed.status !== 201) throw new Error(`redeem: ${redeemed.status} ${await redeemed.text()}`);
  const login = await fetch(`${base}/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'bench-approver', password }),
  });
  if (login.status !== 200) throw new Error(`login: ${login.status} ${await login.text()}`);
  const session = (await login.json()) as { access_token: string };
  const asApprover = async (method: string, url: string, body?: unknown) => {
    const res = await fetch(`${base}${url}`, {
      method,
      headers: {
        authorization: `Bearer ${session.access_token}`,
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    // biome-ignore lint/suspicious/noExplicitAny: API answers are read loosely here, as in the tests
    return { status: res.status, json: (await res.json()) as any };
  };

  const plain: number[] = [];
  const http: number[] = [];
  const governed: number[] = [];
  const steps = { approve: [] as number[], execute: [] as number[], result: [] as number[] };
  const reqs = `/v1/databases/${db.name}/requests`;
  for (let i = 0; i < WARMUP + RUNS; i++) {
    let t = performance.now();
    await owner.query(SQL);
    const p = performance.now() - t;

    t = performance.now();
    const one = await asKey('GET', `/v1/databases/${db.name}`);
    const h = performance.now() - t;
    if (one.status !== 200) throw new Error(`GET database: ${one.status}`);

    const created = await asKey('POST', reqs, { sql: SQL, reason: 'benchmark' });
    if (created.status !== 201 || created.json.approved_rows !== 1)
      throw new Error(`create: ${created.status} ${JSON.stringify(created.json).slice(0, 500)}`);
    const id = created.json.id as string;

    t = performance.now();
    const approved = await asApprover('POST', `${reqs}/${id}/approve`, { comment: 'ok' });
    const t1 = performance.now();
    const executed = await asKey('POST', `${reqs}/${id}/execute`, {});
    const t2 = performance.now();
    const result = await asKey('GET', `${reqs}/${id}/result`);
    const t3 = performance.now();
    const g = t3 - t;
    if (approved.json.status !== 'approved') throw new Error(`approve: ${JSON.stringify(approved.json)}`);
    if (executed.json.status !== 'executed')
      throw new Error(`execute: ${executed.status} ${JSON.stringify(executed.json).slice(0, 500)}`);
    if (result.status !== 200 || result.json.affected_rows !== 1) throw new Error(`result: ${result.status}`);
    if (i >= WARMUP) {
      plain.push(p);
      http.push(h);
      governed.push(g);
      steps.approve.push(t1 - t);
      steps.execute.push(t2 - t1);
      steps.result.push(t3 - t2);
    }
  }
  await owner.end();
  // Where the execute call's time goes: the agent's own time (verify, login, the transaction) as it
  // reported it, and the delivery as the server recorded it (row written → outcome settled).
  const control = await stack.control();
  const times = await control.query<{ agent: number; delivery: number }>(
    `SELECT (outcome->>'duration_ms')::float8 AS agent,
            extract(epoch FROM finished_at - started_at) * 1000 AS delivery
       FROM request_executions WHERE mode = 'execute' AND status = 'executed' ORDER BY started_at DESC LIMIT $1`,
    [RUNS],
  );
  await control.end();
  const agentMs = summarize(times.rows.map((r) => Number(r.agent)));
  const deliveryMs = summarize(times.rows.map((r) => Number(r.delivery)));

  const rows = {
    plain: summarize(plain),
    http: summarize(http),
    governed: summarize(governed),
    ' approve': summarize(steps.approve),
    ' execute': summarize(steps.execute),
    ' result': summarize(steps.result),
    '  agent': agentMs,
    '  deliv.': deliveryMs,
  };
  const fmt = (n: number) => n.toFixed(2);
  process.stdout.write(`approval → executed → result visible, ${RUNS} runs (ms)\n`);
  process.stdout.write('variant    median    p95     min     max\n');
  for (const [name, s] of Object.entries(rows))
    process.stdout.write(
      `${name.padEnd(9)} ${fmt(s.median).padStart(7)} ${fmt(s.p95).padStart(7)} ${fmt(s.min).padStart(7)} ${fmt(s.max).padStart(7)}\n`,
    );
  process.stdout.write(
    `governed / plain statement: ${(rows.governed.median / rows.plain.median).toFixed(1)}×; ` +
      `governed / three HTTP floors: ${(rows.governed.median / (3 * rows.http.median)).toFixed(2)}×; ` +
      `goal: governed median < 50 ms → ${rows.governed.median < 50 ? 'met' : 'NOT met'}\n`,
  );
} finally {
  await stack.stop();
  await stack.destroy();
}
