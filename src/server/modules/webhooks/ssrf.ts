/**
 * Server-side request forgery protection of webhook destinations (ADR 0032). A webhook URL is
 * checked when it is saved and again at every delivery:
 *
 * - parsed with the WHATWG URL parser (what the HTTP client will use): http or https only, no
 *   user-info, a host. The parser already normalises IPv4 spellings (`2130706433`, `0x7f.1`,
 *   `017700000001`, `127.1` all become `127.0.0.1`), so the address checked is the one dialled;
 * - the port must be one of the allowed ports (80, 443, 8080, 8443 by default);
 * - `localhost`, `localhost.` and every `*.localhost` name are refused by name;
 * - the host is resolved (an injectable resolver; `dns.lookup` with `all: true` by default) and
 *   EVERY address is checked against the ranges below: one bad answer refuses the destination;
 * - the delivery then connects to the checked address itself (see webhooks.sender.ts): no second
 *   resolution, so a DNS answer that changes between check and connect (rebinding) cannot move it.
 *
 * `BULWARK_WEBHOOK_ALLOWED_HOSTS` names destinations an operator allows anyway: a host name
 * (exact, case-insensitive; all its addresses allowed) or a CIDR (addresses inside it allowed).
 * An allowed destination may use any port: the operator named it.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import { parseCidr } from '../../../shared/cidr.ts';

export type ResolvedAddress = { address: string; family: 4 | 6 };
/** Resolves a host name to every address it has (tests inject their own answers). */
export type Resolver = (hostname: string) => Promise<ResolvedAddress[]>;

export const defaultResolver: Resolver = async (hostname) => {
  const all = await dnsLookup(hostname, { all: true, verbatim: true });
  return all.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
};

export const DEFAULT_WEBHOOK_PORTS: readonly number[] = [80, 443, 8080, 8443];

/**
 * A refused destination. `message` is what the tenant sees (the API's 400, a delivery's
 * last_error): it never names an address a host name resolved to (that would let a tenant read
 * the internal DNS). `address` is that address, for the server's log only.
 */
export class DestinationRefused extends Error {
  override name = 'DestinationRefused';
  readonly address: string | null;
  constructor(message: string, address: string | null = null) {
    super(message);
    this.address = address;
  }
}

/** A checked destination: the URL as parsed, and the one address to connect to. */
export type Destination = {
  url: URL;
  /** The host name as the URL has it (brackets removed from an IPv6 literal). */
  host: string;
  port: number;
  address: string;
  family: 4 | 6;
};

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number, string];

const v4 = (cidr: string, why: string): Range => {
  const [a, n] = ipaddr.IPv4.parseCIDR(cidr);
  return [a, n, why];
};
const v6 = (cidr: string, why: string): Range => {
  const [a, n] = ipaddr.IPv6.parseCIDR(cidr);
  return [a, n, why];
};

/** IPv4 ranges that are never a webhook destination (RFC 6890 special-purpose and friends). */
const V4_REFUSED: Range[] = [
  v4('0.0.0.0/8', 'unspecified ("this network")'),
  v4('10.0.0.0/8', 'private'),
  v4('100.64.0.0/10', 'carrier-grade NAT'),
  v4('127.0.0.0/8', 'loopback'),
  v4('169.254.0.0/16', 'link-local (cloud metadata)'),
  v4('172.16.0.0/12', 'private'),
  v4('192.0.0.0/24', 'IETF protocol assignments'),
  v4('192.0.2.0/24', 'documentation'),
  v4('192.88.99.0/24', '6to4 relay anycast'),
  v4('192.168.0.0/16', 'private'),
  v4('198.18.0.0/15', 'benchmarking'),
  v4('198.51.100.0/24', 'documentation'),
  v4('203.0.113.0/24', 'documentation'),
  v4('224.0.0.0/4', 'multicast'),
  v4('240.0.0.0/4', 'reserved'),
  v4('255.255.255.255/32', 'broadcast'),
];

/** IPv6 ranges refused outright (those embedding an IPv4 address are handled below). */
const V6_REFUSED: Range[] = [
  v6('::/128', 'unspecified'),
  v6('::1/128', 'loopback'),
  v6('::ffff:0:0/96', 'IPv4-mapped'),
  v6('::ffff:0:0:0/96', 'IPv4-translated'),
  v6('::/96', 'IPv4-compatible'),
  v6('64:ff9b::/96', 'NAT64'),
  v6('64:ff9b:1::/48', 'NAT64 (local use)'),
  v6('100::/64', 'discard-only'),
  v6('2001::/32', 'Teredo'),
  v6('2001:10::/28', 'ORCHID'),
  v6('2001:20::/28', 'ORCHIDv2'),
  v6('2001:db8::/32', 'documentation'),
  v6('3fff::/20', 'documentation'),
  v6('fc00::/7', 'unique local'),
  v6('fe80::/10', 'link-local'),
  v6('fec0::/10', 'site-local'),
  v6('ff00::/8', 'multicast'),
];
const SIX_TO_FOUR = v6('2002::/16', '6to4');

/**
 * Why `address` (a literal IPv4 or IPv6 address, as a resolver returns it) may not be connected
 * to, or null when it may.
 */
