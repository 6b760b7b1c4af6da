/**
 * Backups in the dashboard (issue 15), in Debian's headless Chromium against a real `bulwark up`:
 * a member opens a database's Backups tab (no backup yet: stale), backs it up with "Back up now"
 * and watches it complete (size, checksum, the freshness line no longer stale), downloads it (the
 * file's SHA-256 is the one listed), restores it into a new database through the Restore dialog
 * and follows the restore to its end; the new database is ready with the same rows (checked in
 * PostgreSQL through the pooler). The in-place choice warns about the safety backup and the cut
 * connections, and only an owner or admin may choose it: an admin, after "Confirm it's you",
 * restores in place; the database is back to the backup's rows and the safety backup is listed. Deleting asks first. The tab fits a 375 px window.
 * Each page fails the test on a console error, a failed or undeclared ≥ 400 response or a CSP
 * violation, and on serious axe findings (test/helpers/browser.ts).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import pg from 'pg';
import type { Browser } from 'playwright-core';
import { type GuardedPage, guardedPage, launchChromium } from './helpers/browser.ts';
import { type DashboardStack, startDashboardStack } from './helpers/dashboard-stack.ts';
import { checkPage, databaseWithTable, named, redeem, walkthrough } from './helpers/dashboard-steps.ts';
import { accountApi, operatorKey, sleep } from './helpers/up-stack.ts';

const ADMIN = { username: 'ida_admin', password: 'marble-cobalt-meadow-64' };
const MEMBER = { username: 'noa_member', password: 'harbor-thistle-copper-38' };
const DB = 'ledger';
const COPY = 'ledger_copy';
const ROWS = 250;
const STEP_MS = 150_000;

let stack: DashboardStack;
let browser: Browser;
let admin: GuardedPage;
let member: GuardedPage;
let api: ReturnType<typeof accountApi>;
let tenant: pg.Client;
let copyClient: pg.Client | undefined;
let backupId = '';

before(async () => {
  stack = await startDashboardStack();
  browser = await launchChromium();
  api = accountApi(stack, await operatorKey(stack, 'default'));
});

after(async () => {
  await tenant?.end().catch(() => {});
  await copyClient?.end().catch(() => {});
  await admin?.close();
  await member?.close();
  await browser?.close().catch(() => {});
  await stack?.destroy();
});

/** A client of a database's owner through the pooler (its password revealed by the admin key). */
async function ownerClient(name: string): Promise<pg.Client> {
  const conn = (await api('GET', `/v1/databases/${name}/connection`)).json;
  const { password } = (await api('POST', `/v1/databases/${name}/credentials/reveal`)).json;
  const client = new pg.Client({
    host: '127.0.0.1',
    port: stack.ports.pooler,
    user: conn.user,
    database: conn.database,
    password,
    connectionTimeoutMillis: 5_000,
  });
  client.on('error', () => {});
  await client.connect();
  return client;
}

const COUNT_SQL = 'SELECT count(*)::int AS n, sum(id)::int AS s FROM entries';

const step = walkthrough('backups', STEP_MS, () => [
  ['admin', admin],
  ['member', member],
]);

