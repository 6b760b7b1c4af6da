/**
 * Webhooks in the dashboard (issue 18), in Debian's headless Chromium against a real `bulwark up`
 * allowed to reach a local receiver (BULWARK_WEBHOOK_ALLOWED_HOSTS=127.0.0.1): the first admin adds
 * a webhook with the event picker and sees its signing secret once; "Send a test" reaches the
 * receiver signed with that secret; the delivery log shows it succeeded with its code, duration and
 * attempts; "Redeliver" sends it again; "Rotate secret" shows a new secret once; the list disables
 * and deletes it (asked first). Each page fails the test on a console error, an undeclared ≥ 400
 * response or a CSP violation, and on serious axe findings (test/helpers/browser.ts).
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { type GuardedPage, guardedPage, launchChromium } from './helpers/browser.ts';
import { checkPage, named, redeem, walkthrough } from './helpers/dashboard-steps.ts';
import { accountApi, operatorKey, startUpStack, type UpStack } from './helpers/up-stack.ts';
import { waitFor } from './helpers/wait.ts';

const ADMIN = { username: 'wes_admin', password: 'copper-fjord-lantern-81' };
const STEP_MS = 120_000;

type Received = { headers: IncomingHttpHeaders; body: string };

let stack: UpStack;
let firstAdminLink = '';
let receiver: Server;
let hookUrl = '';
const received: Received[] = [];
let browser: Browser;
let admin: GuardedPage;
let api: ReturnType<typeof accountApi>;
let secret = '';
let webhookId = '';

before(async () => {
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.setHeader('content-type', 'text/plain');
      res.end('thanks from the receiver');
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/bulwark-hook`;
  stack = await startUpStack({ env: { BULWARK_WEBHOOK_ALLOWED_HOSTS: '127.0.0.1' } });
  const m = /first admin: open {2}(\S+#invite=bwi_[\w-]+)/.exec(stack.output());
  assert.ok(m, `no first-admin link in the output of bulwark up:\n${stack.output()}`);
  firstAdminLink = m[1]!;
  browser = await launchChromium();
  api = accountApi(stack, await operatorKey(stack, 'default'));
});

after(async () => {
  await admin?.close();
  await browser?.close().catch(() => {});
  await stack?.destroy();
  receiver?.closeAllConnections();
  await new Promise<void>((resolve) => (receiver ? receiver.close(() => resolve()) : resolve()));
});

/** The receiver's view of a delivery: signed with `key` (one of the v1 values) over "<t>.<body>". */
function signedWith(r: Received, key: string): boolean {
  const header = String(r.headers['bulwark-signature'] ?? '');
  const t = /(?:^|,)t=(\d+)/.exec(header)?.[1];
  if (!t) return false;
  const mac = createHmac('sha256', key).update(`${t}.${r.body}`).digest('hex');
  return header.split(',').includes(`v1=${mac}`);
}

const step = walkthrough('webhooks', STEP_MS, () => [['admin', admin]]);

