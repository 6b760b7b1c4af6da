/**
 * Slack in the dashboard (issue 18), in Debian's headless Chromium against a real `bulwark up`:
 * the first admin sets up the account's Slack app on the Slack page (the bot token and signing
 * secret are write-only: after saving, the page says they are set and holds neither), then links
 * their own Slack identity from Account security: "Link Slack" shows a `/bulwark link <code>`
 * command, which this test sends to the server as Slack would (signed with the secret just
 * saved), and the page then shows the link. A member sees no Slack page in the nav. Each page fails
 * the test on a console error, an undeclared ≥ 400 response or a CSP violation, and on serious axe
 * findings (test/helpers/browser.ts).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { slackSignature } from '../src/server/modules/slack/slack.signature.ts';
import { type GuardedPage, guardedPage, launchChromium } from './helpers/browser.ts';
import { type DashboardStack, startDashboardStack } from './helpers/dashboard-stack.ts';
import { checkPage, named, redeem, walkthrough } from './helpers/dashboard-steps.ts';
import { accountApi, operatorKey } from './helpers/up-stack.ts';

const ADMIN = { username: 'sol_admin', password: 'quartz-lantern-orchid-52' };
const MEMBER = { username: 'kit_member', password: 'maple-signal-harbor-17' };
const TEAM = 'T0DASHTEAM';
const CHANNEL = 'C0DASHAPPROVE';
const BOT = 'xoxb-dashboard-test-token-1';
const SECRET = 'dashboardsigningsecret0123456789';
const STEP_MS = 120_000;

let stack: DashboardStack;
let browser: Browser;
let admin: GuardedPage;
let member: GuardedPage;
let api: ReturnType<typeof accountApi>;

before(async () => {
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

const step = walkthrough('slack', STEP_MS, () => [
  ['admin', admin],
  ['member', member],
]);

test('Slack in the dashboard', { timeout: 600_000 }, async (t) => {
  await step(t, 'an admin and a member sign up', async () => {
    const made = await api('POST', '/v1/invites', { count: 1, role: 'member' });
    assert.equal(made.status, 201, JSON.stringify(made.json));
    admin = await guardedPage(browser, { name: 'admin' });
    await redeem(admin, stack.firstAdminLink, ADMIN);
    member = await guardedPage(browser, { name: 'member' });
    await redeem(member, `${stack.url}/#invite=${made.json.invites[0].code}`, MEMBER);
  });

  await step(t, 'the admin sets up Slack; the secrets are write-only', async () => {
    const p = admin.page;
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Slack' }).click();
    await p.getByRole('heading', { name: 'Slack', level: 1 }).waitFor();
    await p.getByText('Not set up yet.', { exact: false }).waitFor();
    await p.getByRole('checkbox', { name: 'Post requests to Slack and accept approvals from it' }).check();
    // A channel id in lower case is refused as typed, before anything is sent.
    await p.getByRole('textbox', { name: named('Channel ID') }).fill('c0lower');
    await p.getByText('Upper-case letters and digits only').waitFor();
    await p.getByRole('textbox', { name: named('Channel ID') }).fill(CHANNEL);
    await p.getByRole('textbox', { name: named('Workspace (team) ID') }).fill(TEAM);
    await p.getByLabel(named('Bot token')).fill(BOT);
    await p.getByLabel(named('Signing secret')).fill(SECRET);
    // Whoever holds the signing secret can approve as anyone linked: "Confirm it's you" first.
    const reauth = p.getByRole('dialog', { name: "Confirm it's you" });
    await admin.expecting(
      { method: 'PUT', url: /\/v1\/integrations\/slack$/, status: 403, code: 'reauth_required' },
      async () => {
        await p.getByRole('button', { name: 'Save Slack settings' }).click();
        await reauth.waitFor();
      },
    );
    await reauth.getByLabel('Your password').fill(ADMIN.password);
    await reauth.getByRole('button', { name: 'Confirm' }).click();
    await p.getByRole('status').filter({ hasText: 'Saved.' }).waitFor();
    // No API key may read or change the Slack app, not even an admin key.
    assert.equal((await api('GET', '/v1/integrations/slack')).status, 403);
    assert.equal((await api('PUT', '/v1/integrations/slack', { enabled: false })).status, 403);
    await p.reload();
    await p.getByRole('heading', { name: 'Slack', level: 1 }).waitFor();
    await p.getByText('Last changed', { exact: false }).waitFor();
    assert.equal(
      await p
        .getByRole('checkbox', { name: 'Post requests to Slack and accept approvals from it' })
        .isChecked(),
      true,
    );
    assert.equal(await p.getByRole('textbox', { name: named('Workspace (team) ID') }).inputValue(), TEAM);
    assert.equal(await p.getByRole('textbox', { name: named('Channel ID') }).inputValue(), CHANNEL);
    // Set, and shown as set: the page holds neither secret any more.
    await p.getByText('Bot token (set: leave empty to keep it)').waitFor();
    await p.getByText('Signing secret (set: leave empty to keep it)').waitFor();
    const html = await p.content();
    assert.ok(!html.includes(BOT) && !html.includes(SECRET), 'no secret left in the page');
    assert.equal(await p.getByLabel(named('Bot token')).inputValue(), '');
    await checkPage(admin, 'Slack', 'slack-settings');
  });

  await step(t, 'the admin links their Slack identity with the command the page shows', async () => {
    const p = admin.page;
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Account security' }).click();
    await p.getByRole('heading', { name: 'Slack', level: 2 }).waitFor();
    await p.getByRole('button', { name: 'Link Slack' }).click();
    const command = await p.getByRole('textbox', { name: 'Command' }).inputValue();
    assert.match(command, /^\/bulwark link bwl-[a-z2-7]{26}$/);
    // Slack sends the command, signed with the app's signing secret.
    const form = new URLSearchParams({
      team_id: TEAM,
      user_id: 'U0SOLADMIN',
      channel_id: CHANNEL,
      command: '/bulwark',
      text: command.replace('/bulwark ', ''),
    }).toString();
    const ts = String(Math.floor(Date.now() / 1000));
    const sent = await fetch(`${stack.url}/v1/integrations/slack/commands`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        'x-slack-request-timestamp': ts,
        'x-slack-signature': slackSignature(SECRET, ts, form),
      },
      body: form,
    });
    assert.equal(sent.status, 200);
    assert.match(((await sent.json()) as { text: string }).text, /^Linked/);
    await p.reload();
    await p.getByText('Linked to Slack user U0SOLADMIN in workspace T0DASHTEAM', { exact: false }).waitFor();
    await checkPage(admin, 'Account security', 'slack-link');
  });

  await step(t, 'a member sees no Slack page and is told who sets it up', async () => {
    const p = member.page;
    await p.goto(`${stack.url}/databases`);
    await p.getByRole('heading', { name: 'Databases', level: 1 }).waitFor();
    const nav = p.getByRole('navigation', { name: 'Main' });
    assert.equal(await nav.getByRole('link', { name: 'Slack' }).count(), 0);
    await p.goto(`${stack.url}/integrations/slack`);
    await p.getByText('Only owners and admins of the account set up Slack.', { exact: false }).waitFor();
    await checkPage(member, 'Slack', 'slack-settings-member');
  });
});
