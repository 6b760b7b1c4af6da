import assert from 'node:assert/strict';
import { test } from 'node:test';
import Fastify from 'fastify';
import { serverConfigSchema } from '../config.ts';
import { parseTrustedProxies } from './proxy-check.ts';

const base = { databaseUrl: 'postgres://u@127.0.0.1/db', dataDir: '/nonexistent' };

test('trusted proxies: addresses, CIDRs and named ranges, in canonical spellings', () => {
  assert.equal(parseTrustedProxies('10.0.0.5'), '10.0.0.5/32');
  assert.equal(parseTrustedProxies('10.0.0.0/24, ::1'), '10.0.0.0/24,::1/128');
  assert.equal(parseTrustedProxies('2001:DB8::1/64,loopback'), '2001:db8::/64,loopback');
  for (const bad of [
    '010.0.0.5',
    '10.1',
    '0x0a000005',
    'fe80::1%eth0',
    '10.0.0.0/33',
    '',
    '10.0.0.5,',
    'proxy.local',
  ])
    assert.throws(() => parseTrustedProxies(bad), /not an address, a CIDR/, bad);
});

test('BULWARK_TRUST_PROXY is checked at start and handed to Fastify canonical', async () => {
  assert.equal(serverConfigSchema.safeParse({ ...base, trustProxy: '010.0.0.5' }).success, false);
  assert.equal(serverConfigSchema.parse({ ...base, trustProxy: 'true' }).trustProxy, true);
  assert.equal(serverConfigSchema.parse({ ...base, trustProxy: false }).trustProxy, false);
  const trustProxy = serverConfigSchema.parse({ ...base, trustProxy: '10.0.0.5' }).trustProxy;
  assert.equal(trustProxy, '10.0.0.5/32');
  // Fastify (proxy-addr) reads the canonical list as meant: the proxy is trusted, nothing else.
  const app = Fastify({ trustProxy });
  app.get('/ip', async (req) => req.ip);
  const via = (remoteAddress: string) =>
    app.inject({ url: '/ip', remoteAddress, headers: { 'x-forwarded-for': '203.0.113.9' } });
  assert.equal((await via('10.0.0.5')).body, '203.0.113.9');
  assert.equal((await via('8.0.0.5')).body, '8.0.0.5');
  await app.close();
});
