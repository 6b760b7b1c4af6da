/**
 * The dashboard end to end, in Debian's headless Chromium against a real `bulwark up`: the first
 * admin (owner of the install's first account) redeems the printed invite, enrols TOTP (the code
 * computed from the secret on the page), creates a database and sees it become ready, allows an
 * address, reveals and rotates the password, runs an explorer query and downloads its CSV, creates
 * and revokes a key, verifies the audit chain, and invites a member; the member signs up in a
 * second browser, the admin suspends them, and the member's session ends. Every page fails the
 * test on a console error, a failed or undeclared ≥ 400 request, a non-loopback request or a CSP
 * violation; each main page is checked with axe and photographed (test-output/screenshots/).
 */
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, type TestContext, test } from 'node:test';
import type { Browser, Locator, Page } from 'playwright-core';
import { base32Decode, totpAt } from '../src/server/modules/people/totp.ts';
import {
  assertAccessible,
  type GuardedPage,
  guardedPage,
  launchChromium,
  SCREENSHOT_DIR,
  screenshot,
} from './helpers/browser.ts';
import { type DashboardStack, startDashboardStack } from './helpers/dashboard-stack.ts';
import { accountApi, operatorKey } from './helpers/up-stack.ts';
import { waitFor } from './helpers/wait.ts';

const ADMIN = { username: 'ada_admin', password: 'quiet-harbour-lantern-71' };
const MEMBER = { username: 'max_member', password: 'amber-meadow-thistle-38' };
const DB = 'shop';
const STEP_MS = 30_000;

let stack: DashboardStack;
let browser: Browser;
let admin: GuardedPage;
let member: GuardedPage;
let memberInviteLink = '';
/** The admin's TOTP secret, as the enrolment page showed it. */
let totpSecret: Buffer;
/** The API as an admin key of the admin's account, to check what the pages claim. */
let api: ReturnType<typeof accountApi>;

before(async () => {
  // A failure's screenshots belong to this run only.
  for (const who of ['admin', 'member'])
    await rm(path.join(SCREENSHOT_DIR, `failed-${who}.png`), { force: true });
  stack = await startDashboardStack();
  browser = await launchChromium();
  api = accountApi(stack, await operatorKey(stack, 'default'));
});

after(async () => {
  await admin?.close();
  await member?.close();
  await browser?.close().catch(() => {});
  await stack?.destroy();
});

/**
 * Signed out: the app asks nothing when the server's signed-in marker cookie is absent; where a
 * session ends under it, /v1/me and the refresh answer 401 (declared).
 */
function expectSignedOut(g: GuardedPage): () => void {
  const undo = [
    g.expect({ method: 'GET', url: /\/v1\/me$/, status: 401 }),
    g.expect({ method: 'POST', url: /\/v1\/auth\/refresh$/, status: 401 }),
  ];
  return () => {
    for (const u of undo) u();
  };
}

/** A main page: its heading shown, nothing broken so far, no serious axe finding, a screenshot. */
async function checkPage(g: GuardedPage, heading: string | RegExp, shot: string, level = 1): Promise<void> {
  await g.page.getByRole('heading', { name: heading, level }).first().waitFor();
  await assertAccessible(g.page, shot);
  await screenshot(g.page, shot);
  await g.assertClean(shot);
}

/** A control's accessible name starts with its label (a hint may follow it inside the label). */
const named = (label: string) => new RegExp(`^${label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\s|$)`);
const field = (page: Page, label: string) => page.getByRole('textbox', { name: named(label) });

async function redeem(g: GuardedPage, link: string, who: { username: string; password: string }) {
  const signedOut = expectSignedOut(g);
  await g.page.goto(link);
  await g.page.getByRole('heading', { name: 'Redeem your invite', level: 1 }).waitFor();
  assert.doesNotMatch(g.page.url(), /bwi_/, 'the code leaves the address bar');
  assert.match(await field(g.page, 'Invite code').inputValue(), /^bwi_[\w-]{43}$/);
  await field(g.page, 'Username').fill(who.username);
  await g.page.getByLabel(named('Password')).fill(who.password);
  await g.page.getByLabel(named('Confirm password')).fill(who.password);
  await g.page.getByRole('button', { name: 'Create account' }).click();
  await g.page.getByRole('heading', { name: 'Account security', level: 1 }).waitFor();
  signedOut();
}

/**
 * An action that may need "Confirm it's you" (the step-up window: TOTP setup, a new key, new
 * invites, a reveal). When the server asks (403 reauth_required, declared), the dialog takes the
 * admin's password and the page repeats the action once; within the 5-minute window nothing is
 * asked. Resolves with whether it asked, once `done` shows.
 */
