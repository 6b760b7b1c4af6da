/**
 * Builds the dashboard (web/) with Vite into web/dist: hashed, long-cacheable names under assets/,
 * nothing inlined (the CSP allows only 'self' scripts and styles). Cached: web/.build-stamp holds a
 * hash of every input (web sources, the generated API schema, the lockfile, this script); when it
 * matches and web/dist exists, nothing is done. The new dist replaces the old one in one rename, so
 * a running server never serves half a build. `--force` rebuilds anyway.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';

const root = path.resolve(import.meta.dirname, '..');
const web = path.join(root, 'web');
const DIST = path.join(web, 'dist');
const STAMP = path.join(web, '.build-stamp');
const SKIP = new Set(['dist', 'node_modules', '.build-stamp']);

/** Every input file, sorted: web/ (not its outputs), the lockfile, this script. */
function inputs(): string[] {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (SKIP.has(e.name) || e.name.startsWith('.dist-')) continue;
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) files.push(p);
    }
  };
  walk(web);
  files.push(path.join(root, 'package-lock.json'), import.meta.filename);
  return files.sort();
}

function inputHash(): string {
  const h = createHash('sha256');
  for (const f of inputs()) {
    h.update(path.relative(root, f));
    h.update('\0');
    h.update(fs.readFileSync(f));
    h.update('\0');
  }
  return h.digest('hex');
}

type BuildStamp = {
  hash: string;
  built_at: string;
  /** Gzipped bytes of the JavaScript index.html loads (entry + modulepreloads). */
  first_load_js_gzip_bytes: number;
  first_load_js_files: string[];
  /** The files this build made under assets/ (the next build keeps them for pages still open). */
  assets?: string[];
};

function readStamp(): BuildStamp | null {
  try {
    return JSON.parse(fs.readFileSync(STAMP, 'utf8')) as BuildStamp;
  } catch {
    return null;
  }
}

/** The JavaScript a first visit downloads: what index.html references (lazy chunks excluded). */
function firstLoad(dist: string): { bytes: number; files: string[] } {
  const html = fs.readFileSync(path.join(dist, 'index.html'), 'utf8');
  const files = [...html.matchAll(/(?:src|href)="\/(assets\/[^"]+\.js)"/g)].map((m) => m[1] as string);
  let bytes = 0;
  for (const f of files) bytes += gzipSync(fs.readFileSync(path.join(dist, f)), { level: 9 }).length;
  return { bytes, files };
}

async function viteBuild(outDir: string): Promise<void> {
  const [{ build }, { default: react }] = await Promise.all([import('vite'), import('@vitejs/plugin-react')]);
  await build({
    root: web,
    base: '/',
    configFile: false,
    logLevel: 'warn',
    plugins: [react()],
    build: {
      outDir,
      emptyOutDir: true,
      assetsDir: 'assets',
      // Nothing becomes a data: URL or inline code: every asset is a file under 'self'.
      assetsInlineLimit: 0,
      modulePreload: { polyfill: false },
      target: 'es2022',
      sourcemap: false,
      reportCompressedSize: false,
      chunkSizeWarningLimit: 700,
    },
  });
}

/**
 * A page loaded before this build still imports the previous build's lazy chunks by their hashed
 * names: the previous build's assets stay beside the new ones (one generation, never more).
 */
function keepPrevious(stamp: BuildStamp | null, tmp: string): void {
  for (const name of stamp?.assets ?? []) {
    if (name.includes('/') || name.startsWith('.')) continue;
    const from = path.join(DIST, 'assets', name);
    const to = path.join(tmp, 'assets', name);
    if (fs.existsSync(from) && !fs.existsSync(to)) fs.copyFileSync(from, to);
  }
}

/** Puts the new build at DIST in one rename (another build finishing at the same moment: last one wins). */
function swapInto(tmp: string, old: string): void {
  for (let attempt = 0; ; attempt++) {
    try {
      fs.renameSync(DIST, old);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    try {
      fs.renameSync(tmp, DIST);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (attempt >= 3 || (code !== 'ENOTEMPTY' && code !== 'EEXIST')) throw err;
      fs.rmSync(old, { recursive: true, force: true });
    }
  }
}

/** Builds when an input changed (or `force`); returns whether it built. */
export async function buildWeb(
  opts: { force?: boolean; log?: (line: string) => void } = {},
): Promise<boolean> {
  const log = opts.log ?? (() => {});
  const hash = inputHash();
  const stamp = readStamp();
  if (!opts.force && stamp?.hash === hash && fs.existsSync(path.join(DIST, 'index.html'))) return false;
  const started = Date.now();
  const tmp = path.join(web, `.dist-${process.pid}`);
  const old = path.join(web, `.dist-old-${process.pid}`);
  try {
    await viteBuild(tmp);
    const first = firstLoad(tmp);
    const assets = fs.readdirSync(path.join(tmp, 'assets')).sort();
    keepPrevious(stamp, tmp);
    swapInto(tmp, old);
    const next: BuildStamp = {
      hash,
      built_at: new Date().toISOString(),
      first_load_js_gzip_bytes: first.bytes,
      first_load_js_files: first.files,
      assets,
    };
    fs.writeFileSync(STAMP, `${JSON.stringify(next, null, 2)}\n`);
    log(
      `dashboard built in ${((Date.now() - started) / 1000).toFixed(1)} s ` +
        `(first-load JS ${(first.bytes / 1024).toFixed(1)} KB gzipped)`,
    );
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.rmSync(old, { recursive: true, force: true });
  }
  return true;
}

if (import.meta.main) {
  const started = Date.now();
  try {
    const built = await buildWeb({
      force: process.argv.includes('--force'),
      log: (l) => process.stdout.write(`${l}\n`),
    });
    if (!built) process.stdout.write(`dashboard up to date (${Date.now() - started} ms)\n`);
  } catch (err) {
    process.stderr.write(`dashboard build failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}
