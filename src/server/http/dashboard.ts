/**
 * The dashboard, served by the server itself on the API's origin: the built single-page app
 * (`dashboardDir`, default web/dist).
 *
 * - `/assets/<name>`: the build's hashed files, cached for a year (`immutable`): a new build has
 *   new names. Names are checked against a strict pattern (no `..`, no `/`, no `\`, no NUL, no
 *   leading dot) before any file system call, and the resolved real path must stay inside the
 *   assets directory (no symlink leaves it). Unknown names and types are 404, never index.html.
 * - `/<name.ext>`: a file at the root of the build (favicon, robots.txt) when it exists.
 * - Every other GET outside the API (`/v1`, `/docs`, `/metrics`, `/health`, `/ready`) is the app's
 *   own route: index.html, revalidated on every load (`no-cache`) so a new build is seen at once.
 *
 * Every answer carries the dashboard's CSP: scripts, styles, fonts and images only from this
 * origin, no inline code, no framing, connections only to this origin. Without a build, `/` is a
 * plain page saying how to make one.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { DASHBOARD_CSP } from './security-headers.ts';

/** Paths the app never answers for: the API's, whose unknown paths keep their 404. */
const NOT_THE_APP = /^\/(v1|docs|metrics|health|ready|assets)(\/|$)/;
const FILE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;
/** What an app route may look like once decoded: no control characters, no `\`, no dot segments. */
const APP_PATH = /^(?:\/(?!\.)[^\x00-\x1f\x7f\\/]{0,200}){0,20}$/;
const IMMUTABLE = 'public, max-age=31536000, immutable';
const CACHE_MAX_BYTES = 32 * 1024 * 1024;
const FILE_MAX_BYTES = 8 * 1024 * 1024;

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.webmanifest': 'application/manifest+json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.woff': 'font/woff',
  '.txt': 'text/plain; charset=utf-8',
};
/** Worth compressing (fonts and images already are). */
const COMPRESSIBLE = new Set(['.js', '.mjs', '.css', '.map', '.json', '.svg', '.txt', '.webmanifest']);

type Loaded = { body: Buffer; gzip: Buffer | null; etag: string; type: string; mtimeMs: number };

export type DashboardDeps = {
  /** The built app (index.html, assets/); null or missing: the fallback page. */
  dir: string | null;
  /** The plain page for `/` when there is no build. */
  fallbackPage: () => string;
};

export function createDashboard(deps: DashboardDeps) {
  const root = deps.dir ? path.resolve(deps.dir) : null;
  const cache = new Map<string, Loaded>();
  let cachedBytes = 0;

  /** A file inside `dir` by a checked name, or null (absent, not a regular file, outside `dir`). */
  async function load(dir: string, name: string): Promise<Loaded | null> {
    const type = TYPES[path.extname(name).toLowerCase()] ?? (name === 'index.html' ? 'text/html' : null);
    if (!FILE_NAME.test(name) || type === null) return null;
    const file = path.join(dir, name);
    let stat: Awaited<ReturnType<typeof fs.stat>>;
    let real: string;
    try {
      [stat, real] = await Promise.all([fs.stat(file), fs.realpath(file)]);
    } catch {
      return null;
    }
    if (!stat.isFile() || stat.size > FILE_MAX_BYTES) return null;
    const realDir = await fs.realpath(dir).catch(() => null);
    if (realDir === null || path.dirname(real) !== realDir) return null;
    const hit = cache.get(real);
    if (hit && hit.mtimeMs === stat.mtimeMs) return hit;
    const body = await fs.readFile(real);
    const ext = path.extname(name).toLowerCase();
    // Compressed once, for the cache only: a file the cache has no room for is sent as it is (no
    // gzip on the event loop per request).
    const room =
      cachedBytes - (hit ? hit.body.length + (hit.gzip?.length ?? 0) : 0) + body.length <= CACHE_MAX_BYTES;
    const gz = room && COMPRESSIBLE.has(ext) && body.length > 1024 ? gzipSync(body) : null;
    const loaded: Loaded = {
      body,
      gzip: gz && gz.length < body.length ? gz : null,
      etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`,
      type: name === 'index.html' ? 'text/html; charset=utf-8' : type,
      mtimeMs: stat.mtimeMs,
    };
    if (hit) cachedBytes -= hit.body.length + (hit.gzip?.length ?? 0);
    const size = body.length + (loaded.gzip?.length ?? 0);
    if (cachedBytes + size <= CACHE_MAX_BYTES) {
      cache.set(real, loaded);
      cachedBytes += size;
    } else if (hit) cache.delete(real);
    return loaded;
  }

  function send(req: FastifyRequest, reply: FastifyReply, f: Loaded, cacheControl: string) {
    const gzip = f.gzip !== null && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
    // One ETag per representation: the gzip bytes are not the identity bytes.
    const etag = gzip ? `${f.etag.slice(0, -1)}-gz"` : f.etag;
    reply
      .header('content-security-policy', DASHBOARD_CSP)
      .header('cache-control', cacheControl)
      .header('etag', etag)
      .header('vary', 'accept-encoding')
      .type(f.type);
    if (req.headers['if-none-match'] === etag) return reply.code(304).send();
    if (gzip) return reply.header('content-encoding', 'gzip').send(f.gzip);
    return reply.send(f.body);
  }

  async function index(req: FastifyRequest, reply: FastifyReply) {
    const f = root ? await load(root, 'index.html') : null;
    if (f) return send(req, reply, f, 'no-cache');
    return reply
      .header('cache-control', 'no-cache')
      .type('text/html; charset=utf-8')
      .send(deps.fallbackPage());
  }

  return {
    /** `/` and `/assets/*`. */
    routes: (async (app) => {
      const hidden = { schema: { hide: true } };
      app.get('/', hidden, index);
      app.get('/assets/*', hidden, async (req, reply) => {
        const name = (req.params as { '*': string })['*'];
        const f = root ? await load(path.join(root, 'assets'), name) : null;
        if (!f) return reply.callNotFound();
        return send(req, reply, f, IMMUTABLE);
      });
    }) satisfies FastifyPluginAsync,

    /**
     * Any other path no route matched (from the not-found handler, so the API's own refusals —
     * an unknown /v1 route, an over-long parameter — stay what they were): a GET for the app's
     * route is index.html, one for a file of the build's root is that file; true when answered.
     */
    async page(req: FastifyRequest, reply: FastifyReply): Promise<boolean> {
      if (req.method !== 'GET' && req.method !== 'HEAD') return false;
      let pathname: string;
      try {
        pathname = decodeURIComponent(req.url.split('?', 1)[0]!);
      } catch {
        return false;
      }
      if (NOT_THE_APP.test(pathname) || !APP_PATH.test(pathname)) return false;
      const rest = pathname.slice(1);
      // One segment with an extension is a file of the build's root, or nothing.
      if (!rest.includes('/') && rest.includes('.')) {
        const f = root && rest !== 'index.html' ? await load(root, rest) : null;
        if (!f) return false;
        await send(req, reply, f, 'no-cache');
        return true;
      }
      await index(req, reply);
      return true;
    },
  };
}
