// SSRF protection of webhook destinations, on a real server with real listeners: every refused
// form is refused at creation and at delivery with no connection attempted (a listener on the
// refused address counts connections), and a DNS answer that changes between check and connect
// (rebinding) cannot move a delivery. The resolver is injected; 127.0.0.2 is the one allowed
// destination (BULWARK_WEBHOOK_ALLOWED_HOSTS), 127.0.0.1 the forbidden one.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  checkDestination,
  DEFAULT_WEBHOOK_PORTS,
  type DestinationPolicy,
  isAllowedEntry,
  parseAllowedDestinations,
  type ResolvedAddress,
  refusedAddressReason,
} from '../src/server/modules/webhooks/ssrf.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { waitFor } from './helpers/wait.ts';
import { type Receiver, startReceiver } from './helpers/webhook-receiver.ts';

let s: TestServer;
let admin: TestKey;
let forbidden: Receiver;
let allowed: Receiver;
/** The injected DNS: name → answers (a function may change its answer per call). */
const dns = new Map<string, ResolvedAddress[] | (() => ResolvedAddress[])>();
const lookups: string[] = [];

const v4 = (address: string): ResolvedAddress => ({ address, family: 4 });
const v6 = (address: string): ResolvedAddress => ({ address, family: 6 });

before(async () => {
  s = await createTestServer(
    {
      webhookAllowedHosts: ['127.0.0.2/32'],
      webhookRetryBaseMs: 20,
      webhookRetryMaxMs: 50,
      webhookMaxAttempts: 1,
      webhookTimeoutMs: 2_000,
      webhookPollMs: 100,
    },
    {
      webhookResolver: async (host) => {
        lookups.push(host);
        const a = dns.get(host);
        if (!a) throw new Error('ENOTFOUND');
        return typeof a === 'function' ? a() : a;
      },
    },
  );
  admin = await createTestKey(s, { account: 'acme' });
  forbidden = await startReceiver('127.0.0.1');
  allowed = await startReceiver('127.0.0.2');
});
after(async () => {
  await forbidden?.close();
  await allowed?.close();
  await s?.stop();
});

test('address classification: every special-purpose range is refused, public addresses pass', () => {
  const refused = [
    '127.0.0.1',
    '127.255.255.254',
    '10.1.2.3',
    '172.16.0.1',
    '172.31.255.255',
    '192.168.0.1',
    '169.254.169.254',
    '169.254.0.1',
    '100.64.0.1',
    '100.127.255.255',
    '0.0.0.0',
    '0.1.2.3',
    '224.0.0.1',
    '239.255.255.250',
    '240.0.0.1',
    '255.255.255.255',
    '192.0.0.8',
    '192.0.2.10',
    '198.18.0.1',
    '198.51.100.7',
    '203.0.113.9',
    '::',
    '::1',
    '::ffff:127.0.0.1',
    '::ffff:8.8.8.8',
    '::127.0.0.1',
    '64:ff9b::7f00:1',
    '64:ff9b::808:808',
    '64:ff9b:1::a00:1',
    '2002:7f00:1::1',
    '2002:a00:1::',
    '2002:a9fe:a9fe::1',
    '2001::1',
    '2001:db8::1',
    'fc00::1',
    'fd12:3456::1',
    'fe80::1',
    'fe80::1%eth0',
    'febf::1',
    'fec0::1',
    'ff02::1',
    '100::1',
    // IPv4-translated (RFC 2765, ::ffff:0:a.b.c.d), like the mapped ones.
    '::ffff:0:7f00:1',
    '::ffff:0:a9fe:a9fe',
    '::ffff:0:808:808',
  ];
  for (const a of refused) assert.ok(refusedAddressReason(a), `${a} must be refused`);
  for (const a of [
    '93.184.216.34',
    '8.8.8.8',
    '1.1.1.1',
    '172.32.0.1',
    '100.128.0.1',
    '2606:4700::1111',
    '2002:808:808::1',
  ])
    assert.equal(refusedAddressReason(a), null, `${a} is public`);
});

test('allowed-destination entries are read as the operator wrote them (the shared CIDR rules)', async () => {
  for (const e of ['hooks.internal.example', '10.20.0.0/24', '10.20.0.5', '2001:db8::/32', '::1.2.3.4'])
    assert.equal(isAllowedEntry(e), true, `${e} is an entry`);
  // ipaddr.js alone reads 010.x as octal (8.x) and 0x0a as 10: another network than the one written.
  for (const e of [
    '010.0.0.0/8',
    '010.0.0.1',
    '0x0a.0.0.1/32',
    '10.1/16',
    '10.0.0.0/33',
    'fe80::1%eth0',
    '1.2.3',
  ])
    assert.equal(isAllowedEntry(e), false, `${e} is refused`);
  // `::1.2.3.4` is the IPv4-compatible ::102:304, not the IPv4-mapped ::ffff:1.2.3.4.
  const p = {
    allowed: parseAllowedDestinations(['::1.2.3.4', '10.20.0.9/24']),
    ports: [443],
    resolver: async () => [],
  };
  await assert.rejects(checkDestination('https://[::ffff:1.2.3.4]/', p), /refused address/);
  assert.equal((await checkDestination('https://10.20.0.200:9/', p)).address, '10.20.0.200');
  await assert.rejects(checkDestination('https://10.20.1.1/', p), /refused address/);
});

