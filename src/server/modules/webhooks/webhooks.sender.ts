/**
 * One delivery attempt over HTTP(S): signed, sent to the address checked by ssrf.ts (the client's
 * `lookup` answers with it, so the host name is never resolved a second time), redirects never
 * followed (a 3xx is a failure), a total deadline, the first 1 KB of the answer kept.
 *
 * Connections are kept alive in a pool per (account, scheme, checked address, port, host name):
 * a socket in a pool was opened to that one checked address, so reusing it still reaches the
 * checked address (a name that now resolves elsewhere is checked again and gets another pool), the
 * TLS name is the one the socket's certificate was checked for, and no two accounts share a socket.
 */
import { createHmac } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { VERSION } from '../../../shared/version.ts';
import type { Destination } from './ssrf.ts';

/** `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, one v1 per secret (two during a rotation). */
export function signatureHeader(secrets: readonly string[], body: string, unixSeconds: number): string {
  const signed = `${unixSeconds}.${body}`;
  const v1 = secrets.map((s) => `v1=${createHmac('sha256', s).update(signed).digest('hex')}`);
  return [`t=${unixSeconds}`, ...v1].join(',');
}

export type AttemptResult = {
  ok: boolean;
  statusCode: number | null;
  error: string | null;
  durationMs: number;
  responseBody: string | null;
};

const RESPONSE_KEEP = 1024;

/** A `lookup` that answers every question with the pre-checked address. */
function pinnedLookup(address: string, family: 4 | 6): LookupFunction {
  return ((_host: string, options: { all?: boolean }, cb: (...args: unknown[]) => void) => {
    if (options?.all) cb(null, [{ address, family }]);
    else cb(null, address, family);
  }) as unknown as LookupFunction;
}

const POOL_IDLE_MS = 30_000;
const POOL_MAX = 512;

/**
 * Keep-alive agents, one per (account, scheme, checked address, port, host name). At most `max`
 * are kept: a new one first closes those idle for a while, then the least recently used idle ones
 * while there are too many. A pool with a request in flight is never closed (that would fail
 * another account's delivery); those are at most the worker's concurrency, below the bound.
 */
export class ConnectionPools {
  private readonly pools = new Map<string, { agent: http.Agent; usedAt: number }>();
  private readonly max: number;

  constructor(max = POOL_MAX) {
    this.max = max;
  }

  get size(): number {
    return this.pools.size;
  }

  agentFor(accountId: string, d: Destination): http.Agent {
    const key = `${accountId}|${d.url.protocol}|${d.address}|${d.port}|${d.host}`;
    const now = Date.now();
    let p = this.pools.get(key);
    if (p)
      this.pools.delete(key); // re-inserted below: the map stays in least recently used order
    else {
      this.sweep(now);
      const options = {
        keepAlive: true,
        maxSockets: 16,
        maxFreeSockets: 16,
        // An idle socket is closed after 4 s: before most servers' keep-alive timeout (5 s in
        // Node's), so a kept socket is rarely one the receiver is closing.
        timeout: 4_000,
        scheduling: 'lifo' as const,
      };
      p = {
        agent: d.url.protocol === 'https:' ? new https.Agent(options) : new http.Agent(options),
        usedAt: now,
      };
    }
    p.usedAt = now;
    this.pools.set(key, p);
    return p.agent;
  }

  /** Closes idle pools unused for a while, and the least recently used idle ones past the bound. */
  private sweep(now: number) {
    for (const [key, p] of this.pools) {
      const busy = Object.keys(p.agent.sockets).length > 0 || Object.keys(p.agent.requests).length > 0;
      if (busy) continue;
      if (now - p.usedAt > POOL_IDLE_MS || this.pools.size >= this.max) {
        p.agent.destroy();
        this.pools.delete(key);
      }
    }
  }

  close() {
    for (const p of this.pools.values()) p.agent.destroy();
    this.pools.clear();
  }
}

export function sendDelivery(opts: {
  destination: Destination;
  body: string;
  headers: Record<string, string>;
  timeoutMs: number;
  /** A keep-alive agent for this destination (ConnectionPools); none: a fresh connection. */
  agent?: http.Agent;
}): Promise<AttemptResult> {
  const { destination: d } = opts;
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  return new Promise((resolve) => {
    let done = false;
    const finish = (r: Omit<AttemptResult, 'durationMs'>) => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      resolve({ ...r, durationMs: elapsed() });
    };
    const client = d.url.protocol === 'https:' ? https : http;
    let req: http.ClientRequest;
    const send = (agent: http.Agent | false) => {
      req = client.request({
        protocol: d.url.protocol,
        // The name stays in the URL (Host header, TLS SNI and certificate check); the address is ours.
        hostname: d.host,
        port: d.port,
        path: `${d.url.pathname}${d.url.search}`,
        method: 'POST',
        headers: {
          ...opts.headers,
          'content-type': 'application/json',
          'content-length': String(Buffer.byteLength(opts.body)),
          'user-agent': `Bulwark-Webhooks/${VERSION}`,
        },
        lookup: pinnedLookup(d.address, d.family),
        family: d.family,
        agent,
        ...(d.url.protocol === 'https:' && !/^[0-9.]+$|:/.test(d.host) ? { servername: d.host } : {}),
      });
      const sent = req;
      sent.on('error', (err: NodeJS.ErrnoException) => {
        // A kept-alive socket the receiver closed while idle fails before any answer: send once
        // more on a new connection (to the same checked address), within the same deadline.
        if (!done && agent && sent.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
          send(false);
          return;
        }
        finish({ ok: false, statusCode: null, error: err.message.slice(0, 500), responseBody: null });
      });
      sent.on('response', onResponse);
      sent.end(opts.body);
    };
    const deadline = setTimeout(() => {
      req.destroy(new Error(`timed out after ${opts.timeoutMs} ms`));
    }, opts.timeoutMs);
    const onResponse = (res: http.IncomingMessage) => {
      const code = res.statusCode ?? 0;
      let kept = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (kept.length < RESPONSE_KEEP) kept += chunk.slice(0, RESPONSE_KEEP - kept.length);
        if (kept.length >= RESPONSE_KEEP) res.destroy();
      });
      const settle = () => {
        const ok = code >= 200 && code < 300;
        finish({
          ok,
          statusCode: code,
          error: ok
            ? null
            : code >= 300 && code < 400
              ? `redirect (${code}) not followed`
              : `answered ${code}`,
          responseBody: kept,
        });
      };
      res.on('end', settle);
      res.on('close', settle);
      res.on('error', settle);
    };
    send(opts.agent ?? false);
  });
}