test('webhooks in the dashboard', { timeout: 600_000 }, async (t) => {
  await step(t, 'the admin signs up', async () => {
    admin = await guardedPage(browser, { name: 'admin' });
    await redeem(admin, firstAdminLink, ADMIN);
  });

  await step(t, 'the admin adds a webhook with the event picker and sees its secret once', async () => {
    const p = admin.page;
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Webhooks' }).click();
    await p.getByRole('heading', { name: 'Webhooks', level: 1 }).waitFor();
    await p.getByText('No webhooks yet.', { exact: false }).waitFor();
    await p.getByRole('textbox', { name: named('Payload URL') }).fill(hookUrl);
    await p.getByRole('textbox', { name: named('Description (optional)') }).fill('the test receiver');
    // Nothing chosen: refused as typed, before anything is sent.
    await p.getByRole('button', { name: 'Add webhook' }).click();
    await p.getByText('Choose at least one event').waitFor();
    await p.getByRole('checkbox', { name: 'Every event (*)' }).check();
    await p.getByRole('button', { name: 'Add webhook' }).click();
    const shown = p.getByRole('textbox', { name: 'Signing secret' });
    await shown.waitFor();
    secret = await shown.inputValue();
    assert.match(secret, /^whsec_/);
    await checkPage(admin, 'Webhooks', 'webhooks-secret');
    await p.getByRole('button', { name: 'Done' }).click();
    assert.equal(await p.getByRole('textbox', { name: 'Signing secret' }).count(), 0);
    const listed = (await api('GET', '/v1/webhooks')).json.items;
    assert.equal(listed.length, 1);
    webhookId = listed[0].id;
    assert.deepEqual([listed[0].url, listed[0].events, listed[0].enabled], [hookUrl, ['*'], true]);
    const row = p.getByRole('table', { name: 'Webhooks' }).getByRole('row').nth(1);
    await row.getByText(`…${secret.slice(-4)}`).waitFor();
    assert.ok(!(await p.content()).includes(secret), 'the secret is gone from the page');
    await checkPage(admin, 'Webhooks', 'webhooks-list');
  });

  await step(
    t,
    'a test reaches the receiver signed; the log shows it; redeliver sends it again',
    async () => {
      const p = admin.page;
      await p.getByRole('link', { name: hookUrl }).click();
      await p.getByRole('heading', { name: `Webhook ${hookUrl}`, level: 1 }).waitFor();
      await p.getByRole('button', { name: 'Send a test' }).click();
      await p.getByRole('status').filter({ hasText: 'Test event queued' }).waitFor();
      const first = await waitFor('the test delivery at the receiver', () => received[0], {
        timeoutMs: 30_000,
      });
      assert.equal(first.headers['bulwark-event'], 'webhook.test');
      assert.ok(signedWith(first, secret), 'signed with the secret the page showed');
      assert.ok(!signedWith(first, `${secret}x`));
      const table = p.getByRole('table', { name: 'Deliveries' });
      await waitFor(
        'the delivery logged as succeeded',
        async () => {
          await p.getByRole('button', { name: 'Refresh' }).click();
          return (await table.getByText('succeeded', { exact: true }).count()) > 0;
        },
        { timeoutMs: 30_000, everyMs: 500 },
      );
      const cells = (await table.getByRole('row').nth(1).getByRole('cell').allInnerTexts()).join(' | ');
      assert.match(cells, /succeeded \| 200 \| \d+ ms \| 1 \/ \d+ \|/);
      assert.match(cells, /thanks from the receiver/);
      await checkPage(admin, `Webhook ${hookUrl}`, 'webhook-deliveries');
      await table
        .getByRole('row')
        .nth(1)
        .getByRole('button', { name: /^Redeliver/ })
        .click();
      await p.getByRole('status').filter({ hasText: 'Delivery queued again' }).waitFor();
      const again = await waitFor('the redelivery at the receiver', () => received[1], { timeoutMs: 30_000 });
      assert.equal(again.headers['bulwark-event'], 'webhook.test');
      assert.notEqual(again.headers['bulwark-delivery'], first.headers['bulwark-delivery']);
    },
  );

  await step(t, 'rotating shows a new secret once', async () => {
    const p = admin.page;
    await p.getByRole('button', { name: 'Rotate secret' }).click();
    const dialog = p.getByRole('dialog', { name: 'Rotate the signing secret?' });
    await dialog.getByRole('button', { name: 'Rotate secret' }).click();
    const shown = p.getByRole('textbox', { name: 'Signing secret' });
    await shown.waitFor();
    const next = await shown.inputValue();
    assert.match(next, /^whsec_/);
    assert.notEqual(next, secret);
    await p.getByRole('button', { name: 'Done' }).click();
    const w = (await api('GET', `/v1/webhooks/${webhookId}`)).json;
    assert.equal(w.secret_hint, next.slice(-4));
    assert.ok(w.secret_rotated_at);
  });

  await step(t, 'the list disables and deletes it', async () => {
    const p = admin.page;
    await p.getByRole('link', { name: 'All webhooks' }).click();
    const row = p.getByRole('table', { name: 'Webhooks' }).getByRole('row').nth(1);
    await row.getByRole('button', { name: /^Disable/ }).click();
    await row.getByText('Disabled', { exact: true }).waitFor();
    assert.equal((await api('GET', `/v1/webhooks/${webhookId}`)).json.enabled, false);
    await row.getByRole('button', { name: /^Delete/ }).click();
    await p
      .getByRole('dialog', { name: 'Delete this webhook?' })
      .getByRole('button', { name: 'Delete webhook' })
      .click();
    await p.getByText('No webhooks yet.', { exact: false }).waitFor();
    assert.equal((await api('GET', `/v1/webhooks/${webhookId}`)).status, 404);
  });
});
