// The agent's own word over governed SQL, end to end (issue 14): a real server and a real agent whose
// operator allowed only `reader` on this node (BULWARK_AGENT_EXECUTION_CAPABILITIES). The server
// signs a migrator token for a write; the agent refuses it — dry run and execution — nothing runs,
// and the server records and audits the refusal. Reads still run.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { agentConfigSchema } from '../src/agent/config.ts';
import { startAgent } from '../src/agent/main.ts';
import { createLogger } from '../src/shared/logger.ts';
import { testEnv } from './helpers/env.ts';
import { type ExplorerStack, startExplorerStack, until } from './helpers/explorer-stack.ts';
import { api, auditOf, expectStatus, type Person, person } from './requests-helpers.ts';

let stack: ExplorerStack;
let http: ReturnType<typeof api>;
let requester: Person;
let approver: Person;
let admin: Person;

const items = async () =>
  JSON.stringify((await stack.t.asAdmin('SELECT id, qty FROM items ORDER BY id')).rows);

before(async () => {
  stack = await startExplorerStack({
    node: 'xe-node',
    account: 'xeacct',
    explorerChannel: true,
    tenantPrefix: 'xe',
  });
  await stack.t.asOwner(
    'CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL); INSERT INTO items VALUES (1, 0), (2, 0)',
  );
  // The same node (state dir, token, pinned keys), restarted by an operator who allows reads only.
  await stack.agent.stop();
  const { token } = await stack.s.nodes.createEnrollment('xe-node-unused', 10);
  stack.agent = await startAgent(
    agentConfigSchema.parse({
      serverUrl: stack.url,
      stateDir: stack.stateDir,
      enrollmentToken: token,
      adminDatabaseUrl: testEnv().adminUrl,
      logLevel: 'silent',
      executionCapabilities: 'reader',
    }),
    { log: createLogger('agent', 'silent') },
  );
  await stack.agent.explorerChannelOpen();
  assert.equal(stack.agent.nodeId, stack.nodeId, 'the restarted agent knows its node id');
  await until('the channel on the server', () => stack.s.explorerChannels.pick(stack.nodeId) !== null);
  http = api(stack.s);
  requester = await person(stack.s, stack.key.accountId, 'member', 'xe-req');
  approver = await person(stack.s, stack.key.accountId, 'member', 'xe-appr');
  admin = await person(stack.s, stack.key.accountId, 'admin', 'xe-admin');
});
after(() => stack?.stop());

test("a capability the node's config forbids is refused by the agent, audited, and nothing runs", async () => {
  const before = await items();
  const created = expectStatus(
    await http.create(stack.t.name, requester.headers, {
      sql: 'UPDATE items SET qty = 5 WHERE id = 1',
      reason: 'fix',
    }),
    201,
  );
  const id = created.id as string;
  // The dry run was refused by the node: no count to bind, and the refusal is on record.
  assert.match(JSON.stringify(created.dry_run_error), /capability_forbidden/);
  const dry = await auditOf(stack.s, 'request.dry_run', id);
  assert.ok(
    dry.some((e) => e.details.reason === 'capability_forbidden'),
    JSON.stringify(dry),
  );
  // A write is not approved without its count…
  expectStatus(
    await http.act(stack.t.name, id, 'approve', approver.headers, { comment: 'ok' }),
    409,
    'invalid_state',
  );
  // …but an admin's break-glass asks the node to run it: the node refuses the migrator token.
  const ran = await http.act(stack.t.name, id, 'execute', admin.headers, {
    break_glass: { reason: 'outage on the shop database' },
  });
  assert.equal(ran.statusCode, 502, ran.body);
  assert.equal((ran.json() as { error: { code: string } }).error.code, 'execution_refused');
  const refused = await auditOf(stack.s, 'request.refused', id);
  assert.equal(refused.length, 1, JSON.stringify(refused));
  assert.match(JSON.stringify(refused[0]?.details), /capability_forbidden/);
  const after = expectStatus(await http.get(stack.t.name, id, requester.headers), 200);
  assert.equal((after.last_execution as { status: string } | null)?.status, 'refused');
  assert.equal(await items(), before);
});

test('reads still run on a reader-only node', async () => {
  const created = expectStatus(
    await http.create(stack.t.name, requester.headers, {
      sql: 'SELECT id, qty FROM items ORDER BY id',
      reason: 'look',
    }),
    201,
  );
  const id = created.id as string;
  const ran =
    created.status === 'executed'
      ? created
      : expectStatus(await http.act(stack.t.name, id, 'execute', requester.headers), 200);
  assert.equal(ran.status, 'executed', JSON.stringify(ran));
  const result = expectStatus(await http.result(stack.t.name, id, requester.headers), 200);
  assert.equal((result.rows as unknown[]).length, 2);
});