async function confirmingIfAsked(
  g: GuardedPage,
  url: RegExp,
  act: () => Promise<void>,
  done: Locator,
): Promise<boolean> {
  const dialog = g.page.getByRole('dialog', { name: "Confirm it's you" });
  const asked = await g.expecting({ method: 'POST', url, status: 403, code: 'reauth_required' }, async () => {
    await act();
    await dialog.or(done).first().waitFor();
    return dialog.isVisible();
  });
  if (asked) {
    await dialog.getByLabel('Your password').fill(ADMIN.password);
    await dialog.getByRole('button', { name: 'Confirm' }).click();
    await dialog.waitFor({ state: 'detached' });
  }
  await done.waitFor();
  return asked;
}

let broken = '';
/** One step of the walk-through; after a failed step the rest are skipped (they build on it). */
function step(t: TestContext, name: string, fn: () => Promise<void>): Promise<void> {
  const skip = broken ? `an earlier step failed: ${broken}` : false;
  return t.test(name, { timeout: STEP_MS, skip }, async () => {
    try {
      await fn();
    } catch (err) {
      broken = name;
      // What each browser showed when the step failed, next to the other screenshots.
      const seen: string[] = [];
      for (const [who, g] of [
        ['admin', admin],
        ['member', member],
      ] as const) {
        if (!g) continue;
        await screenshot(g.page, `failed-${who}`).catch(() => {});
        seen.push(...g.problems().map((x) => `  - [${x.kind}] ${x.detail}`));
      }
      if (seen.length && err instanceof Error) err.message += `\nthe browsers also saw:\n${seen.join('\n')}`;
      throw err;
    }
  });
}

