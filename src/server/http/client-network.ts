import ipaddr from 'ipaddr.js';

/**
 * The key a source address is counted under by the per-address limits (rate limits, the
 * authentication-failure budget, the sign-in throttle). An IPv4-mapped IPv6 address counts as its
 * IPv4 address, and any other IPv6 address as its /64: one host is routinely given a whole /64, so
 * counting single IPv6 addresses would let it spread guesses over 2^64 of them.
 */
export function clientNetworkKey(ip: string): string {
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    addr = ipaddr.process(ip);
  } catch {
    return ip.slice(0, 200);
  }
  if (addr.kind() === 'ipv4') return addr.toString();
  const parts = (addr as ipaddr.IPv6).parts.slice(0, 4);
  return `${parts.map((p) => p.toString(16)).join(':')}::/64`;
}
