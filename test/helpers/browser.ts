/**
 * The dashboard's browser tests: Debian's Chromium (/usr/bin/chromium, installed by
 * `scripts/bootstrap.sh --test`) driven by playwright-core — never a browser download.
 *
 * A guarded page fails its test on anything a person would see go wrong, or that the CSP
 * stopped: a console error, an uncaught page error, a failed request, a response ≥ 400 the test
 * did not declare, a request to a non-loopback origin, and every Content Security Policy
 * violation (the `securitypolicyviolation` DOM event, reported to the test by an init script,
 * and Chromium's console message about it). The CSP is never bypassed: axe-core is evaluated
 * through the DevTools protocol (like the test's own `page.evaluate`), which is not a page
 * script, so it needs no inline <script> that the policy would — rightly — refuse.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import {
  type Browser,
  type BrowserContext,
  type BrowserContextOptions,
  chromium,
  type Page,
} from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
const root = path.resolve(import.meta.dirname, '../..');
/** Where screenshots land (gitignored). */
export const SCREENSHOT_DIR = path.join(root, 'test-output', 'screenshots');
const AXE_SOURCE_PATH = path.join(root, 'node_modules', 'axe-core', 'axe.min.js');

/** Waits inside the browser are bounded: no action or assertion waits longer than this by default. */
export const ACTION_TIMEOUT_MS = 15_000;
const NAVIGATION_TIMEOUT_MS = 20_000;

/**
 * Chromium under playwright-core. Playwright gives each launch a fresh profile
 * (`--user-data-dir` in a new directory under the OS temp dir, removed on close), so no state
 * survives from one run to the next; each context is a separate, cookie-isolated session.
 */
export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    timeout: 30_000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-dev-shm-usage',
    ],
  });
}

/** Runs `fn` with a browser that is closed afterwards, whatever happens. */
export async function withBrowser<T>(fn: (browser: Browser) => Promise<T>): Promise<T> {
  const browser = await launchChromium();
  try {
    return await fn(browser);
  } finally {
    await browser.close().catch(() => {});
  }
}

export type Problem = { kind: string; detail: string };
export type Expected = {
  method?: string;
  url: RegExp;
  status: number | ((s: number) => boolean);
  /** The API error code the body must carry (`{error: {code}}`); another code is a failure. */
  code?: string;
};

export type GuardedPage = {
  page: Page;
  context: BrowserContext;
  /** What went wrong so far (the test fails on any of it at `assertClean`). */
  problems(): Problem[];
  /**
   * Declare that a response (method + URL pattern + status) is part of the test, not a failure;
   * returns the undo.
   */
  expect(e: Expected): () => void;
  /** Like `expect`, but only while `fn` runs. */
  expecting<T>(e: Expected, fn: () => Promise<T>): Promise<T>;
  /** Declare an aborted request (e.g. a navigation that became a download) part of the test. */
  expectAbort(url: RegExp): void;
  /** Rejects with every problem seen so far (once the declared error bodies are checked). */
  assertClean(where?: string): Promise<void>;
  /** The CSP violations seen so far (also counted among the problems). */
  cspViolations(): string[];
  /** Every URL the page requested. */
  requests(): string[];
  close(): Promise<void>;
};

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** The init script: every CSP violation in any frame goes to the test through a binding. */
const CSP_LISTENER = `(() => {
  const report = globalThis.__bulwarkCspViolation;
  if (typeof report !== 'function') return;
  document.addEventListener('securitypolicyviolation', (e) => {
    const t = e.target;
    const target = t && t.nodeType === 1 ? t.outerHTML.slice(0, 160) : String(t && t.nodeName);
    report(JSON.stringify({ directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile,
      line: e.lineNumber, sample: e.sample, target }));
  });
})();`;

