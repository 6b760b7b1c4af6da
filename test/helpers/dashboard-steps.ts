/**
 * What a dashboard walk-through test is made of: signing up from an invite link, checking a page
 * (heading, axe, screenshot, nothing broken), steps that stop the walk at the first failure with
 * what each browser saw, and a ready database holding a table.
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import pg from 'pg';
import { assertAccessible, type GuardedPage, screenshot } from './browser.ts';
import { type accountApi, sleep } from './up-stack.ts';

/** A control's accessible name starts with its label (a hint may follow it inside the label). */
export const named = (label: string) => new RegExp(`^${label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\s|$)`);

/** Redeems an invite link in the browser and lands on Account security, signed in. */
export async function redeem(g: GuardedPage, link: string, who: { username: string; password: string }) {
  const undo = g.expect({ method: 'GET', url: /\/v1\/me$/, status: 401 });
  await g.page.goto(link);
  await g.page.getByRole('heading', { name: 'Redeem your invite', level: 1 }).waitFor();
  await g.page.getByRole('textbox', { name: named('Username') }).fill(who.username);
  await g.page.getByLabel(named('Password')).fill(who.password);
  await g.page.getByLabel(named('Confirm password')).fill(who.password);
  await g.page.getByRole('button', { name: 'Create account' }).click();
  await g.page.getByRole('heading', { name: 'Account security', level: 1 }).waitFor();
  undo();
}

/** A page's heading shown, nothing broken so far, no serious axe finding, a screenshot. */
export async function checkPage(g: GuardedPage, heading: string | RegExp, shot: string, level = 1) {
  await g.page.getByRole('heading', { name: heading, level }).first().waitFor();
  await assertAccessible(g.page, shot);
  await screenshot(g.page, shot);
  await g.assertClean(shot);
}

/**
 * Steps of one walk-through, each bounded by `stepMs`; after a failed step the rest are skipped
 * (they build on it), and the failure carries a screenshot and the problems of each browser.
 */
export function walkthrough(
  prefix: string,
  stepMs: number,
  browsers: () => [string, GuardedPage | undefined][],
) {
  let broken = '';
  return (t: TestContext, name: string, fn: () => Promise<void>): Promise<void> => {
    const skip = broken ? `an earlier step failed: ${broken}` : false;
    return t.test(name, { timeout: stepMs, skip }, async () => {
      try {
        await fn();
      } catch (err) {
        broken = name;
        const seen: string[] = [];
        for (const [who, g] of browsers()) {
          if (!g) continue;
          await screenshot(g.page, `failed-${prefix}-${who}`).catch(() => {});
          seen.push(...g.problems().map((x) => `  - [${x.kind}] ${x.detail}`));
        }
        if (seen.length && err instanceof Error)
          err.message += `\nthe browsers also saw:\n${seen.join('\n')}`;
        throw err;
      }
    });
  };
}

/**
 * A database made through the API (waited for, 60 s at most), and a client of its owner through
 * the pooler with `setupSql` run; the caller ends the client.
 */
export async function databaseWithTable(
  api: ReturnType<typeof accountApi>,
  poolerPort: number,
  name: string,
  setupSql: string,
): Promise<pg.Client> {
  const created = await api('POST', '/v1/databases', { name });
  assert.equal(created.status, 202, JSON.stringify(created.json));
  const deadline = Date.now() + 60_000;
  for (;;) {
    const d = (await api('GET', `/v1/databases/${name}`)).json;
    if (d.status === 'ready') break;
    assert.notEqual(d.status, 'failed', `create ${name} failed: ${d.failure_reason}`);
    assert.ok(Date.now() < deadline, `${name} not ready in 60 s (${d.status})`);
    await sleep(100);
  }
  const conn = (await api('GET', `/v1/databases/${name}/connection`)).json;
  const { password } = (await api('POST', `/v1/databases/${name}/credentials/reveal`)).json;
  const client = new pg.Client({
    host: '127.0.0.1',
    port: poolerPort,
    user: conn.user,
    database: conn.database,
    password,
    connectionTimeoutMillis: 5_000,
  });
  client.on('error', () => {});
  await client.connect();
  await client.query(setupSql);
  return client;
}
