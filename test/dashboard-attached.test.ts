/**
 * Attached databases in the dashboard (issue 17), in Debian's headless Chromium against a real
 * `bulwark up`: one hosted database made through the API, and three attached ones reported by a
 * second node's agent (enrolled with `bulwark admin enroll-node`, reporting over the real agent
 * API): `billing`, whose checks passed with a warning, `archive`, refused by its checks, and
 * `stale`. A node offers, the account decides: each waits ("Offered by node legacy: waiting for your
 * acceptance", only its check, no explorer; a member sees it without the buttons) until the admin
 * accepts it in the page (billing: ready, the Explorer appears) or rejects it (stale: the name
 * typed to confirm; gone, and the node may not offer it again); an accepted one is dropped the same
 * way (archive, at the end). The list marks the attached ones; an attached database's page says what Bulwark does with it, shows
 * the agent's last check (findings by severity, the refusal's reason) and only the sections that
 * work on it (the agent check, the explorer while it is ready, governed requests without
 * "Request access"); a hosted-only section's path says so. Every request the page makes is
 * recorded: none goes to a route that answers 409 for an attached database. A third attached
 * database is served by a real agent (its own node, an attached-databases file naming a database on
 * the tests' cluster): the explorer queries it in the browser. The hosted one keeps
 * all its sections. Each page fails the test on a console error, a failed or undeclared ≥ 400
 * response or a CSP violation, and on serious axe findings (test/helpers/browser.ts).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import type { Browser } from 'playwright-core';
import { agentConfigSchema } from '../src/agent/config.ts';
import { type RunningAgent, startAgent } from '../src/agent/main.ts';
import { createLogger } from '../src/shared/logger.ts';
import { type GuardedPage, guardedPage, launchChromium } from './helpers/browser.ts';
import { type DashboardStack, startDashboardStack } from './helpers/dashboard-stack.ts';
import { checkPage, redeem, walkthrough } from './helpers/dashboard-steps.ts';
import { testEnv } from './helpers/env.ts';
import { accountApi, operatorKey, sleep } from './helpers/up-stack.ts';

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');
const ADMIN = { username: 'ada_admin', password: 'lantern-quartz-willow-27' };
const MEMBER = { username: 'max_member', password: 'harbor-pebble-violet-41' };
const HOSTED = 'shop';
const ATTACHED = 'billing';
const REFUSED = 'archive';
/** An offer the admin rejects. */
const SPARE = 'stale';
const NODE = 'legacy';
/** An attached database served by a real agent (its own node) on the tests' PostgreSQL cluster. */
const SERVED = 'ledger_app';
const SERVED_NODE = 'pgbox';
const tag = `da_${randomBytes(4).toString('hex')}`;
const R = { owner: `${tag}_owner`, reader: `${tag}_reader`, migrator: `${tag}_migrator` };
const PGDB = `${tag}_pgdb`;
const pw = { reader: randomBytes(18).toString('base64url'), migrator: randomBytes(18).toString('base64url') };
const STEP_MS = 120_000;

/** Paths under /v1/databases/<attached> that answer 409 for an attached database (and samples: hosted only). */
const MANAGING =
  /\/v1\/databases\/(billing|archive)\/(connection|credentials|allowlist|limits|backups|restore|restores|move|samples|access)(\/|\?|$)/;

let stack: DashboardStack;
let browser: Browser;
let admin: GuardedPage;
/** A member sees an offer but may not decide on it (databases.attach: owners and admins). */
let member: GuardedPage | undefined;
let api: ReturnType<typeof accountApi>;
let accountId = '';
/** The second node's agent token (it reports over the real agent API). */
let agentToken = '';
let agent: RunningAgent | undefined;
let root = '';
/** Every request the admin's page made: method and URL. */
const seen: { method: string; url: string }[] = [];

before(async () => {
  stack = await startDashboardStack();
  browser = await launchChromium();
  api = accountApi(stack, await operatorKey(stack, 'default'));
});