test('URL forms are refused before any resolution or connection', async () => {
  const policy: DestinationPolicy = {
    allowed: parseAllowedDestinations([]),
    ports: DEFAULT_WEBHOOK_PORTS,
    resolver: async () => {
      throw new Error('must not resolve');
    },
  };
  const p = forbidden.port;
  for (const url of [
    `ftp://127.0.0.2:${p}/`,
    'file:///etc/passwd',
    'gopher://example.com/',
    'javascript:alert(1)',
    `http://user:pass@example.com/`,
    `http://user@example.com/`,
    'http://localhost/',
    'http://localhost./',
    'http://LOCALHOST/',
    'http://api.localhost/',
    'http://a.b.localhost./',
    'not a url',
  ])
    await assert.rejects(checkDestination(url, policy), { name: 'DestinationRefused' }, url);
});

test('every refused destination is refused at creation, with no connection attempted', async () => {
  const p = forbidden.port;
  dns.set('private.example', [v4('10.0.0.5')]);
  dns.set('loop.example', [v4('127.0.0.1')]);
  dns.set('mixed.example', [v4('93.184.216.34'), v4('127.0.0.1')]);
  dns.set('mixed-allowed.example', [v4('127.0.0.2'), v4('127.0.0.1')]);
  dns.set('metadata.example', [v4('169.254.169.254')]);
  dns.set('v6loop.example', [v6('::1')]);
  dns.set('mapped.example', [v6('::ffff:127.0.0.1')]);
  dns.set('nat64.example', [v6('64:ff9b::7f00:1')]);
  dns.set('public.example', [v4('93.184.216.34')]);
  const urls = [
    `http://127.0.0.1:${p}/`,
    `http://2130706433:${p}/`,
    `http://0x7f000001:${p}/`,
    `http://0x7f.1:${p}/`,
    `http://017700000001:${p}/`,
    `http://0177.0.0.1:${p}/`,
    `http://127.1:${p}/`,
    `http://127.0.1:${p}/`,
    `http://0:${p}/`,
    `http://0.0.0.0:${p}/`,
    `http://[::1]:${p}/`,
    `http://[::]:${p}/`,
    `http://[::ffff:127.0.0.1]:${p}/`,
    `http://[::ffff:7f00:1]:${p}/`,
    `http://[0:0:0:0:0:ffff:127.0.0.1]:${p}/`,
    `http://[::127.0.0.1]:${p}/`,
    `http://[64:ff9b::127.0.0.1]:${p}/`,
    `http://[2002:7f00:1::]:${p}/`,
    `http://[2001::7f00:1]:${p}/`,
    `http://[fe80::1]:${p}/`,
    `http://[fd00::1]:${p}/`,
    `http://localhost:${p}/`,
    `http://localhost.:${p}/`,
    `http://hooks.localhost:${p}/`,
    `http://169.254.169.254/latest/meta-data/`,
    'http://100.64.0.1/',
    'http://10.0.0.1/',
    'http://172.16.0.1/',
    'http://192.168.1.1/',
    'http://224.0.0.1/',
    'http://255.255.255.255/',
    'http://192.0.2.1/',
    'http://198.18.0.1/',
    `http://private.example/`,
    `http://loop.example:${p}/`,
    `http://mixed.example/`,
    `http://mixed-allowed.example:${p}/`,
    `http://metadata.example/`,
    `http://v6loop.example/`,
    `http://mapped.example/`,
    `http://nat64.example/`,
    `http://unknown.example/`,
    // A public address on a port outside the list.
    'http://public.example:22/',
    `http://public.example:${p}/`,
    // User-info, even towards the allowed destination.
    `http://user:pw@127.0.0.2:${allowed.port}/`,
    `ftp://127.0.0.2:${allowed.port}/`,
  ];
  for (const url of urls) {
    const r = await s.app.inject({
      method: 'POST',
      url: '/v1/webhooks',
      headers: admin.headers,
      payload: { url, events: ['*'] },
    });
    assert.equal(r.statusCode, 400, `${url}: ${r.body}`);
    // Other schemes fail the document's own pattern; everything else is the SSRF check's.
    assert.equal(
      r.json().error.code,
      url.startsWith('ftp:') ? 'validation_failed' : 'destination_refused',
      url,
    );
  }
  assert.equal(forbidden.connections(), 0, 'no connection reached the refused address');
  assert.equal(allowed.connections(), 0);
  const ok = await s.app.inject({
    method: 'POST',
    url: '/v1/webhooks',
    headers: admin.headers,
    payload: { url: `http://public.example/`, events: ['*'] },
  });
  assert.equal(ok.statusCode, 201, 'a public address on an allowed port passes');
  await s.app.inject({ method: 'DELETE', url: `/v1/webhooks/${ok.json().id}`, headers: admin.headers });
});