// ~40 s alone; under the whole suite on 2 cores (four files at once) up to ~140 s was seen, most
// of it starting the stack. Each step has its own 30 s bound.
test('the dashboard end to end in Chromium', { timeout: 240_000 }, async (t) => {
  admin = await guardedPage(browser, { name: 'admin', permissions: ['clipboard-read', 'clipboard-write'] });

  await step(t, 'the first admin redeems the invite printed by bulwark up', async () => {
    await redeem(admin, stack.firstAdminLink, ADMIN);
    // The session is in cookies the page's scripts cannot read, sent only to this origin.
    const cookies = await admin.context.cookies(stack.url);
    const session = cookies.find((c) => c.name === '__Host-bulwark_session');
    assert.ok(session, `a session cookie: ${cookies.map((c) => c.name).join()}`);
    assert.deepEqual(
      [session.httpOnly, session.secure, session.sameSite, session.path],
      [true, true, 'Strict', '/'],
    );
    // The refresh cookie is host-only too (`__Host-`: no sibling host can set or shadow it).
    const refresh = cookies.find((c) => c.name === '__Host-bulwark_refresh');
    assert.deepEqual(
      [refresh?.httpOnly, refresh?.secure, refresh?.sameSite, refresh?.path],
      [true, true, 'Strict', '/'],
    );
    const visible = String(await admin.page.evaluate('document.cookie'));
    assert.doesNotMatch(visible, /bulwark_session|bulwark_refresh/, 'no script reads the tokens');
    await checkPage(admin, 'Account security', 'account-security');
  });

  await step(t, 'the admin enrols TOTP with a code computed from the secret shown', async () => {
    const p = admin.page;
    // A new session has no step-up window: setting up TOTP asks for the password first.
    const asked = await confirmingIfAsked(
      admin,
      /\/v1\/me\/totp$/,
      () => p.getByRole('button', { name: 'Set up two-factor authentication' }).click(),
      p.getByRole('img', { name: 'QR code for your authenticator app' }),
    );
    assert.ok(asked, "TOTP setup asked to confirm it's you");
    const secret = await field(p, 'Secret key').inputValue();
    assert.match(secret.replace(/\s/g, ''), /^[A-Z2-7]{32}$/);
    totpSecret = base32Decode(secret);
    await field(p, 'Authentication code').fill(totpAt(totpSecret, Date.now()));
    await p.getByRole('button', { name: 'Confirm' }).click();
    await p.getByRole('status').filter({ hasText: 'Two-factor authentication is on' }).waitFor();
    await p.getByRole('heading', { name: 'Recovery codes' }).waitFor();
    assert.ok((await p.getByRole('listitem').count()) >= 5, 'recovery codes are listed');
    await checkPage(admin, 'Account security', 'totp-enrolled');
  });

  await step(
    t,
    'the admin signs out, then signs in again by keyboard: password, then the TOTP step',
    async () => {
      const p = admin.page;
      await p.getByRole('button', { name: 'Sign out' }).click();
      await p.getByRole('heading', { name: 'Sign in', level: 1 }).waitFor();
      const signedOut = expectSignedOut(admin);
      const undoTotp = admin.expect({
        method: 'POST',
        url: /\/v1\/auth\/login$/,
        status: 401,
        code: 'totp_required',
      });
      await field(p, 'Username').focus();
      await p.keyboard.type(ADMIN.username);
      await p.keyboard.press('Tab');
      await p.keyboard.type(ADMIN.password);
      await p.keyboard.press('Enter');
      // The code field takes the focus; the enrolment used this step's code, so the next one.
      await field(p, 'Authentication code').waitFor();
      assert.equal(await p.evaluate('document.activeElement?.name'), 'totp', 'focus moves to the code');
      await p.keyboard.type(totpAt(totpSecret, Date.now() + 30_000));
      await p.keyboard.press('Enter');
      await p.getByRole('heading', { name: 'Welcome to Bulwark', level: 1 }).waitFor();
      undoTotp();
      signedOut();
      await checkPage(admin, 'Welcome to Bulwark', 'home');
    },
  );

  await step(t, 'the admin creates a database and sees it become ready', async () => {
    const p = admin.page;
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Databases' }).click();
    await p
      .getByText(/^No databases/)
      .first()
      .waitFor();
    await checkPage(admin, 'Databases', 'databases-empty');
    await p.getByRole('link', { name: 'Create database' }).first().click();
    await field(p, 'Database name').fill(DB);
    await p.getByRole('button', { name: 'Create database' }).click();
    await p.getByRole('link', { name: `Open ${DB}` }).waitFor({ timeout: 15_000 });
    await p.getByRole('status').filter({ hasText: 'Ready' }).first().waitFor();
    await checkPage(admin, 'Create database', 'database-created');
    await p.getByRole('link', { name: `Open ${DB}` }).click();
    await p.getByRole('heading', { name: DB, level: 1 }).waitFor();
    await checkPage(admin, 'Connect', 'database-connect', 2);
  });

  await step(t, 'the admin adds an allowlist entry', async () => {
    const p = admin.page;
    await p
      .getByRole('navigation', { name: 'Database sections' })
      .getByRole('link', { name: 'Network' })
      .click();
    await field(p, 'Address or range (CIDR)').fill('203.0.113.0/24');
    await field(p, 'Note').fill('office');
    await p.getByRole('button', { name: 'Add entry' }).click();
    const table = p.getByRole('table', { name: 'Allowed addresses' });
    await table
      .getByRole('row')
      .filter({ hasText: '203.0.113.0/24' })
      .filter({ hasText: 'office' })
      .waitFor();
    const listed = await api('GET', `/v1/databases/${DB}/allowlist`);
    assert.match(JSON.stringify(listed.json), /203\.0\.113\.0\/24/, 'the entry is on the server');
    await checkPage(admin, 'Network', 'database-network', 2);
  });

  await step(
    t,
    'the admin reveals the password (re-entering their own), rotates it, reveals the new one',
    async () => {
      const p = admin.page;
      await p
        .getByRole('navigation', { name: 'Database sections' })
        .getByRole('link', { name: 'Connect' })
        .click();
      // The page first asks without proof; the server's 403 reauth_required says what to ask for
      // (once: the confirmation opens a five-minute window on the session).
      let asks = 0;
      const reveal = async () => {
        const box = field(p, 'Database password');
        const asked = await confirmingIfAsked(
          admin,
          /\/credentials\/reveal$/,
          () => p.getByRole('button', { name: 'Reveal password' }).click(),
          box,
        );
        if (asked) asks++;
        const value = await box.inputValue();
        await p.getByRole('button', { name: 'Hide password' }).click();
        return value;
      };
      const before = await reveal();
      assert.ok(before.length >= 16, 'a password is shown');
      await p.getByRole('button', { name: 'Rotate password' }).click();
      await p
        .getByRole('dialog', { name: 'Rotate the password?' })
        .getByRole('button', { name: 'Rotate' })
        .click();
      await p.getByRole('status').filter({ hasText: 'Password rotated' }).waitFor({ timeout: 15_000 });
      const rotated = await reveal();
      assert.notEqual(rotated, before, 'rotation gave a new password');
      assert.equal(asks, 1, "asked to confirm it's you once (the second reveal is in the window)");
      const server = await api('POST', `/v1/databases/${DB}/credentials/reveal`);
      assert.equal(server.json.password, rotated, 'the page shows the server’s current password');
      // The copy button puts the connection URI on the clipboard.
      await p.getByRole('button', { name: 'Copy connection URI' }).click();
      await p.getByRole('status').filter({ hasText: 'Copied' }).first().waitFor();
      const uri = await field(p, 'Connection URI').inputValue();
      assert.equal(await p.evaluate('navigator.clipboard.readText()'), uri);
      await admin.assertClean('reveal and rotate');
    },
  );

  await step(t, 'the admin runs an explorer query, sees rows, downloads the CSV', async () => {
    const p = admin.page;
    await p
      .getByRole('navigation', { name: 'Database sections' })
      .getByRole('link', { name: 'Explorer' })
      .click();
    const editor = p.getByRole('textbox', { name: 'SQL query' });
    await editor.click();
    await p.keyboard.press('ControlOrMeta+a');
    await editor.fill(`SELECT 1 AS n, 'a,b' AS label UNION ALL SELECT 2, 'say "hi"'`);
    await p.getByRole('button', { name: 'Run query' }).click();
    const results = p.getByRole('table', { name: 'Query results' });
    await results.getByRole('row').nth(2).waitFor();
    assert.equal(await results.getByRole('row').count(), 3, 'a header row and two rows');
    await p
      .getByRole('status')
      .filter({ hasText: /^2 rows in/ })
      .waitFor();
    await checkPage(admin, 'Explorer', 'database-explorer', 2);
    const [download] = await Promise.all([
      p.waitForEvent('download', { timeout: 10_000 }),
      p.getByRole('button', { name: 'Download CSV' }).click(),
    ]);
    const csv = await readFile(await download.path(), 'utf8');
    assert.equal(csv.replace(/\r\n/g, '\n').trim(), 'n,label\n1,"a,b"\n2,"say ""hi"""');
    assert.match(download.suggestedFilename(), /\.csv$/);
    await admin.assertClean('explorer');
  });

  await step(t, 'the admin creates a key that works, then revokes it', async () => {
    const p = admin.page;
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'API keys' }).click();
    await field(p, 'Name').fill('ci');
    await confirmingIfAsked(
      admin,
      /\/v1\/keys$/,
      () => p.getByRole('button', { name: 'Create key' }).click(),
      field(p, 'New API key'),
    );
    const key = await field(p, 'New API key').inputValue();
    const asKey = accountApi(stack, key);
    assert.equal((await asKey('GET', `/v1/databases/${DB}`)).status, 200, 'the new key works');
    await p.getByRole('button', { name: 'Done' }).click();
    await checkPage(admin, 'API keys', 'api-keys');
    await p.getByRole('button', { name: 'Revoke ci' }).click();
    await p.getByRole('dialog', { name: 'Revoke key ci?' }).getByRole('button', { name: 'Revoke' }).click();
    await p.getByRole('dialog').waitFor({ state: 'detached' });
    assert.equal((await asKey('GET', `/v1/databases/${DB}`)).status, 401, 'the revoked key is refused');
    await admin.assertClean('keys');
  });

  await step(t, 'the admin verifies the audit chain and finds the reveals in the log', async () => {
    const p = admin.page;
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Audit log' }).click();
    await p.getByRole('table', { name: 'Audit events' }).getByRole('row').nth(1).waitFor();
    await p.getByRole('button', { name: 'Verify chain' }).click();
    await p
      .getByRole('status')
      .filter({ hasText: /^Chain verified: intact/ })
      .waitFor({ timeout: 15_000 });
    // The reveals are in the log: filtered by action, only they are listed (the page's two, the API's one).
    await field(p, 'Action').fill('database.credentials_revealed');
    await p.getByRole('button', { name: 'Apply filters' }).click();
    const rows = p.getByRole('table', { name: 'Audit events' }).getByRole('row');
    await waitFor('only the reveals listed', async () => {
      const texts = (await rows.allTextContents()).slice(1);
      return texts.length >= 3 && texts.every((x) => x.includes('database.credentials_revealed'));
    });
    await checkPage(admin, 'Audit log', 'audit-log');
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Databases' }).click();
    await p.getByRole('table', { name: 'Databases' }).getByRole('link', { name: DB }).waitFor();
    await checkPage(admin, 'Databases', 'databases-list');
  });

  await step(t, 'the admin invites a member; a second browser redeems it and sees the database', async () => {
    const p = admin.page;
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Admin' }).click();
    await p
      .getByRole('navigation', { name: 'Admin sections' })
      .getByRole('link', { name: 'Invites' })
      .click();
    await p.getByRole('heading', { name: 'Invites', level: 2 }).waitFor();
    await p.getByRole('spinbutton', { name: 'Number of invites' }).fill('1');
    await p.getByRole('combobox', { name: 'Role' }).selectOption('member');
    await confirmingIfAsked(
      admin,
      /\/v1\/invites$/,
      () => p.getByRole('button', { name: 'Create invites' }).click(),
      p.getByRole('region', { name: 'New invite links' }),
    );
    // Shown once as text, with a copy button: both give the same link.
    const shown = await p
      .getByRole('region', { name: 'New invite links' })
      .getByRole('listitem')
      .first()
      .textContent();
    memberInviteLink = /(\S+#invite=bwi_[\w-]+)/.exec(shown ?? '')?.[1] ?? '';
    await p.getByRole('button', { name: 'Copy link 1' }).click();
    assert.equal(await p.evaluate('navigator.clipboard.readText()'), memberInviteLink);
    assert.match(memberInviteLink, new RegExp(`^${stack.url}/#invite=bwi_[\\w-]{43}$`));
    await checkPage(admin, 'Invites', 'admin-invites', 2);

    member = await guardedPage(browser, { name: 'member' });
    await redeem(member, memberInviteLink, MEMBER);
    await member.page
      .getByRole('navigation', { name: 'Main' })
      .getByRole('link', { name: 'Databases' })
      .click();
    await member.page.getByRole('table', { name: 'Databases' }).getByRole('link', { name: DB }).waitFor();
    await checkPage(member, 'Databases', 'member-databases');
    await member.page
      .getByRole('navigation', { name: 'Main' })
      .getByRole('link', { name: 'Account security' })
      .click();
    await member.page.getByRole('heading', { name: 'Account security', level: 1 }).waitFor();
  });

  await step(t, 'the admin suspends the member; the member’s session ends', async () => {
    const p = admin.page;
    await p.getByRole('navigation', { name: 'Admin sections' }).getByRole('link', { name: 'Users' }).click();
    await p.getByRole('heading', { name: 'Users', level: 2 }).waitFor();
    await p.getByRole('button', { name: `Suspend ${MEMBER.username}` }).click();
    const confirm = p.getByRole('dialog');
    if (await confirm.isVisible()) await confirm.getByRole('button', { name: /^Suspend/ }).click();
    await p.getByRole('button', { name: `Reactivate ${MEMBER.username}` }).waitFor();
    await checkPage(admin, 'Users', 'admin-users', 2);

    // The member's next request is refused, the refresh too, and the sign-in page follows: the
    // member (on a page that calls nothing by itself) opens the databases list.
    member.expect({ url: /\/v1\//, status: 401 });
    const signIn = member.page.getByRole('heading', { name: 'Sign in', level: 1 });
    await member.page
      .getByRole('navigation', { name: 'Main' })
      .getByRole('link', { name: 'Databases' })
      .click();
    await signIn.waitFor({ timeout: 15_000 });
    await checkPage(member, 'Sign in', 'sign-in');
    const me = await member.page.evaluate(`fetch('/v1/me').then((r) => r.status)`);
    assert.equal(me, 401, 'the session cookie no longer works');
    await member.assertClean('after suspension');
  });

  await step(t, 'the admin sees the nodes', async () => {
    const p = admin.page;
    await p.getByRole('navigation', { name: 'Admin sections' }).getByRole('link', { name: 'Nodes' }).click();
    await p.getByRole('table', { name: 'Nodes' }).getByRole('row').nth(1).waitFor();
    await checkPage(admin, 'Nodes', 'admin-nodes', 2);
  });

  await step(t, 'a narrow window: the pages fit, tables scroll inside their own region', async () => {
    const p = admin.page;
    await p.setViewportSize({ width: 375, height: 800 });
    const fits = async (where: string) => {
      const over = await p.evaluate('document.documentElement.scrollWidth - window.innerWidth');
      assert.ok(Number(over) <= 0, `${where}: the page is ${over} px wider than the window`);
    };
    await p.goto(`${stack.url}/databases`);
    await p.getByRole('table', { name: 'Databases' }).getByRole('link', { name: DB }).waitFor();
    await fits('databases');
    await checkPage(admin, 'Databases', 'narrow-databases');
    await p.goto(`${stack.url}/databases/${DB}`);
    await p.getByRole('heading', { name: 'Connect', level: 2 }).waitFor();
    await fits('connect');
    await checkPage(admin, 'Connect', 'narrow-database-connect', 2);
  });
});