after(async () => {
  await admin?.close();
  await member?.close();
  await browser?.close().catch(() => {});
  await agent?.stop().catch(() => {});
  await stack?.destroy();
  await asAdmin('postgres', `DROP DATABASE IF EXISTS "${PGDB}" WITH (FORCE)`).catch(() => {});
  for (const r of Object.values(R)) await asAdmin('postgres', `DROP ROLE IF EXISTS "${r}"`).catch(() => {});
  if (root) await fs.rm(root, { recursive: true, force: true });
});

async function asAdmin(database: string, sql: string): Promise<pg.QueryResult> {
  const u = new URL(testEnv().adminUrl);
  u.pathname = `/${database}`;
  const c = new pg.Client({ connectionString: u.toString() });
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

/**
 * A database Bulwark did not make (its owner, a read-only and a migration role, a table), and a
 * real agent enrolled as node SERVED_NODE whose attached-databases file lists it.
 */
async function startServingAgent(): Promise<RunningAgent> {
  await asAdmin(
    'postgres',
    `CREATE ROLE "${R.owner}" NOLOGIN;
     CREATE ROLE "${R.reader}" LOGIN PASSWORD '${pw.reader}';
     CREATE ROLE "${R.migrator}" LOGIN PASSWORD '${pw.migrator}';`,
  );
  await asAdmin('postgres', `CREATE DATABASE "${PGDB}" OWNER "${R.owner}"`);
  await asAdmin(
    PGDB,
    `REVOKE CREATE ON SCHEMA public FROM PUBLIC;
     CREATE TABLE invoices (id int PRIMARY KEY, amount numeric(10, 2) NOT NULL);
     INSERT INTO invoices VALUES (1, 10.50), (2, 20.00), (3, 7.25);
     ALTER TABLE invoices OWNER TO "${R.owner}";
     GRANT USAGE ON SCHEMA public TO "${R.reader}", "${R.migrator}";
     GRANT SELECT ON invoices TO "${R.reader}";
     GRANT SELECT, INSERT, UPDATE ON invoices TO "${R.migrator}";`,
  );
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-dashboard-attached-'));
  const pwFile = async (role: 'reader' | 'migrator') => {
    const file = path.join(root, `${role}.pw`);
    await fs.writeFile(file, `${pw[role]}\n`, { mode: 0o600 });
    return file;
  };
  const config = path.join(root, 'attached.json');
  const entry = {
    name: SERVED,
    account_id: accountId,
    host: '127.0.0.1',
    port: testEnv().pgPort,
    database: PGDB,
    reader: { user: R.reader, password_file: await pwFile('reader') },
    migrator: { user: R.migrator, password_file: await pwFile('migrator') },
  };
  await fs.writeFile(config, JSON.stringify({ databases: [entry] }), { mode: 0o600 });
  const started = await startAgent(
    agentConfigSchema.parse({
      serverUrl: stack.url,
      stateDir: await fs.mkdtemp(path.join(root, 'agent-')),
      enrollmentToken: await enrollmentToken(SERVED_NODE),
      adminDatabaseUrl: testEnv().adminUrl,
      logLevel: 'silent',
      pollWaitMs: 20_000,
      explorerChannel: true,
      warmPoolSize: 0,
      attachedConfig: config,
    }),
    { log: createLogger('agent', 'silent') },
  );
  await started.explorerChannelOpen();
  return started;
}

function enrollmentToken(node = NODE): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(
      process.execPath,
      [CLI, 'admin', 'enroll-node', '--name', node, '--data-dir', stack.dir, '--json'],
      { timeout: 30_000 },
      (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout).token as string),
    ),
  );
}