export function refusedAddressReason(address: string): string | null {
  const family = isIP(address);
  if (family === 0) return 'not an IP address';
  if (family === 4) {
    const a = ipaddr.IPv4.parse(address);
    for (const [net, bits, why] of V4_REFUSED) if (a.match(net as ipaddr.IPv4, bits)) return why;
    return null;
  }
  // A zone id (fe80::1%eth0) only ever names a link-local address.
  if (address.includes('%')) return 'link-local (zone id)';
  const a = ipaddr.IPv6.parse(address);
  for (const [net, bits, why] of V6_REFUSED) if (a.match(net as ipaddr.IPv6, bits)) return why;
  if (a.match(SIX_TO_FOUR[0] as ipaddr.IPv6, SIX_TO_FOUR[1])) {
    // 2002:AABB:CCDD::/48 carries the IPv4 address AA.BB.CC.DD.
    const p = a.parts;
    const embedded = `${p[1]! >> 8}.${p[1]! & 0xff}.${p[2]! >> 8}.${p[2]! & 0xff}`;
    const inner = refusedAddressReason(embedded);
    if (inner) return `6to4 embedding a ${inner} address`;
  }
  return null;
}

/** A parsed `BULWARK_WEBHOOK_ALLOWED_HOSTS` entry list. */
export type AllowedDestinations = { hosts: Set<string>; cidrs: [ipaddr.IPv4 | ipaddr.IPv6, number][] };

/**
 * An address or CIDR entry read by the shared `parseCidr` (the trusted proxies' and allowlists'
 * rules): ipaddr.js alone would read `010.0.0.5` as 8.0.0.5 and `::1.2.3.4` as `::ffff:1.2.3.4`,
 * allowing another network than the one the operator wrote. Throws on anything else.
 */
const addressEntry = (e: string): string =>
  parseCidr(e.includes('/') ? e : `${e}/${e.includes(':') ? 128 : 32}`);

export function parseAllowedDestinations(entries: readonly string[]): AllowedDestinations {
  const hosts = new Set<string>();
  const cidrs: [ipaddr.IPv4 | ipaddr.IPv6, number][] = [];
  for (const raw of entries) {
    const e = raw.trim().toLowerCase();
    if (!e) continue;
    if (e.includes('/') || isIP(e)) cidrs.push(ipaddr.parseCIDR(addressEntry(e)));
    else hosts.add(e.replace(/\.$/, ''));
  }
  return { hosts, cidrs };
}

/** A valid allowed-hosts entry: a host name, an IP address or a CIDR (as `parseCidr` reads them). */
export function isAllowedEntry(raw: string): boolean {
  const e = raw.trim();
  if (e.includes('/') || isIP(e)) {
    try {
      addressEntry(e);
      return true;
    } catch {
      return false;
    }
  }
  // A name ending in a number is an IPv4 address to the URL parser (`010.0.0.1` is 8.0.0.1 there),
  // never a host name a URL could match: refused, as the address forms `parseCidr` refuses are.
  if (/(^|\.)(\d+|0x[0-9a-f]*)\.?$/i.test(e)) return false;
  return /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.?$/i.test(
    e,
  );
}

function inAllowedCidr(address: string, allowed: AllowedDestinations): boolean {
  if (allowed.cidrs.length === 0) return false;
  const a = ipaddr.parse(address);
  return allowed.cidrs.some(([net, bits]) => a.kind() === net.kind() && a.match(net, bits));
}

const isLocalhostName = (host: string) => {
  const h = host.replace(/\.$/, '');
  return h === 'localhost' || h.endsWith('.localhost');
};

export type DestinationPolicy = {
  allowed: AllowedDestinations;
  ports: readonly number[];
  resolver: Resolver;
};

/** Parses and checks the URL's form (no DNS): the scheme, user-info and host (the port is checked per address). */
export function parseWebhookUrl(
  raw: string,
  policy: Pick<DestinationPolicy, 'allowed'>,
): { url: URL; host: string; port: number; hostAllowed: boolean } {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new DestinationRefused('not a valid URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new DestinationRefused('only http and https URLs are allowed');
  if (url.username !== '' || url.password !== '')
    throw new DestinationRefused('a URL with user information is not allowed');
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (!host) throw new DestinationRefused('the URL has no host');
  const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
  const hostAllowed = policy.allowed.hosts.has(host.replace(/\.$/, ''));
  if (!hostAllowed && isLocalhostName(host)) throw new DestinationRefused('localhost is not allowed');
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new DestinationRefused('bad port');
  return { url, host, port, hostAllowed };
}

/**
 * Parses, resolves and checks a webhook URL: the destination to connect to, or a
 * DestinationRefused saying why not. Every resolved address must pass; the first is used.
 */
export async function checkDestination(raw: string, policy: DestinationPolicy): Promise<Destination> {
  const { url, host, port, hostAllowed } = parseWebhookUrl(raw, policy);
  let addresses: ResolvedAddress[];
  const literal = isIP(host);
  if (literal !== 0) addresses = [{ address: host, family: literal === 6 ? 6 : 4 }];
  else {
    try {
      addresses = await policy.resolver(host);
    } catch {
      throw new DestinationRefused(`the host ${host} does not resolve`);
    }
  }
  if (addresses.length === 0) throw new DestinationRefused(`the host ${host} does not resolve`);
  for (const a of addresses) {
    if (hostAllowed) continue;
    if (isIP(a.address) === 0) throw new DestinationRefused('the resolver answered something not an address');
    if (inAllowedCidr(a.address, policy.allowed)) {
      continue;
    }
    const why = refusedAddressReason(a.address);
    if (why) throw new DestinationRefused(`${host} resolves to a refused address (${why})`, a.address);
    // A public address on a port outside the list (allowed above only for allowed CIDRs).
    if (!policy.ports.includes(port))
      throw new DestinationRefused(`port ${port} is not allowed (allowed: ${policy.ports.join(', ')})`);
  }
  const first = addresses[0]!;
  return { url, host, port, address: first.address, family: isIP(first.address) === 6 ? 6 : 4 };
}
