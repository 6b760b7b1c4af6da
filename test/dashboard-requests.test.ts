/**
 * Governed SQL in the dashboard (issue 14), in Debian's headless Chromium against a real
 * `bulwark up`: a member writes an UPDATE … WHERE … RETURNING in a database's Requests tab, sees
 * the preflight's class, dry-run count and deciding policy rule, and submits it; the page offers
 * them no way to approve it themselves. An admin, in a second browser context, sees the request in
 * the Approvals inbox (the nav's badge counts it) and approves it; the member executes it and sees
 * the returned rows (checked against PostgreSQL). The admin breaks glass on another request with a
 * reason, through "Confirm it's you". The member's access request: approved and executed, its
 * temporary login is shown once and works (read only) through the pooler. An applied policy on the
 * policy page; the 375 px layout and axe on every page.
 * Each page fails the test on a console error, a failed or undeclared ≥ 400 response or a CSP
 * violation (test/helpers/browser.ts).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import pg from 'pg';
import type { Browser, Locator, Page } from 'playwright-core';
import {
  assertAccessible,
  type GuardedPage,
  guardedPage,
  launchChromium,
  screenshot,
} from './helpers/browser.ts';
import { type DashboardStack, startDashboardStack } from './helpers/dashboard-stack.ts';
import { checkPage, databaseWithTable, named, redeem, walkthrough } from './helpers/dashboard-steps.ts';
import { accountApi, operatorKey } from './helpers/up-stack.ts';

const ADMIN = { username: 'bea_admin', password: 'copper-lantern-orchard-52' };
const MEMBER = { username: 'ari_member', password: 'willow-granite-pepper-17' };
const DB = 'orders';
const STEP_MS = 60_000;
const UPDATE_SQL = 'UPDATE items SET price = price + 1 WHERE id <= 3 RETURNING id, price';

let stack: DashboardStack;
let browser: Browser;
let admin: GuardedPage;
let member: GuardedPage;
/** The account's API as an admin key (the operator's), to set up and to check what pages claim. */
let api: ReturnType<typeof accountApi>;
let tenant: pg.Client;
let requestUrl = '';

before(async () => {
  stack = await startDashboardStack();
  browser = await launchChromium();
  api = accountApi(stack, await operatorKey(stack, 'default'));
});

after(async () => {
  await tenant?.end().catch(() => {});
  await admin?.close();
  await member?.close();
  await browser?.close().catch(() => {});
  await stack?.destroy();
});

const status = (p: Page, word: string): Locator =>
  p.locator('.facts').getByText(word, { exact: true }).first();

const step = walkthrough('requests', STEP_MS, () => [
  ['admin', admin],
  ['member', member],
]);

