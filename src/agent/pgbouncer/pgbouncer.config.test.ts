import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseCidr } from '../../shared/cidr.ts';
import { POOLER_LIMITS, renderIni } from './pgbouncer.config.ts';

test('one network has one spelling: IPv6 compressed and lower-case, host bits cleared', () => {
  const same: [string, string][] = [
    ['2001:0db8::/32', '2001:db8::/32'],
    ['2001:DB8:0::/32', '2001:db8::/32'],
    ['2001:db8:0:0:0:0:0:0/32', '2001:db8::/32'],
    ['2001:db8::abcd:1/120', '2001:db8::abcd:0/120'],
    ['::ffff:1.2.3.4/128', '::ffff:102:304/128'],
    ['10.0.0.1/8', '10.0.0.0/8'],
    ['10.1.2.3/31', '10.1.2.2/31'],
    [' 203.0.113.7/32 ', '203.0.113.7/32'],
    ['0.0.0.0/0', '0.0.0.0/0'],
    ['::/0', '::/0'],
  ];
  for (const [raw, canonical] of same) assert.equal(parseCidr(raw), canonical, raw);
});

test('what is not a CIDR is refused', () => {
  for (const bad of [
    '10.0.0.1',
    '10.0.0.1/33',
    '::1/129',
    '010.0.0.1/32',
    'fe80::1%eth0/64',
    '1.2.3/8',
    'x/8',
    '',
  ]) {
    assert.throws(() => parseCidr(bad), Error, bad);
  }
});

test('every rendered ini bounds what a connection that never logs in can hold', () => {
  const ini = renderIni({
    listenAddr: '0.0.0.0',
    listenPort: 6432,
    pgHost: '127.0.0.1',
    pgPort: 5432,
    authFile: '/p/auth.txt',
    hbaFile: '/p/hba.txt',
    pidFile: '/p/pgbouncer.pid',
    adminUser: 'bulwark_pooler_admin',
    poolMode: 'session',
    maxClientConn: POOLER_LIMITS.maxClientConn,
    defaultPoolSize: 20,
    tls: null,
  });
  // PgBouncer's default is 60 s; 2,000 slots were filled by idle sockets from a stranger.
  assert.match(ini, /^client_login_timeout = 10$/m);
  assert.match(ini, /^max_client_conn = 10000$/m);
});