export async function guardedPage(
  browser: Browser,
  options: BrowserContextOptions & { name?: string } = {},
): Promise<GuardedPage> {
  const { name = 'page', ...contextOptions } = options;
  const context = await browser.newContext({ acceptDownloads: true, ...contextOptions });
  context.setDefaultTimeout(ACTION_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(NAVIGATION_TIMEOUT_MS);
  const problems: Problem[] = [];
  const csp: string[] = [];
  const requested: string[] = [];
  const expected: Expected[] = [];
  const aborts: RegExp[] = [];
  /** Bodies of declared error responses still being read (their code checked). */
  const pending: Promise<void>[] = [];
  const add = (kind: string, detail: string) => {
    problems.push({ kind, detail: `${name}: ${detail}` });
  };

  await context.exposeBinding('__bulwarkCspViolation', (_source, json: string) => {
    csp.push(json);
    add('csp-violation', json);
  });
  await context.addInitScript({ content: CSP_LISTENER });

  const page = await context.newPage();
  page.on('console', (msg) => {
    const text = msg.text();
    if (/Content[- ]Security[- ]Policy/i.test(text)) {
      csp.push(text);
      add('csp-console', text);
    } else if (msg.type() === 'error') {
      // Chromium logs every ≥ 400 response as a console error too; a declared one is not a failure.
      const m = /status of (\d{3})/.exec(text);
      const url = msg.location().url;
      if (m && expected.some((e) => matches(e, undefined, url, Number(m[1])))) return;
      add('console-error', `${text} (${url})`);
    }
  });
  page.on('pageerror', (err) => add('page-error', err.stack ?? err.message));
  // A fetch the page still had in flight when it navigated away (a `goto`, a reload, a link)
  // is cancelled by the browser with ERR_ABORTED: no one sees it fail. Each request remembers
  // how many main-frame navigations had begun when it was sent; an abort after a later one began
  // is that cancellation, not a failure.
  let navigations = 0;
  const sentAt = new WeakMap<object, number>();
  page.on('request', (req) => {
    const url = req.url();
    if (req.isNavigationRequest() && req.frame() === page.mainFrame()) navigations++;
    else sentAt.set(req, navigations);
    requested.push(url);
    if (!/^(data|blob):/.test(url) && !LOOPBACK.has(new URL(url).hostname))
      add('non-loopback-request', `${req.method()} ${url}`);
  });
  page.on('requestfailed', (req) => {
    const failure = req.failure()?.errorText ?? 'failed';
    if (failure.includes('ERR_ABORTED') && aborts.some((re) => re.test(req.url()))) return;
    const sent = sentAt.get(req);
    const leftBehind = sent !== undefined && navigations > sent;
    if (failure.includes('ERR_ABORTED') && leftBehind && ['fetch', 'xhr'].includes(req.resourceType()))
      return;
    add('request-failed', `${req.method()} ${req.url()}: ${failure}`);
  });
  page.on('response', (res) => {
    const status = res.status();
    if (status < 400) return;
    const method = res.request().method();
    const declared = expected.find((e) => matches(e, method, res.url(), status));
    if (!declared) {
      add('http-error', `${method} ${res.url()} → ${status}`);
      return;
    }
    if (declared.code === undefined) return;
    const want = declared.code;
    pending.push(
      res.text().then(
        (text) => {
          let code: string | undefined;
          try {
            code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
          } catch {}
          if (code !== want)
            add('http-error', `${method} ${res.url()} → ${status} ${code}, expected ${want}`);
        },
        () => {},
      ),
    );
  });

  const guard: GuardedPage = {
    page,
    context,
    problems: () => [...problems],
    expect(e) {
      expected.push(e);
      return () => {
        const i = expected.indexOf(e);
        if (i >= 0) expected.splice(i, 1);
      };
    },
    async expecting(e, fn) {
      const undo = guard.expect(e);
      try {
        return await fn();
      } finally {
        // Late console lines about the same response arrive after the call: keep the
        // declaration a moment longer, then drop it.
        await new Promise((r) => setTimeout(r, 100));
        undo();
      }
    },
    expectAbort: (url) => aborts.push(url),
    async assertClean(where) {
      await Promise.all(pending);
      if (problems.length === 0) return;
      const list = problems.map((p) => `  - [${p.kind}] ${p.detail}`).join('\n');
      throw new Error(`the browser saw problems${where ? ` (${where})` : ''}:\n${list}`);
    },
    cspViolations: () => [...csp],
    requests: () => [...requested],
    close: () => context.close().catch(() => {}),
  };
  return guard;
}

function matches(e: Expected, method: string | undefined, url: string, status: number): boolean {
  if (method && e.method && e.method.toUpperCase() !== method.toUpperCase()) return false;
  if (!e.url.test(url)) return false;
  return typeof e.status === 'number' ? e.status === status : e.status(status);
}

let axeSource: string | undefined;

export type AxeViolation = { id: string; impact: string; help: string; nodes: string[] };

/**
 * axe-core on the page as it is now; returns the serious and critical violations. The source is
 * evaluated through the DevTools protocol (not a <script> element), so the page's CSP is neither
 * loosened nor tripped.
 */
export async function axeSerious(page: Page): Promise<AxeViolation[]> {
  axeSource ??= readFileSync(AXE_SOURCE_PATH, 'utf8');
  const loaded = await page.evaluate('typeof globalThis.axe === "object"');
  if (!loaded) await page.evaluate(`${axeSource}\n;void 0`);
  const json = await page.evaluate(`(async () => {
    const r = await globalThis.axe.run(document, { resultTypes: ['violations'] });
    return JSON.stringify(r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ')) })));
  })()`);
  const all = JSON.parse(String(json)) as AxeViolation[];
  return all.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

/** Fails with a readable list when axe finds a serious or critical violation. */
export async function assertAccessible(page: Page, where: string): Promise<void> {
  const found = await axeSerious(page);
  if (found.length === 0) return;
  const list = found.map((v) => `  - ${v.impact} ${v.id}: ${v.help} (${v.nodes.join(', ')})`).join('\n');
  throw new Error(`accessibility (${where}): ${found.length} serious/critical violation(s):\n${list}`);
}

/** A full-page PNG under test-output/screenshots/<name>.png; returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true, animations: 'disabled', timeout: ACTION_TIMEOUT_MS });
  return file;
}
