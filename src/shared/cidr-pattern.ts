/**
 * The CIDRs `parseCidr` (cidr.ts) accepts, written as one regular expression so the API document
 * can publish the format (JSON Schema has formats for addresses, none for networks). Stricter than
 * the parser in spelling only: no leading zeros in an IPv4 octet or a prefix length, no IPv6 zone.
 * `cidr-pattern.test.ts` checks that everything it matches parses.
 */
const OCTET = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const IPV4 = `(?:${OCTET}\\.){3}${OCTET}`;
const H = '[0-9a-fA-F]{1,4}';
const IPV6 = [
  `(?:${H}:){7}${H}`,
  `(?:${H}:){1,7}:`,
  `(?:${H}:){1,6}:${H}`,
  `(?:${H}:){1,5}(?::${H}){1,2}`,
  `(?:${H}:){1,4}(?::${H}){1,3}`,
  `(?:${H}:){1,3}(?::${H}){1,4}`,
  `(?:${H}:){1,2}(?::${H}){1,5}`,
  `${H}:(?::${H}){1,6}`,
  `:(?:(?::${H}){1,7}|:)`,
  `::(?:ffff(?::0{1,4})?:)?${IPV4}`,
  `(?:${H}:){1,4}:${IPV4}`,
].join('|');

export const CIDR_PATTERN = new RegExp(
  `^(?:${IPV4}/(?:3[0-2]|[12]?\\d)|(?:${IPV6})/(?:12[0-8]|1[01]\\d|[1-9]?\\d))$`,
);