test('governed requests in the dashboard', { timeout: 300_000 }, async (t) => {
  await step(t, 'an admin and a member sign up; a database with rows', async () => {
    admin = await guardedPage(browser, { name: 'admin' });
    await redeem(admin, stack.firstAdminLink, ADMIN);
    const made = await api('POST', '/v1/invites', { count: 1, role: 'member' });
    assert.equal(made.status, 201, JSON.stringify(made.json));
    member = await guardedPage(browser, { name: 'member' });
    await redeem(member, `${stack.url}/#invite=${made.json.invites[0].code}`, MEMBER);
    tenant = await databaseWithTable(
      api,
      stack.ports.pooler,
      DB,
      'CREATE TABLE items (id int PRIMARY KEY, price int NOT NULL); INSERT INTO items SELECT g, 10 * g FROM generate_series(1, 6) g',
    );
  });

  await step(t, 'the member preflights an UPDATE, sees the dry run and the policy, submits it', async () => {
    const p = member.page;
    await p.goto(`${stack.url}/databases/${DB}/requests`);
    await p.getByRole('heading', { name: 'Requests', level: 2 }).waitFor();
    await p.getByText(/^No requests on this database/).waitFor();
    await p.getByRole('button', { name: 'New request' }).click();
    const editor = p.getByRole('textbox', { name: 'Request SQL' });
    const preflight = p.getByRole('region', { name: /^Preflight/ });
    // A DELETE without WHERE: the review blocks it, and the page will not submit it.
    await editor.click();
    await editor.fill('DELETE FROM items');
    await p.getByRole('button', { name: 'Preflight' }).click();
    await preflight
      .getByRole('listitem')
      .filter({ hasText: 'missing_where' })
      .filter({ hasText: 'Blocks' })
      .waitFor();
    assert.equal(await p.getByRole('button', { name: 'Submit for approval' }).isDisabled(), true);
    await editor.click();
    await p.keyboard.press('ControlOrMeta+a');
    await editor.fill(UPDATE_SQL);
    await p.getByRole('textbox', { name: named('Reason') }).fill('Prices of the first three items rise by 1');
    await p.getByRole('button', { name: 'Preflight' }).click();
    await preflight.getByText('No review findings.').waitFor();
    assert.equal(await p.getByRole('button', { name: 'Submit for approval' }).isDisabled(), false);
    await preflight.getByText('1 approval', { exact: true }).waitFor();
    const shown = await preflight.innerText();
    assert.match(shown, /write/);
    assert.match(shown, /builtin/, 'the deciding rule: the built-in defaults');
    assert.match(shown, /No review findings/);
    await checkPage(member, 'Requests', 'request-new', 2);
    await p.getByRole('button', { name: 'Submit for approval' }).click();
    await p.getByRole('heading', { name: /^Request [0-9a-f]{8}$/, level: 1 }).waitFor();
    requestUrl = p.url();
    await status(p, 'Pending').waitFor();
    // The request's dry run (rolled back) counted the rows the approval binds; its plan is collapsed.
    await p
      .getByRole('status')
      .filter({ hasText: /^Dry run: 3 rows would be affected/ })
      .waitFor();
    await p.getByText(/^Statement 1: UPDATE/).click();
    const plan = p.locator('details.plan pre').first();
    await plan.waitFor();
    // The plan reads as psql shows it: a line per node, the scan under the update.
    assert.match(
      await plan.innerText(),
      /^Update on items {2}\(cost=[\d.]+\.\.[\d.]+ rows=\d+ width=\d+\)\n\s+->\s+\w/,
    );
    // No way to approve one's own request: no Approve, no Reject, and the page says why.
    assert.equal(await p.getByRole('button', { name: 'Approve' }).count(), 0);
    assert.equal(await p.getByRole('button', { name: 'Reject' }).count(), 0);
    await p.getByText('Waiting for approval: you cannot approve your own request.').first().waitFor();
    const id = /\/requests\/([0-9a-f-]{36})$/.exec(requestUrl)?.[1];
    const server = await api('GET', `/v1/databases/${DB}/requests/${id}`);
    assert.equal(server.json.status, 'pending');
    assert.equal(server.json.dry_run.affected_rows, 3);
    assert.equal(server.json.requester.name, MEMBER.username);
    await checkPage(member, /^Request /, 'request-pending');
  });

  await step(t, 'the admin sees it in the Approvals inbox with a badge, and approves it', async () => {
    const p = admin.page;
    await p.goto(`${stack.url}/databases`);
    const nav = p.getByRole('navigation', { name: 'Main' });
    const approvals = nav.getByRole('link', { name: /^Approvals\s*1 awaiting your approval$/ });
    await approvals.waitFor();
    await approvals.click();
    const inbox = p.getByRole('table', { name: 'Awaiting your approval' });
    await inbox.getByRole('row').nth(1).waitFor();
    assert.equal(await inbox.getByRole('row').count(), 2, 'one request awaits the admin');
    await checkPage(admin, 'Approvals', 'approvals-inbox');
    // "Only my requests" (GET /v1/requests?requester=me): the admin has made none yet.
    const all = p.getByRole('table', { name: 'All requests' });
    await all.getByRole('link', { name: /^UPDATE items/ }).waitFor();
    await p.getByRole('checkbox', { name: 'Only my requests' }).check();
    await p.getByText('No requests. Make one').waitFor();
    await p.getByRole('checkbox', { name: 'Only my requests' }).uncheck();
    await all.getByRole('link', { name: /^UPDATE items/ }).waitFor();
    await inbox.getByRole('link', { name: /^UPDATE items/ }).click();
    await status(p, 'Pending').waitFor();
    // By keyboard: the dialog takes the focus (its comment field), Tab reaches its buttons.
    await p.getByRole('button', { name: 'Approve' }).focus();
    await p.keyboard.press('Enter');
    const dialog = p.getByRole('dialog', { name: 'Approve this request?' });
    await dialog.waitFor();
    assert.equal(await p.evaluate('document.activeElement?.tagName'), 'TEXTAREA', 'focus in the dialog');
    await p.keyboard.type('Checked the three rows');
    await p.keyboard.press('Tab');
    await p.keyboard.press('Tab');
    assert.equal(await p.evaluate('document.activeElement?.textContent'), 'Approve');
    await p.keyboard.press('Enter');
    await dialog.waitFor({ state: 'detached' });
    await status(p, 'Approved').waitFor();
    const row = p.getByRole('table', { name: 'Approvals' }).getByRole('row').nth(1);
    assert.match(
      await row.innerText(),
      new RegExp(`${ADMIN.username}[\\s\\S]*Checked the three rows[\\s\\S]*Yes`),
    );
    // Focus is not lost when the dialog closes: it lands on the request's status line.
    assert.equal(await p.evaluate('document.activeElement?.classList.contains("facts")'), true);
    // The badge is gone once nothing awaits the admin.
    await p.goto(`${stack.url}/requests`);
    await p.getByText('Nothing awaits your approval.').waitFor();
    await nav.getByRole('link', { name: 'Approvals', exact: true }).waitFor();
    await admin.assertClean('approve');
  });

  await step(t, 'the member executes it and sees the returned rows', async () => {
    const p = member.page;
    await p.goto(requestUrl);
    await status(p, 'Approved').waitFor();
    assert.equal(await p.getByRole('button', { name: 'Approve' }).count(), 0);
    await p.getByRole('button', { name: 'Execute' }).click();
    await p
      .getByRole('dialog', { name: 'Execute this request?' })
      .getByRole('button', { name: 'Execute now' })
      .click();
    await status(p, 'Executed').waitFor({ timeout: 30_000 });
    const grid = p.getByRole('table', { name: 'Execution results' });
    await grid.getByRole('row').nth(3).waitFor();
    const rows = (await grid.getByRole('row').allInnerTexts()).slice(1).map((r) => r.split(/\s+/).join(' '));
    assert.deepEqual(rows.sort(), ['1 11', '2 21', '3 31']);
    const db = await tenant.query('SELECT id, price FROM items ORDER BY id');
    assert.deepEqual(
      db.rows.map((r) => [r.id, r.price]),
      [
        [1, 11],
        [2, 21],
        [3, 31],
        [4, 40],
        [5, 50],
        [6, 60],
      ],
      'the UPDATE ran once, on the three rows',
    );
    await p
      .getByText(/kept until/)
      .first()
      .waitFor();
    await assertAccessible(p, 'request-executed');
    await screenshot(p, 'request-detail');
    await member.assertClean('execute');
  });

  await step(
    t,
    'the admin breaks glass on a pending request, with a reason, confirming it is them',
    async () => {
      const made = await api('POST', `/v1/databases/${DB}/requests`, {
        sql: 'DELETE FROM items WHERE id = 6',
        reason: 'Remove the discontinued item',
      });
      assert.equal(made.status, 201, JSON.stringify(made.json));
      assert.equal(made.json.status, 'pending');
      const p = admin.page;
      await p.goto(`${stack.url}/databases/${DB}/requests/${made.json.id}`);
      await status(p, 'Pending').waitFor();
      await p.getByRole('button', { name: 'Break glass' }).click();
      const dialog = p.getByRole('dialog', { name: 'Break glass?' });
      await dialog
        .getByRole('textbox', { name: named('Reason') })
        .fill('Incident 42: the item is sold in error');
      const reauth = p.getByRole('dialog', { name: "Confirm it's you" });
      await admin.expecting(
        { method: 'POST', url: /\/execute$/, status: 403, code: 'reauth_required' },
        async () => {
          await dialog.getByRole('button', { name: 'Break glass and execute' }).click();
          await reauth.waitFor();
        },
      );
      await reauth.getByLabel('Your password').fill(ADMIN.password);
      await reauth.getByRole('button', { name: 'Confirm' }).click();
      await status(p, 'Executed').waitFor({ timeout: 30_000 });
      await p
        .getByRole('note')
        .filter({ hasText: /^Break glass by bea_admin/ })
        .waitFor();
      assert.match(await p.getByRole('note').innerText(), /Incident 42/);
      const left = await tenant.query('SELECT count(*)::int AS n FROM items WHERE id = 6');
      assert.equal(left.rows[0].n, 0, 'the DELETE ran');
      const server = (await api('GET', `/v1/databases/${DB}/requests/${made.json.id}`)).json;
      assert.equal(server.break_glass.reason, 'Incident 42: the item is sold in error');
      await checkPage(admin, /^Request /, 'request-break-glass');
    },
  );

  await step(
    t,
    'the member edits a request (it starts over), the admin rejects it with a comment',
    async () => {
      const p = member.page;
      await p.goto(`${stack.url}/databases/${DB}/requests`);
      await p.getByRole('button', { name: 'New request' }).click();
      const editor = p.getByRole('textbox', { name: 'Request SQL' });
      await editor.click();
      await editor.fill('UPDATE items SET price = 0 WHERE id = 4');
      await p.getByRole('textbox', { name: named('Reason') }).fill('Free sample');
      await p.getByRole('button', { name: 'Submit for approval' }).click();
      await status(p, 'Pending').waitFor();
      await p.getByRole('button', { name: 'Edit SQL' }).click();
      const dialog = p.getByRole('dialog', { name: 'Edit the SQL' });
      await dialog.getByText(/^Editing starts over: every approval is cleared/).waitFor();
      const next = dialog.getByRole('textbox', { name: 'New SQL' });
      await next.click();
      await p.keyboard.press('ControlOrMeta+a');
      await next.fill('UPDATE items SET price = 0 WHERE id IN (4, 5)');
      await dialog.getByRole('button', { name: 'Save and start over' }).click();
      await dialog.waitFor({ state: 'detached' });
      await p
        .getByRole('status')
        .filter({ hasText: /^Dry run: 2 rows would be affected/ })
        .waitFor();
      assert.match(
        await p.getByRole('textbox', { name: 'Request SQL (read-only)' }).innerText(),
        /IN \(4, 5\)/,
      );
      const a = admin.page;
      await a.goto(p.url());
      await status(a, 'Pending').waitFor();
      await a.getByRole('button', { name: 'Reject' }).click();
      const reject = a.getByRole('dialog', { name: 'Reject this request?' });
      const why = reject.getByRole('textbox', { name: named('Why') });
      // A rejection needs its reason: the empty form is not sent.
      await reject.getByRole('button', { name: 'Reject' }).click();
      assert.equal(
        await why.evaluate(
          (e) => (e as unknown as { validity: { valueMissing: boolean } }).validity.valueMissing,
        ),
        true,
      );
      await why.fill('Samples are not free this month');
      await reject.getByRole('button', { name: 'Reject' }).click();
      await status(a, 'Rejected').waitFor();
      await a.getByText(/^Rejected by bea_admin .*Samples are not free this month$/).waitFor();
      await p.reload();
      await status(p, 'Rejected').waitFor();
      assert.equal(await p.getByRole('button', { name: 'Execute' }).count(), 0);
      const rows = await tenant.query('SELECT count(*)::int AS n FROM items WHERE price = 0');
      assert.equal(rows.rows[0].n, 0, 'nothing ran');
      await admin.assertClean('reject');
      await member.assertClean('edit');
    },
  );

  await step(
    t,
    'the member asks for reader access; approved and executed, the login shows once and works',
    async () => {
      const p = member.page;
      await p.goto(`${stack.url}/databases/${DB}/requests`);
      await p.getByRole('button', { name: 'Request access' }).click();
      const form = p.getByRole('form', { name: 'Request access' });
      await form.getByRole('combobox', { name: 'Role' }).selectOption('reader');
      await form.getByRole('combobox', { name: 'For' }).selectOption('3600');
      await form.getByRole('textbox', { name: named('Reason') }).fill('Look into a price report');
      await form.getByRole('button', { name: 'Submit access request' }).click();
      await status(p, 'Pending').waitFor();
      const url = p.url();
      const a = admin.page;
      await a.goto(url);
      await status(a, 'Pending').waitFor();
      await a.getByRole('button', { name: 'Approve' }).click();
      await a
        .getByRole('dialog', { name: 'Approve this request?' })
        .getByRole('button', { name: 'Approve' })
        .click();
      await status(a, 'Approved').waitFor();
      await p.reload();
      await status(p, 'Approved').waitFor();
      await p.getByRole('button', { name: 'Execute' }).click();
      await p
        .getByRole('dialog', { name: 'Execute this request?' })
        .getByRole('button', { name: 'Execute now' })
        .click();
      const once = p.getByRole('region', { name: 'Your temporary login' });
      await once.waitFor({ timeout: 30_000 });
      await once.getByText('you will not see this again').waitFor();
      const login = await once.getByRole('textbox', { name: 'Login' }).inputValue();
      const password = await once.getByRole('textbox', { name: 'Password' }).inputValue();
      const cs = new URL(await once.getByRole('textbox', { name: 'Connection string' }).inputValue());
      assert.equal(decodeURIComponent(cs.username), login);
      assert.equal(cs.password, '', 'the connection string carries no password');
      const client = new pg.Client({
        host: '127.0.0.1',
        port: stack.ports.pooler,
        user: login,
        password,
        database: decodeURIComponent(cs.pathname.slice(1)),
        connectionTimeoutMillis: 5_000,
      });
      client.on('error', () => {});
      await client.connect();
      try {
        const n = await client.query('SELECT count(*)::int AS n FROM items');
        assert.equal(n.rows[0].n, 5, 'the temporary login reads the table');
        await assert.rejects(client.query('DELETE FROM items'), /permission denied|read-only/);
      } finally {
        await client.end().catch(() => {});
      }
      await checkPage(member, /^Request /, 'request-access-once');
      // Shown once: the page read again has no password on it.
      await p.reload();
      await status(p, 'Executed').waitFor();
      assert.equal(await p.getByRole('region', { name: 'Your temporary login' }).count(), 0);
      await member.assertClean('access');
    },
  );

  await step(
    t,
    'an applied policy shows on the policy page: its source, version and effective rules',
    async () => {
      const source = [
        'version: 1',
        'environments:',
        '  production:',
        '    classes:',
        '      write: { approvals: 2, admin_approvals: 1 }',
        'databases:',
        `  ${DB}:`,
        '    environment: production',
        '',
      ].join('\n');
      const applied = await api('PUT', '/v1/policy', { source });
      assert.equal(applied.status, 200, JSON.stringify(applied.json));
      const p = admin.page;
      await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Policy' }).click();
      await p.getByText('bulwark policy apply').waitFor();
      assert.equal(await p.locator('dl.kv dd').first().innerText(), '1', 'version 1');
      assert.match(await p.locator('dl.kv dd').nth(1).innerText(), /\(API key\)$/, 'applied by the key');
      const rules = p.getByRole('table', { name: `Rules: databases.${DB} (production)` });
      assert.match(
        await rules
          .getByRole('row')
          .filter({ hasText: /^write/ })
          .innerText(),
        /2 \(1 owner\/admin\)/,
      );
      const defaults = p.getByRole('table', { name: 'Rules: built-in defaults' });
      assert.match(
        await defaults
          .getByRole('row')
          .filter({ hasText: /^write/ })
          .innerText(),
        /\t1$/,
      );
      assert.match(await p.locator('pre.policy-source').innerText(), /environment: production/);
      await checkPage(admin, 'Policy', 'policy-applied');
    },
  );

  await step(t, 'a member reads the policy; a narrow window fits', async () => {
    const p = member.page;
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Policy' }).click();
    await p.getByText('Owners and admins change it.', { exact: false }).waitFor();
    const rules = p.getByRole('table', { name: 'Rules: built-in defaults' });
    assert.match(
      await rules
        .getByRole('row')
        .filter({ hasText: /^write/ })
        .innerText(),
      /\b1\b/,
    );
    await checkPage(member, 'Policy', 'policy');
    await p.setViewportSize({ width: 375, height: 800 });
    for (const url of [requestUrl, `${stack.url}/databases/${DB}/requests`, `${stack.url}/requests`]) {
      await p.goto(url);
      await p.getByRole('heading', { level: 1 }).waitFor();
      await p.getByRole('table').first().waitFor();
      const over = await p.evaluate('document.documentElement.scrollWidth - window.innerWidth');
      assert.ok(Number(over) <= 0, `${url}: the page is ${over} px wider than the window`);
    }
    await checkPage(member, 'Approvals', 'narrow-approvals');
  });
});
