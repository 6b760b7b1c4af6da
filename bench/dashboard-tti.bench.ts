/**
 * The dashboard's databases list at 10,000 databases, in Debian's headless Chromium against a real
 * `bulwark up` serving the built dashboard (web/dist):
 * - time to interactive: navigation start → the list's first page rendered and the search box
 *   enabled (read in the page: `performance.now()` of the animation frame where both hold), each
 *   run in a fresh browser context (no HTTP cache: the JavaScript is fetched and compiled each time);
 * - a search round trip: a name typed into the search box (an `input` event, as typing makes) →
 *   the table shows exactly the matching database (debounce included);
 * - the JavaScript (and CSS) shipped on that first load, raw and gzipped (level 9).
 * The baseline is the same page of an account with 10 databases, in the same run, interleaved.
 *
 * The 10,000 (and the 10) databases are rows written straight into the control database (on
 * nodes of their own, disabled, so no agent acts on them) — the list pages, search and render are
 * what is measured, not provisioning. Each account's user signs up through a real invite; the
 * browser gets the session cookies the server set.
 *
 *   node bench/dashboard-tti.bench.ts [runs=7]
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import type { Browser, BrowserContext } from 'playwright-core';
import { launchChromium } from '../test/helpers/browser.ts';
import { accountApi, operatorKey, startUpStack } from '../test/helpers/up-stack.ts';
import { summarize } from './stats.ts';

const RUNS = Number(process.argv[2] ?? 7);
type SignedIn = Awaited<ReturnType<BrowserContext['storageState']>>;
const BIG = 10_000;
const SMALL = 10;
const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');
if (!existsSync(path.resolve(import.meta.dirname, '../web/dist/index.html'))) {
  process.stderr.write('build the dashboard first: node scripts/build-web.ts\n');
  process.exit(2);
}

const stack = await startUpStack();
const url = `http://127.0.0.1:${stack.ports.server}`;
let browser: Browser | undefined;
try {
  // A real database gives the rows a real shape (limits, a sealed password).
  await stack.createDatabase('shape');
  const control = await stack.control();
  const shape = (
    await control.query<{ limits: unknown; password_sealed: string }>(
      "SELECT limits, password_sealed FROM databases WHERE name = 'shape'",
    )
  ).rows[0]!;
  browser = await launchChromium();
  const b = browser;
  const signUp = async (account: string, count: number) => {
    const { stdout } = await promisify(execFile)(process.execPath, [
      CLI,
      'admin',
      'invite',
      '--account',
      account,
      '--role',
      'owner',
      '--data-dir',
      stack.dir,
      '--json',
    ]);
    const { code } = JSON.parse(stdout) as { code: string };
    // Signed up by the browser itself (a fetch from the dashboard's origin), so the cookies are
    // exactly those the browser keeps; each measured context starts from them.
    const ctx = await b.newContext();
    const page = await ctx.newPage();
    await page.goto(`${url}/sign-in`);
    const status = await page.evaluate(`fetch('/v1/auth/invites/redeem', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(${JSON.stringify({ code, username: `bench_${account}`, password: 'bench-lantern-harbour-77', session: 'cookie' })}),
    }).then((r) => r.status)`);
    if (status !== 201) throw new Error(`redeem: ${status}`);
    const state = await ctx.storageState();
    await ctx.close();
    const accountId = (
      await control.query<{ id: string }>('SELECT id FROM accounts WHERE name = $1', [account])
    ).rows[0]!.id;
    // A node of its own per account (names are unique per node), disabled: no agent acts on it.
    const node = (
      await control.query<{ id: string }>(
        "INSERT INTO nodes (name, status) VALUES ($1, 'disabled') RETURNING id",
        [`seed-${account}`],
      )
    ).rows[0]!.id;
    const started = Date.now();
    await control.query(
      `INSERT INTO databases (id, account_id, node_id, name, status, password_sealed, limits, ready_at)
       SELECT gen_random_uuid(), $1, $2, 'tenant_' || lpad(i::text, 5, '0'), 'ready', $3, $4, now()
       FROM generate_series(0, $5 - 1) AS i`,
      [accountId, node, shape.password_sealed, JSON.stringify(shape.limits), count],
    );
    process.stdout.write(`seeded ${count} databases in ${account} (${Date.now() - started} ms)\n`);
    return state;
  };
  const big = await signUp('big', BIG);
  const small = await signUp('small', SMALL);
  await control.query('ANALYZE databases');
  await control.end();

  // The list route alone (first page, and a search), with an admin key of each account.
  const apiMs = {
    big: [] as number[],
    small: [] as number[],
    bigSearch: [] as number[],
    smallSearch: [] as number[],
  };
  const asBig = accountApi(stack, await operatorKey(stack, 'big'));
  const asSmall = accountApi(stack, await operatorKey(stack, 'small'));
  const time = async (call: () => Promise<{ status: number }>, into: number[]) => {
    const t0 = performance.now();
    const r = await call();
    if (r.status !== 200) throw new Error(`list: ${r.status}`);
    into.push(performance.now() - t0);
  };
  for (let i = 0; i < 30; i++) {
    await time(() => asBig('GET', '/v1/databases?limit=50'), apiMs.big);
    await time(() => asSmall('GET', '/v1/databases?limit=50'), apiMs.small);
    await time(
      () => asBig('GET', `/v1/databases?limit=50&q=${String(i * 331).padStart(5, '0')}`),
      apiMs.bigSearch,
    );
    await time(() => asSmall('GET', `/v1/databases?limit=50&q=0000${i % SMALL}`), apiMs.smallSearch);
  }

  // Polled on every animation frame, in the page (evaluated over the DevTools protocol: the CSP
  // forbids eval, so waitForFunction's string predicates cannot run there).
  const READY = `new Promise((resolve, reject) => {
    const tick = () => {
      const box = document.querySelector('input[type="search"]');
      const table = [...document.querySelectorAll('table')].find((t) => t.caption?.textContent?.trim() === 'Databases');
      const rows = table?.tBodies[0]?.rows.length ?? 0;
      if (box && !box.disabled && rows >= ${SMALL}) resolve(performance.now());
      else if (performance.now() > 30000) reject(new Error('the list was not interactive in 30 s'));
      else requestAnimationFrame(tick);
    };
    tick();
  })`;
  const search = (q: string) => `(async () => {
    const box = document.querySelector('input[type="search"]');
    const table = [...document.querySelectorAll('table')].find((t) => t.caption?.textContent?.trim() === 'Databases');
    const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
    const t0 = performance.now();
    box.focus();
    set.call(box, ${JSON.stringify(q)});
    box.dispatchEvent(new Event('input', { bubbles: true }));
    return await new Promise((resolve, reject) => {
      const tick = () => {
        const rows = [...(table.tBodies[0]?.rows ?? [])];
        if (rows.length === 1 && rows[0].textContent.includes(${JSON.stringify(q)})) resolve(performance.now() - t0);
        else if (performance.now() - t0 > 10000) reject(new Error('search did not settle in 10 s'));
        else requestAnimationFrame(tick);
      };
      tick();
    });
  })()`;

  type Run = { tti: number; search: number; jsRaw: number; jsGzip: number; cssRaw: number; cssGzip: number };
  const measure = async (state: SignedIn, target: string): Promise<Run> => {
    const ctx = await b.newContext({ storageState: state });
    try {
      const page = await ctx.newPage();
      page.setDefaultTimeout(30_000);
      // What the first load fetched (up to the interactive frame); a body still arriving when the
      // context closes counts as nothing.
      const bodies: Promise<{ kind: string; bytes: Buffer }>[] = [];
      page.on('response', (r) => {
        const kind = r.request().resourceType();
        if (kind === 'script' || kind === 'stylesheet')
          bodies.push(
            r.body().then(
              (bytes) => ({ kind, bytes }),
              () => ({ kind, bytes: Buffer.alloc(0) }),
            ),
          );
      });
      await page.goto(`${url}/databases`, { waitUntil: 'commit' });
      const tti = Number(await page.evaluate(READY));
      const loaded = await Promise.all(bodies.slice());
      const sum = (kind: string, f: (b: Buffer) => number) =>
        loaded.filter((x) => x.kind === kind).reduce((n, x) => n + f(x.bytes), 0);
      const gz = (buf: Buffer) => gzipSync(buf, { level: 9 }).length;
      const searchMs = Number(await page.evaluate(search(target)));
      return {
        tti,
        search: searchMs,
        jsRaw: sum('script', (x) => x.length),
        jsGzip: sum('script', gz),
        cssRaw: sum('stylesheet', (x) => x.length),
        cssGzip: sum('stylesheet', gz),
      };
    } finally {
      await ctx.close();
    }
  };

  await measure(small, 'tenant_00007'); // warm-up: the server's first queries, Chromium's first start
  const runs: { big: Run[]; small: Run[] } = { big: [], small: [] };
  for (let i = 0; i < RUNS; i++) {
    runs.big.push(await measure(big, `tenant_${String((1000 + i * 977) % BIG).padStart(5, '0')}`));
    runs.small.push(await measure(small, `tenant_0000${i % SMALL}`));
  }
  const med = (xs: Run[], k: keyof Run) => summarize(xs.map((x) => x[k])).median;
  const result = {
    runs: RUNS,
    tti_ms: { big: med(runs.big, 'tti'), small: med(runs.small, 'tti') },
    search_ms: { big: med(runs.big, 'search'), small: med(runs.small, 'search') },
    tti_ratio: med(runs.big, 'tti') / med(runs.small, 'tti'),
    /** The list route alone (50 rows; a name search), median of 30, from Node with a key. */
    api_ms: {
      big: summarize(apiMs.big).median,
      small: summarize(apiMs.small).median,
      big_search: summarize(apiMs.bigSearch).median,
      small_search: summarize(apiMs.smallSearch).median,
    },
    search_ratio: med(runs.big, 'search') / med(runs.small, 'search'),
    first_load: {
      js_bytes: runs.big[0]!.jsRaw,
      js_gzip_bytes: runs.big[0]!.jsGzip,
      css_bytes: runs.big[0]!.cssRaw,
      css_gzip_bytes: runs.big[0]!.cssGzip,
    },
    all: runs,
  };
  const f = (n: number) => n.toFixed(1);
  process.stdout.write(
    `time to interactive, /databases: ${BIG} databases median ${f(result.tti_ms.big)} ms, ` +
      `${SMALL} databases ${f(result.tti_ms.small)} ms (×${result.tti_ratio.toFixed(2)})\n` +
      `search round trip: ${f(result.search_ms.big)} ms vs ${f(result.search_ms.small)} ms ` +
      `(×${result.search_ratio.toFixed(2)}; the page waits 250 ms after the last keystroke)\n` +
      `list route alone: first page ${f(result.api_ms.big)} vs ${f(result.api_ms.small)} ms, search ` +
      `${f(result.api_ms.big_search)} vs ${f(result.api_ms.small_search)} ms\n` +
      `first load: JavaScript ${(result.first_load.js_bytes / 1024).toFixed(1)} KiB, ` +
      `${(result.first_load.js_gzip_bytes / 1024).toFixed(1)} KiB gzipped (goal < 250 KB); CSS ` +
      `${(result.first_load.css_gzip_bytes / 1024).toFixed(1)} KiB gzipped\n`,
  );
  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  await browser?.close().catch(() => {});
  await stack.destroy();
}
