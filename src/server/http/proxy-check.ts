/**
 * Trusted-proxy sanity. Per-IP budgets (failed authentications, unauthenticated requests) key
 * on `req.ip`. Behind a reverse proxy that the server does not trust, every client shares the
 * proxy's address: one client's failures then lock out the rest. Trusting every peer instead
 * (`BULWARK_TRUST_PROXY=true`) lets any client choose its address with `X-Forwarded-For`.
 * Both are warned about: the second at start, the first once per peer address when a request
 * arrives carrying `X-Forwarded-For` from a peer whose header was ignored.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { parseCidr } from '../../shared/cidr.ts';
import type { ServerConfig } from '../config.ts';

/** Named ranges Fastify's proxy-addr knows, passed through as they are. */
const NAMED_RANGES = new Set(['loopback', 'linklocal', 'uniquelocal']);

/**
 * `BULWARK_TRUST_PROXY` as a list (`10.0.0.5`, `10.0.0.0/24,::1`): each entry an address, a CIDR
 * or a named range, returned in our canonical CIDR spellings (`10.0.0.5/32,::1/128`); throws on
 * anything else. Fastify hands the list to proxy-addr, which reads addresses with ipaddr.js's
 * lenient parser (`010.0.0.5` would trust 8.0.0.5): `parseCidr`'s rules apply here too.
 */
export function parseTrustedProxies(raw: string): string {
  return raw
    .split(',')
    .map((entry) => {
      const e = entry.trim();
      if (NAMED_RANGES.has(e)) return e;
      try {
        return parseCidr(e.includes('/') ? e : `${e}/${e.includes(':') ? 128 : 32}`);
      } catch {
        throw new Error(`not an address, a CIDR or ${[...NAMED_RANGES].join('/')}: "${e}"`);
      }
    })
    .join(',');
}

/** Distinct untrusted peers remembered (each is warned about once); past it, no more warnings. */
const MAX_PEERS_WARNED = 100;

export function registerProxyCheck(
  app: FastifyInstance,
  deps: { trustProxy: ServerConfig['trustProxy']; log: Logger },
): void {
  if (deps.trustProxy === true) {
    deps.log.warn(
      { event: 'proxy.trust_all' },
      'BULWARK_TRUST_PROXY=true trusts X-Forwarded-For from every peer: any client can choose the address its ' +
        'rate limits and audit events are keyed on. List the proxy addresses instead (e.g. BULWARK_TRUST_PROXY=10.0.0.5).',
    );
    return;
  }
  const warned = new Set<string>();
  app.addHook('onRequest', async (req) => {
    if (req.headers['x-forwarded-for'] === undefined) return;
    const peer = req.socket.remoteAddress ?? 'unknown';
    // A trusted proxy's header moved req.ip off the peer address; otherwise the header was ignored.
    if (req.ip !== peer || warned.has(peer) || warned.size >= MAX_PEERS_WARNED) return;
    warned.add(peer);
    deps.log.warn(
      { reqId: req.id, event: 'proxy.untrusted', peer },
      `request with X-Forwarded-For from ${peer}, which is not a trusted proxy: the header is ignored and every ` +
        'client behind it shares its per-IP rate limits and failure budgets. If it is your reverse proxy, set ' +
        'BULWARK_TRUST_PROXY to its address (see docs/operations.md). Warned once per peer.',
    );
  });
}
