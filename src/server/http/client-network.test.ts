import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clientNetworkKey } from './client-network.ts';

test('IPv4 counts per address; IPv4-mapped IPv6 as its IPv4 address', () => {
  assert.equal(clientNetworkKey('198.51.100.7'), '198.51.100.7');
  assert.equal(clientNetworkKey('::ffff:198.51.100.7'), '198.51.100.7');
  assert.notEqual(clientNetworkKey('198.51.100.7'), clientNetworkKey('198.51.100.8'));
});

test('IPv6 counts per /64, whatever the spelling', () => {
  const key = clientNetworkKey('2001:db8:1:2::1');
  assert.equal(key, '2001:db8:1:2::/64');
  for (const ip of ['2001:db8:1:2::1e', '2001:0db8:0001:0002:ffff:ffff:ffff:ffff', '2001:DB8:1:2:0:0:0:5'])
    assert.equal(clientNetworkKey(ip), key, ip);
  assert.notEqual(clientNetworkKey('2001:db8:1:3::1'), key);
  assert.equal(clientNetworkKey('::1'), '0:0:0:0::/64');
});

test('an unparseable address is kept as it is (bounded)', () => {
  assert.equal(clientNetworkKey('not-an-ip'), 'not-an-ip');
  assert.equal(clientNetworkKey('x'.repeat(500)).length, 200);
});
