import { isIP } from 'node:net';

/** Parses and normalises an IPv4/IPv6 CIDR; throws on anything else. */
export function parseCidr(raw: string): string {
  const m = /^([0-9a-fA-F:.]+)\/(\d{1,3})$/.exec(raw.trim());
  if (!m) throw new Error(`not a CIDR: ${raw}`);
  const addr = m[1] as string;
  const bits = Number(m[2]);
  const family = isIP(addr);
  if (family === 0) throw new Error(`not an IP address: ${addr}`);
  if ((family === 4 && bits > 32) || (family === 6 && bits > 128))
    throw new Error(`bad prefix length: ${raw}`);
  return `${networkAddress(addr, family, bits)}/${bits}`;
}

/**
 * The canonical network address of a prefix: host bits cleared (the same set of clients, as an
 * hba rule reads it) and IPv6 in its one compressed lower-case form, so that one network has one
 * spelling (`2001:0DB8::1/32` and `2001:db8::/32` are the same entry).
 */
function networkAddress(addr: string, family: number, bits: number): string {
  const bytes =
    family === 4 ? addr.split('.').map(Number) : ipv6Bytes(new URL(`http://[${addr}]`).hostname.slice(1, -1));
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    bytes[i] = (bytes[i] ?? 0) & ((0xff << (8 - keep)) & 0xff);
  }
  if (family === 4) return bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  return new URL(`http://[${groups.join(':')}]`).hostname.slice(1, -1);
}

/** 16 bytes of a canonical (URL-normalised, hex-only) IPv6 address. */
function ipv6Bytes(canonical: string): number[] {
  const [head = '', tail] = canonical.split('::');
  const part = (s: string) => (s === '' ? [] : s.split(':'));
  const h = part(head);
  const t = tail === undefined ? [] : part(tail);
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.flatMap((g) => {
    const n = Number.parseInt(g, 16);
    return [n >> 8, n & 0xff];
  });
}