/** Creates a webhook on `url`, sends a test and returns its settled delivery. */
async function testDelivery(url: string) {
  const made = await s.app.inject({
    method: 'POST',
    url: '/v1/webhooks',
    headers: admin.headers,
    payload: { url, events: ['webhook.test'] },
  });
  assert.equal(made.statusCode, 201, made.body);
  const id = made.json().id as string;
  return {
    id,
    async send() {
      const t = await s.app.inject({
        method: 'POST',
        url: `/v1/webhooks/${id}/test`,
        headers: admin.headers,
      });
      assert.equal(t.statusCode, 202, t.body);
      const deliveryId = t.json().delivery_id as string;
      return waitFor(`delivery ${deliveryId} settled`, async () => {
        const d = (
          await s.app.inject({ url: `/v1/webhooks/${id}/deliveries/${deliveryId}`, headers: admin.headers })
        ).json();
        return d.status === 'pending' ? null : d;
      });
    },
  };
}

test('checked again at delivery: a name that now resolves to a refused address gets no connection', async () => {
  dns.set('moving.example', [v4('127.0.0.2')]);
  const hook = await testDelivery(`http://moving.example:${allowed.port}/x`);
  const first = await hook.send();
  assert.equal(first.status, 'succeeded', JSON.stringify(first));
  assert.equal(allowed.received.length, 1);
  assert.equal(
    allowed.received[0]!.headers.host,
    `moving.example:${allowed.port}`,
    'the Host header names the URL',
  );

  // The same name now points at the forbidden address (same port number on purpose).
  dns.set('moving.example', [v4('127.0.0.1')]);
  const second = await hook.send();
  assert.equal(second.status, 'dead');
  assert.match(second.last_error, /destination refused/);
  assert.match(second.last_error, /refused address \(loopback\)/);
  assert.ok(
    !second.last_error.includes('127.0.0.1'),
    `the address stays in the server log: ${second.last_error}`,
  );
  assert.equal(forbidden.connections(), 0, 'no connection to the refused address');
});

test('DNS rebinding: the address checked is the address connected to, never a second answer', async () => {
  // First answer: the allowed address; every later answer: the forbidden one. The delivery does
  // one lookup (the check) and connects to its answer.
  let calls = 0;
  dns.set('rebind.example', () => (++calls === 1 ? [v4('127.0.0.2')] : [v4('127.0.0.1')]));
  const made = await s.app.inject({
    method: 'POST',
    url: '/v1/webhooks',
    headers: admin.headers,
    payload: { url: `http://rebind.example:${allowed.port}/r`, events: ['webhook.test'] },
  });
  assert.equal(made.statusCode, 201);
  // Creation consumed the first answer; the delivery's own check now gets the forbidden one.
  const t = await s.app.inject({
    method: 'POST',
    url: `/v1/webhooks/${made.json().id}/test`,
    headers: admin.headers,
  });
  const id = t.json().delivery_id as string;
  const refused = await waitFor('the rebinding delivery settled', async () => {
    const d = (
      await s.app.inject({ url: `/v1/webhooks/${made.json().id}/deliveries/${id}`, headers: admin.headers })
    ).json();
    return d.status === 'pending' ? null : d;
  });
  assert.equal(refused.status, 'dead');
  assert.equal(forbidden.connections(), 0);

  // At the delivery itself: the check's answer is allowed, any later lookup would say 127.0.0.1.
  // The client's own resolution is replaced by the checked address: the request reaches 127.0.0.2.
  calls = 0;
  const before = allowed.received.length;
  const t2 = await s.app.inject({
    method: 'POST',
    url: `/v1/webhooks/${made.json().id}/test`,
    headers: admin.headers,
  });
  const id2 = t2.json().delivery_id as string;
  const ok = await waitFor('the second delivery settled', async () => {
    const d = (
      await s.app.inject({ url: `/v1/webhooks/${made.json().id}/deliveries/${id2}`, headers: admin.headers })
    ).json();
    return d.status === 'pending' ? null : d;
  });
  assert.equal(ok.status, 'succeeded', JSON.stringify(ok));
  assert.equal(calls, 1, 'one resolution per attempt: the check');
  assert.equal(allowed.received.length, before + 1);
  assert.equal(forbidden.connections(), 0, 'the second answer was never used');
});