// biome-ignore lint/suspicious/noExplicitAny: API answers are read as loosely as inject().json()
async function post(url: string, body: unknown, token?: string): Promise<{ status: number; json: any }> {
  const res = await fetch(`${stack.url}${url}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  return { status: res.status, json: await res.json() };
}

const WARN = {
  role: 'reader',
  severity: 'warn',
  kind: 'security_definer',
  object: 'public.refresh_totals()',
  detail: 'the reader may call a SECURITY DEFINER function',
};
const REFUSE = {
  role: 'reader',
  severity: 'refuse',
  kind: 'table_write',
  object: 'public.invoices',
  detail: 'the reader may INSERT into public.invoices',
};

/** The labels of the database page's section links. */
async function sections(g: GuardedPage): Promise<string[]> {
  const nav = g.page.getByRole('navigation', { name: 'Database sections' });
  await nav.waitFor();
  return nav.getByRole('link').allInnerTexts();
}

const step = walkthrough('attached', STEP_MS, () => [
  ['admin', admin],
  ['member', member],
]);

test('attached databases in the dashboard', { timeout: 600_000 }, async (t) => {
  await step(t, 'a hosted database, and three attached ones offered by a second node', async () => {
    admin = await guardedPage(browser, { name: 'admin' });
    admin.page.on('request', (r) => seen.push({ method: r.method(), url: r.url() }));
    await redeem(admin, stack.firstAdminLink, ADMIN);
    const invited = await api('POST', '/v1/invites', { count: 1, role: 'member' });
    assert.equal(invited.status, 201, JSON.stringify(invited.json));
    member = await guardedPage(browser, { name: 'member' });
    await redeem(member, `${stack.url}/#invite=${invited.json.invites[0].code}`, MEMBER);
    // Hosted first, so it is placed on the stack's own node (the second one never runs jobs).
    const made = await api('POST', '/v1/databases', { name: HOSTED });
    assert.equal(made.status, 202, JSON.stringify(made.json));
    const deadline = Date.now() + 60_000;
    while ((await api('GET', `/v1/databases/${HOSTED}`)).json.status !== 'ready') {
      assert.ok(Date.now() < deadline, `${HOSTED} not ready in 60 s`);
      await sleep(100);
    }
    const enrolled = await post('/v1/agent/enroll', {
      enrollment_token: await enrollmentToken(),
      agent_version: 'test',
    });
    assert.equal(enrolled.status, 200, JSON.stringify(enrolled.json));
    const control = await stack.control();
    const account = await control.query("SELECT id FROM accounts WHERE name = 'default'");
    await control.end();
    accountId = account.rows[0].id as string;
    const reported = await post(
      '/v1/agent/attached',
      {
        databases: [
          { name: ATTACHED, account_id: accountId, ok: true, server_version: '16.4', findings: [WARN] },
          { name: REFUSED, account_id: accountId, ok: false, server_version: '15.7', findings: [REFUSE] },
          { name: SPARE, account_id: accountId, ok: true, server_version: '16.4', findings: [] },
        ],
      },
      enrolled.json.agent_token,
    );
    assert.equal(reported.status, 200, JSON.stringify(reported.json));
    assert.deepEqual(
      reported.json.databases.map((d: { status: string }) => d.status),
      ['attached', 'attached', 'attached'],
    );
    agentToken = enrolled.json.agent_token;
    // Offered, not accepted: each waits, whatever its checks said.
    for (const name of [ATTACHED, REFUSED, SPARE]) {
      const d = (await api('GET', `/v1/databases/${name}`)).json;
      assert.equal(d.status, 'provisioning', name);
      assert.equal(d.attached.accepted_at, null, name);
    }
  });

  await step(t, 'the list marks the attached databases', async () => {
    const p = admin.page;
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Databases' }).click();
    const table = p.getByRole('table', { name: 'Databases' });
    await table.getByRole('link', { name: ATTACHED }).waitFor();
    const rowOf = (name: string) =>
      table.getByRole('row').filter({ has: p.getByRole('link', { name, exact: true }) });
    for (const name of [ATTACHED, REFUSED, SPARE]) {
      const row = rowOf(name);
      assert.equal(await row.locator('.badge-attached').innerText(), 'Attached · awaiting acceptance');
      assert.match(await row.innerText(), /Not managed/);
    }
    const hosted = rowOf(HOSTED);
    assert.equal(await hosted.locator('.badge-attached').count(), 0);
    assert.doesNotMatch(await hosted.innerText(), /Attached|Not managed/);
    // The link's name is the database's name alone (the badge sits beside it).
    assert.equal(await table.getByRole('link', { name: ATTACHED, exact: true }).count(), 1);
    await checkPage(admin, 'Databases', 'attached-databases-list');
  });

  await step(t, 'an offer waits for acceptance; Accept makes it ready and the Explorer appears', async () => {
    const p = admin.page;
    const from = seen.length;
    await p
      .getByRole('table', { name: 'Databases' })
      .getByRole('link', { name: ATTACHED, exact: true })
      .click();
    const offer = p.getByRole('region', { name: `Offered by node ${NODE}: waiting for your acceptance` });
    await offer.waitFor();
    assert.match(await offer.innerText(), /nothing runs on it: no explorer query, no governed SQL/);
    assert.match(await p.locator('.facts').first().innerText(), /Kind:\s*Attached · awaiting acceptance/);
    assert.match(await p.locator('.facts').first().innerText(), /Status:\s*Provisioning/i);
    // Nothing runs on it yet: its check only, and the explorer's path says why.
    assert.deepEqual(await sections(admin), ['Agent check']);
    await p.getByRole('table', { name: 'Findings' }).waitFor();
    await checkPage(admin, ATTACHED, 'attached-database-offer');
    // A member sees the offer, without the buttons.
    const m = member!.page;
    await m.goto(`${stack.url}/databases/${ATTACHED}`);
    const seenByMember = m.getByRole('region', {
      name: `Offered by node ${NODE}: waiting for your acceptance`,
    });
    await seenByMember.getByText('Only an owner or admin of the account can accept or reject it.').waitFor();
    assert.equal(await seenByMember.getByRole('button').count(), 0);
    await checkPage(member!, ATTACHED, 'attached-database-offer-member');
    await p.goto(`${stack.url}/databases/${ATTACHED}/explorer`);
    await p
      .getByText(/^Not available yet: nothing runs on this database until the account accepts it/)
      .waitFor();
    assert.equal(await p.getByRole('textbox', { name: 'SQL query' }).count(), 0);
    // Accepted from its check (node legacy runs no agent here: its explorer is not opened).
    await p.goto(`${stack.url}/databases/${ATTACHED}`);
    await offer.getByRole('button', { name: 'Accept' }).click();
    await p.locator('.facts').first().getByText('Ready', { exact: true }).waitFor();
    assert.equal(await offer.count(), 0, 'the offer is gone once accepted');
    assert.deepEqual(await sections(admin), ['Agent check', 'Explorer', 'Requests']);
    assert.match(await p.locator('.facts').first().innerText(), /Kind:\s*Attached(?! ·)/);
    const d = (await api('GET', `/v1/databases/${ATTACHED}`)).json;
    assert.equal(d.status, 'ready');
    assert.ok(d.attached.accepted_at, 'accepted, with its time');
    await admin.assertClean('accepted');
    const asked = seen.slice(from);
    assert.equal(
      asked.filter(
        (r) => r.method === 'POST' && r.url.endsWith(`/v1/databases/${ATTACHED}/attachment/accept`),
      ).length,
      1,
    );
    assert.deepEqual(
      asked.filter((r) => /\/explorer\//.test(r.url) || MANAGING.test(r.url)),
      [],
    );
    // The refused one, accepted through the API: failed by its checks (the next steps show it).
    const refused = await api('POST', `/v1/databases/${REFUSED}/attachment/accept`);
    assert.equal(refused.status, 200, JSON.stringify(refused.json));
    assert.equal(refused.json.status, 'failed');
  });

  await step(
    t,
    'Reject (the name typed to confirm) removes an offer; its node may not offer it again',
    async () => {
      const p = admin.page;
      await p.goto(`${stack.url}/databases/${SPARE}`);
      const offer = p.getByRole('region', { name: `Offered by node ${NODE}: waiting for your acceptance` });
      await offer.getByRole('button', { name: 'Reject' }).click();
      const dialog = p.getByRole('dialog', { name: `Reject ${SPARE}?` });
      await dialog.waitFor();
      const confirm = dialog.getByRole('button', { name: 'Reject database' });
      assert.equal(await confirm.isDisabled(), true, 'disabled until the name is typed');
      await dialog.getByLabel('Type the database name to confirm').fill('stal');
      assert.equal(await confirm.isDisabled(), true);
      await checkPage(admin, `Reject ${SPARE}?`, 'attached-database-reject', 2);
      await dialog.getByLabel('Type the database name to confirm').fill(SPARE);
      await confirm.click();
      await p.getByRole('heading', { name: 'Databases', level: 1 }).waitFor();
      const table = p.getByRole('table', { name: 'Databases' });
      await table.getByRole('link', { name: ATTACHED, exact: true }).waitFor();
      assert.equal(await table.getByRole('link', { name: SPARE, exact: true }).count(), 0);
      assert.equal(
        await table
          .getByRole('row')
          .filter({ has: p.getByRole('link', { name: ATTACHED, exact: true }) })
          .locator('.badge-attached')
          .innerText(),
        'Attached',
      );
      assert.equal((await api('GET', `/v1/databases/${SPARE}`)).status, 404);
      await admin.assertClean('rejected');
      const again = await post(
        '/v1/agent/attached',
        {
          databases: [
            { name: ATTACHED, account_id: accountId, ok: true, server_version: '16.4', findings: [WARN] },
            { name: REFUSED, account_id: accountId, ok: false, server_version: '15.7', findings: [REFUSE] },
            { name: SPARE, account_id: accountId, ok: true, server_version: '16.4', findings: [] },
          ],
        },
        agentToken,
      );
      assert.equal(again.status, 200, JSON.stringify(again.json));
      assert.deepEqual(
        again.json.databases.map((d: { status: string }) => d.status),
        ['attached', 'attached', 'refused'],
      );
      assert.equal((await api('GET', `/v1/databases/${SPARE}`)).status, 404);
    },
  );

  await step(
    t,
    "an attached database's page: the note, the agent's check, the sections that work",
    async () => {
      const p = admin.page;
      const from = seen.length;
      await p
        .getByRole('table', { name: 'Databases' })
        .getByRole('link', { name: ATTACHED, exact: true })
        .click();
      await p.getByRole('heading', { name: ATTACHED, level: 1 }).waitFor();
      assert.equal(await p.locator('.attachment-offer').count(), 0, 'accepted: no offer');
      await p.getByRole('region', { name: 'Drop from this account' }).waitFor();
      const note = await p.locator('.attached-note').innerText();
      assert.equal(
        note.replace(/\s+/g, ' ').trim(),
        `Attached: an existing database listed by node ${NODE}'s agent. Bulwark explores it and governs ` +
          'SQL on it; it does not manage, back up or move it.',
      );
      assert.match(await p.locator('.facts').first().innerText(), /Kind:\s*Attached/);
      assert.deepEqual(await sections(admin), ['Agent check', 'Explorer', 'Requests']);
      await p.getByRole('heading', { name: 'Agent check', level: 2 }).waitFor();
      const check = await p.locator('section[aria-labelledby="tab-h"] .facts').innerText();
      assert.match(check, /Checked: \S+/);
      assert.match(check, /PostgreSQL: 16\.4/);
      const findings = p.getByRole('table', { name: 'Findings' });
      assert.deepEqual(await findings.getByRole('row').nth(1).getByRole('cell').allInnerTexts(), [
        'Warning',
        WARN.role,
        WARN.kind,
        WARN.object,
        WARN.detail,
      ]);
      assert.equal(await findings.getByRole('row').count(), 2);
      await checkPage(admin, ATTACHED, 'attached-database-check');

      // Governed requests work; temporary access is not offered (it would be 409).
      await p
        .getByRole('navigation', { name: 'Database sections' })
        .getByRole('link', { name: 'Requests' })
        .click();
      await p.getByRole('heading', { name: 'Requests', level: 2 }).waitFor();
      await p.getByText('No requests on this database.').waitFor();
      await p.getByRole('button', { name: 'New request' }).waitFor();
      assert.equal(await p.getByRole('button', { name: 'Request access' }).count(), 0);
      await p.getByText(/Temporary access is not granted on an attached database/).waitFor();
      await checkPage(admin, 'Requests', 'attached-database-requests', 2);

      // A hosted-only section's path says so, and asks nothing.
      for (const tab of ['connect', 'network', 'backups', 'charts', 'settings']) {
        await p.goto(`${stack.url}/databases/${ATTACHED}/${tab}`);
        await p.getByText(/^Not available here: Bulwark does not manage an attached database/).waitFor();
        assert.deepEqual(await sections(admin), ['Agent check', 'Explorer', 'Requests']);
      }
      await admin.assertClean('hosted-only paths');

      const asked = seen.slice(from);
      assert.ok(
        asked.some((r) => r.method === 'GET' && new RegExp(`/v1/databases/${ATTACHED}$`).test(r.url)),
        `the page read the database: ${asked.map((r) => r.url).join('\n')}`,
      );
      assert.ok(asked.some((r) => new RegExp(`/v1/databases/${ATTACHED}/requests\\?`).test(r.url)));
      const managing = asked.filter(
        (r) => MANAGING.test(r.url) || (r.method === 'DELETE' && /\/v1\/databases\//.test(r.url)),
      );
      assert.deepEqual(managing, [], 'no request to a route that answers 409 for an attached database');
    },
  );

  await step(t, 'a refused attached database: the reason, its findings, no explorer', async () => {
    const p = admin.page;
    const from = seen.length;
    await p.goto(`${stack.url}/databases/${REFUSED}`);
    await p.getByRole('heading', { name: REFUSED, level: 1 }).waitFor();
    await p.locator('.facts').first().getByText('Failed', { exact: true }).waitFor();
    const reason = await p.locator('.notice-error').innerText();
    assert.match(reason, /^Failed: refused by the agent's role checks: .*table_write/);
    assert.deepEqual(await sections(admin), ['Agent check', 'Requests']);
    const findings = p.getByRole('table', { name: 'Findings' });
    const cells = await findings.getByRole('row').nth(1).getByRole('cell').allInnerTexts();
    assert.deepEqual(cells, ['Refuse', REFUSE.role, REFUSE.kind, REFUSE.object, REFUSE.detail]);
    assert.match(await p.locator('section[aria-labelledby="tab-h"] .facts').innerText(), /PostgreSQL: 15\.7/);
    await checkPage(admin, REFUSED, 'attached-database-refused');
    await p.goto(`${stack.url}/databases/${REFUSED}/explorer`);
    await p.getByText(/^Not available: the agent's checks refused this database/).waitFor();
    await admin.assertClean('refused explorer path');
    const managing = seen.slice(from).filter((r) => MANAGING.test(r.url) || /\/explorer\//.test(r.url));
    assert.deepEqual(managing, []);
  });

  await step(t, "an attached database's page fits a 375 px window", async () => {
    const p = admin.page;
    await p.setViewportSize({ width: 375, height: 800 });
    try {
      await p.goto(`${stack.url}/databases/${ATTACHED}`);
      await p.getByRole('table', { name: 'Findings' }).waitFor();
      const over = await p.evaluate('document.documentElement.scrollWidth - window.innerWidth');
      assert.ok(Number(over) <= 0, `the page is ${over} px wider than the window`);
      await checkPage(admin, 'Agent check', 'narrow-attached-database', 2);
    } finally {
      await p.setViewportSize({ width: 1280, height: 720 });
    }
  });

  await step(t, "a real agent's attached database: the explorer queries it in the browser", async () => {
    agent = await startServingAgent();
    const deadline = Date.now() + 60_000;
    for (;;) {
      const r = await api('GET', `/v1/databases/${SERVED}`);
      if (r.status === 200) {
        // Offered by the agent's report: it waits for the account.
        assert.equal(r.json.kind, 'attached');
        assert.equal(r.json.node, SERVED_NODE);
        assert.equal(r.json.status, 'provisioning');
        assert.equal(r.json.attached.accepted_at, null);
        break;
      }
      assert.ok(Date.now() < deadline, `${SERVED} not offered in 60 s: ${JSON.stringify(r.json)}`);
      await sleep(200);
    }
    const p = admin.page;
    const from = seen.length;
    await p.goto(`${stack.url}/databases/${SERVED}`);
    await p.getByRole('heading', { name: 'Agent check', level: 2 }).waitFor();
    const offer = p.getByRole('region', {
      name: `Offered by node ${SERVED_NODE}: waiting for your acceptance`,
    });
    await offer.getByRole('button', { name: 'Accept' }).click();
    await p.locator('.facts').first().getByText('Ready', { exact: true }).waitFor();
    await p.getByText('No findings: the configured roles passed every check.').waitFor();
    await p
      .getByRole('navigation', { name: 'Database sections' })
      .getByRole('link', { name: 'Explorer' })
      .click();
    const editor = p.getByRole('textbox', { name: 'SQL query' });
    await editor.click();
    await p.keyboard.press('ControlOrMeta+a');
    await editor.fill('SELECT id, amount FROM invoices ORDER BY id');
    await p.getByRole('button', { name: 'Run query' }).click();
    const results = p.getByRole('table', { name: 'Query results' });
    await results.getByRole('row').nth(3).waitFor();
    assert.equal(await results.getByRole('row').count(), 4, 'a header row and three rows');
    assert.deepEqual(await results.getByRole('row').nth(3).getByRole('cell').allInnerTexts(), ['3', '7.25']);
    await checkPage(admin, 'Explorer', 'attached-database-explorer', 2);
    const asked = seen.slice(from);
    assert.ok(
      asked.some((r) => r.method === 'POST' && r.url.endsWith(`/v1/databases/${SERVED}/explorer/query`)),
    );
    const managing = asked.filter(
      (r) =>
        new RegExp(
          `/v1/databases/${SERVED}/(connection|credentials|allowlist|limits|backups|restore|move|samples)`,
        ).test(r.url) || r.method === 'DELETE',
    );
    assert.deepEqual(managing, []);
  });

  await step(t, 'the hosted database keeps every section and its connection', async () => {
    const p = admin.page;
    const from = seen.length;
    await p.goto(`${stack.url}/databases/${HOSTED}`);
    await p.getByRole('heading', { name: HOSTED, level: 1 }).waitFor();
    assert.deepEqual(await sections(admin), [
      'Connect',
      'Network',
      'Explorer',
      'Requests',
      'Backups',
      'Charts',
      'Settings',
    ]);
    assert.equal(await p.locator('.attached-note').count(), 0);
    await p.getByRole('heading', { name: 'Connect', level: 2 }).waitFor();
    // The recording sees managing requests when they are made: the hosted page asks its connection.
    const deadline = Date.now() + 15_000;
    while (!seen.slice(from).some((r) => new RegExp(`/v1/databases/${HOSTED}/connection$`).test(r.url))) {
      assert.ok(Date.now() < deadline, 'the hosted Connect tab did not ask its connection');
      await sleep(100);
    }
    await checkPage(admin, 'Connect', 'hosted-database-connect', 2);
  });

  await step(
    t,
    'an accepted attached database is dropped from the account (the name typed to confirm)',
    async () => {
      const p = admin.page;
      const from = seen.length;
      await p.goto(`${stack.url}/databases/${REFUSED}`);
      const drop = p.getByRole('region', { name: 'Drop from this account' });
      await drop.getByRole('button', { name: 'Drop from this account' }).click();
      const dialog = p.getByRole('dialog', { name: `Drop ${REFUSED} from this account?` });
      await dialog.getByLabel('Type the database name to confirm').fill(REFUSED);
      await dialog.getByRole('button', { name: 'Drop database' }).click();
      await p.getByRole('heading', { name: 'Databases', level: 1 }).waitFor();
      const table = p.getByRole('table', { name: 'Databases' });
      await table.getByRole('link', { name: HOSTED, exact: true }).waitFor();
      assert.equal(await table.getByRole('link', { name: REFUSED, exact: true }).count(), 0);
      assert.equal((await api('GET', `/v1/databases/${REFUSED}`)).status, 404);
      await admin.assertClean('dropped');
      const asked = seen.slice(from);
      assert.ok(
        asked.some(
          (r) => r.method === 'POST' && r.url.endsWith(`/v1/databases/${REFUSED}/attachment/reject`),
        ),
      );
      assert.deepEqual(
        asked.filter((r) => r.method === 'DELETE'),
        [],
        'no delete: Bulwark does not manage it',
      );
    },
  );
});