test('backups in the dashboard', { timeout: 600_000 }, async (t) => {
  await step(t, 'an admin and a member sign up; a database with a table', async () => {
    const made = await api('POST', '/v1/invites', { count: 1, role: 'member' });
    assert.equal(made.status, 201, JSON.stringify(made.json));
    admin = await guardedPage(browser, { name: 'admin' });
    await redeem(admin, stack.firstAdminLink, ADMIN);
    member = await guardedPage(browser, { name: 'member' });
    await redeem(member, `${stack.url}/#invite=${made.json.invites[0].code}`, MEMBER);
    tenant = await databaseWithTable(
      api,
      stack.ports.pooler,
      DB,
      `CREATE TABLE entries (id int PRIMARY KEY, note text NOT NULL);
       INSERT INTO entries SELECT g, 'entry ' || g FROM generate_series(1, ${ROWS}) g`,
    );
  });

  await step(t, 'the member backs it up now and sees it completed, with the freshness line', async () => {
    const p = member.page;
    await p.goto(`${stack.url}/databases/${DB}/backups`);
    await p.getByRole('heading', { name: 'Backups', level: 2 }).waitFor();
    await p.getByText('No backups of this database yet.').waitFor();
    // No backup at all: stale, said in words.
    const freshness = p.locator('.freshness');
    assert.match(await freshness.innerText(), /Last good backup:\s*none yet\s*\(RPO 26 h\)\s*Stale/);
    await p.getByRole('button', { name: 'Back up now' }).click();
    const row = p.getByRole('table', { name: 'Backups' }).getByRole('row').nth(1);
    await row.getByText('Manual', { exact: true }).waitFor();
    await row.getByText('Completed', { exact: true }).waitFor({ timeout: 90_000 });
    const listed = (await api('GET', `/v1/databases/${DB}/backups`)).json.items;
    assert.equal(listed.length, 1);
    const b = listed[0];
    assert.equal(b.status, 'completed');
    assert.equal(b.trigger, 'manual');
    backupId = b.id;
    const cells = await row.getByRole('cell').allInnerTexts();
    assert.ok(b.size_bytes > 0);
    assert.match(cells.join('|'), / (B|KB|MB)\|/, `a size in the row: ${cells.join(' | ')}`);
    assert.equal(await row.locator('code').innerText(), b.sha256.slice(0, 12));
    assert.equal(await row.locator('code').getAttribute('title'), b.sha256);
    // The freshness line follows: a few seconds old, no longer stale.
    await freshness.filter({ hasText: /Last good backup:\s*\d+ s ago\s*\(RPO 26 h\)/ }).waitFor();
    assert.equal(await p.locator('.badge-stale').count(), 0);
    const detail = (await api('GET', `/v1/databases/${DB}`)).json;
    assert.equal(detail.backup.stale, false);
    assert.ok(detail.backup.last_good_at);
    await checkPage(member, 'Backups', 'database-backups', 2);
  });

  await step(t, 'the member downloads it: the file is the archive the checksum names', async () => {
    const p = member.page;
    // A navigation that becomes a download ends the page's request (aborted), by design.
    member.expectAbort(/\/backups\/[0-9a-f-]{36}\/download\?/);
    const row = p.getByRole('table', { name: 'Backups' }).getByRole('row').nth(1);
    // The whole database's data: the server asks for a recent "Confirm it's you" first.
    const reauth = p.getByRole('dialog', { name: "Confirm it's you" });
    await member.expecting(
      { method: 'POST', url: /\/download-link$/, status: 403, code: 'reauth_required' },
      async () => {
        await row.getByRole('button', { name: 'Download' }).click();
        await reauth.waitFor();
      },
    );
    await reauth.getByLabel('Your password').fill(MEMBER.password);
    const [download] = await Promise.all([
      p.waitForEvent('download', { timeout: 30_000 }),
      reauth.getByRole('button', { name: 'Confirm' }).click(),
    ]);
    const file = await download.path();
    const sha = createHash('sha256')
      .update(await readFile(file))
      .digest('hex');
    const b = (await api('GET', `/v1/databases/${DB}/backups/${backupId}`)).json;
    assert.equal(sha, b.sha256);
    assert.match(download.suggestedFilename(), /\.dump$/);
    await member.assertClean('download');
  });

  await step(
    t,
    'the member restores it into a new database and sees it ready with the same rows',
    async () => {
      const p = member.page;
      const row = p.getByRole('table', { name: 'Backups' }).getByRole('row').nth(1);
      await row.getByRole('button', { name: 'Restore…' }).click();
      const dialog = p.getByRole('dialog', { name: 'Restore a backup' });
      // In place is for owners and admins: a member's choice is disabled, and says why.
      const inPlace = dialog.getByRole('radio', { name: `This database (${DB}), in place` });
      assert.equal(await inPlace.isDisabled(), true);
      await dialog.getByText('Only an owner or admin of the account restores in place.').waitFor();
      await dialog.getByRole('radio', { name: 'A new database' }).check();
      const nameBox = dialog.getByRole('textbox', { name: named('New database name') });
      await nameBox.fill('Bad-Name');
      assert.equal(await dialog.getByRole('button', { name: 'Restore', exact: true }).isDisabled(), true);
      await nameBox.fill(COPY);
      await checkPage(member, 'Restore a backup', 'database-restore-dialog', 2);
      await dialog.getByRole('button', { name: 'Restore', exact: true }).click();
      const progress = dialog.getByRole('status');
      await progress.filter({ hasText: `into ${COPY}` }).waitFor();
      await progress.filter({ hasText: /^Restore Completed into/ }).waitFor({ timeout: 120_000 });
      assert.match(
        await progress.innerText(),
        new RegExp(`\\d+ tables? and ${ROWS} rows checked against the backup`),
      );
      // The new database, ready, with the same rows (through the pooler, as its owner).
      const copy = (await api('GET', `/v1/databases/${COPY}`)).json;
      assert.equal(copy.status, 'ready');
      copyClient = await ownerClient(COPY);
      const counted = await copyClient.query(COUNT_SQL);
      const original = await tenant.query(COUNT_SQL);
      assert.deepEqual(counted.rows[0], original.rows[0]);
      assert.equal(counted.rows[0].n, ROWS);
      // The dialog's link opens the new database: ready.
      await dialog.getByRole('link', { name: COPY }).click();
      await p.getByRole('heading', { name: COPY, level: 1 }).waitFor();
      await p.locator('.facts').getByText('Ready', { exact: true }).waitFor();
      await member.assertClean('restored');
    },
  );

  await step(
    t,
    'an admin restores it in place: a safety backup first, then the data of the backup',
    async () => {
      const p = admin.page;
      // A row written after the backup: the in-place restore takes it away (the safety backup keeps it).
      await tenant.query("INSERT INTO entries VALUES (9999, 'after the backup')");
      await p.goto(`${stack.url}/databases/${DB}/backups`);
      const table = p.getByRole('table', { name: 'Backups' });
      await table.getByRole('row').nth(1).getByRole('button', { name: 'Restore…' }).click();
      const dialog = p.getByRole('dialog', { name: 'Restore a backup' });
      await dialog.getByRole('radio', { name: `This database (${DB}), in place` }).check();
      // The warning names the safety backup and the cut connections.
      const warning = await dialog.getByRole('alert').innerText();
      assert.match(warning, /safety backup/);
      assert.match(warning, /every connection to ledger is cut/);
      await checkPage(admin, 'Restore a backup', 'database-restore-in-place', 2);
      // Destructive: the server asks for a recent "Confirm it's you".
      const reauth = p.getByRole('dialog', { name: "Confirm it's you" });
      await admin.expecting(
        { method: 'POST', url: /\/restore$/, status: 403, code: 'reauth_required' },
        async () => {
          await dialog.getByRole('button', { name: `Replace ${DB}` }).click();
          await reauth.waitFor();
        },
      );
      await reauth.getByLabel('Your password').fill(ADMIN.password);
      await reauth.getByRole('button', { name: 'Confirm' }).click();
      const progress = dialog.getByRole('status');
      await progress.filter({ hasText: /^Restore Completed into ledger/ }).waitFor({ timeout: 120_000 });
      await dialog.getByText(/^Safety backup taken first: [0-9a-f]{8}$/).waitFor();
      await dialog.getByRole('button', { name: 'Close' }).click();
      // The safety backup is listed, newest, completed.
      const newest = table.getByRole('row').nth(1);
      await newest.getByText('Safety', { exact: true }).waitFor();
      await newest.getByText('Completed', { exact: true }).waitFor();
      assert.equal(await table.getByRole('row').count(), 3);
      // Its connections were cut: a new one reads the backup's rows, without the later one.
      await tenant.end().catch(() => {});
      tenant = await ownerClient(DB);
      const now = await tenant.query(COUNT_SQL);
      assert.equal(now.rows[0].n, ROWS);
      await admin.assertClean('restored in place');
    },
  );

  await step(t, 'deleting asks first; the tab fits a 375 px window', async () => {
    const p = member.page;
    await p.setViewportSize({ width: 375, height: 800 });
    await p.goto(`${stack.url}/databases/${DB}/backups`);
    const table = p.getByRole('table', { name: 'Backups' });
    // The manual backup, below the newer safety backup.
    const row = table.getByRole('row').nth(2);
    await row.getByText('Manual', { exact: true }).waitFor();
    const over = await p.evaluate('document.documentElement.scrollWidth - window.innerWidth');
    assert.ok(Number(over) <= 0, `the Backups tab is ${over} px wider than the window`);
    await checkPage(member, 'Backups', 'narrow-database-backups', 2);
    await row.getByRole('button', { name: 'Delete' }).click();
    const confirm = p.getByRole('dialog', { name: 'Delete this backup?' });
    await confirm.getByRole('button', { name: 'Cancel' }).click();
    assert.equal((await api('GET', `/v1/databases/${DB}/backups/${backupId}`)).status, 200);
    await row.getByRole('button', { name: 'Delete' }).click();
    await confirm.getByRole('button', { name: 'Delete backup' }).click();
    await table.getByRole('row').getByText('Manual', { exact: true }).waitFor({ state: 'detached' });
    assert.equal(await table.getByRole('row').count(), 2);
    // Hidden at once; the agent removes the file, then the record goes.
    const deadline = Date.now() + 30_000;
    while ((await api('GET', `/v1/databases/${DB}/backups/${backupId}`)).status !== 404) {
      assert.ok(Date.now() < deadline, 'the deleted backup is still listed');
      await sleep(200);
    }
    await member.assertClean('deleted');
  });
});
