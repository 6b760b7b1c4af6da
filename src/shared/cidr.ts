import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';

/**
 * Parses an IPv4/IPv6 CIDR and returns its one canonical spelling; throws on anything else.
 * Used for allowlists (the server's database allowlists, trusted proxies) and for the lines of
 * PgBouncer's hba file the agent writes, so what it accepts is deliberately narrow.
 *
 * The address math and the compressed IPv6 form are ipaddr.js's. What ipaddr.js would accept
 * but we refuse is decided here first, by our own pattern and by `node:net`'s strict `isIP`:
 * - IPv4 only as four decimal octets without leading zeros: no `010.0.0.1` (octal to some
 *   parsers, `8.0.0.1` to ipaddr.js), no hex (`0x0a.0.0.1`), no short forms (`10.1`, `167772161`);
 * - no IPv6 zone ids (`fe80::1%eth0`): an hba rule cannot hold one;
 * - the prefix length in decimal without leading zeros, at most 32 (IPv4) or 128 (IPv6).
 * An IPv6 address ending in a dotted IPv4 part is turned into hex groups before ipaddr.js sees
 * it: ipaddr.js reads the deprecated IPv4-compatible spelling `::1.2.3.4` as the IPv4-mapped
 * `::ffff:1.2.3.4`, a different address.
 *
 * Canonical: host bits cleared (the same set of clients, as an hba rule reads it); IPv6
 * compressed and lower-case (RFC 5952), an IPv4-mapped address in hex (`::ffff:102:304`); so
 * `2001:0DB8::1/32` and `2001:db8::/32` are one entry.
 */
export function parseCidr(raw: string): string {
  const m = /^([0-9a-fA-F:.]+)\/(0|[1-9]\d{0,2})$/.exec(raw.trim());
  if (!m) throw new Error(`not a CIDR: ${raw}`);
  const addr = m[1] as string;
  const bits = Number(m[2]);
  const family = isIP(addr);
  if (family === 0) throw new Error(`not an IP address: ${addr}`);
  if ((family === 4 && bits > 32) || (family === 6 && bits > 128))
    throw new Error(`bad prefix length: ${raw}`);
  const network =
    family === 4
      ? ipaddr.IPv4.networkAddressFromCIDR(`${addr}/${bits}`)
      : ipaddr.IPv6.networkAddressFromCIDR(`${hexTail(addr)}/${bits}`);
  return `${network.toString()}/${bits}`;
}

/** `x:…:a.b.c.d` as `x:…:hhhh:hhhh` (the dotted part was already checked by `isIP`). */
function hexTail(v6: string): string {
  const m = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(v6);
  if (!m) return v6;
  const [a, b, c, d] = [m[2], m[3], m[4], m[5]].map(Number) as [number, number, number, number];
  return `${m[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
}
