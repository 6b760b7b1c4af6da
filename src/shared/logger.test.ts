import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger, redactUrl, safeUrl } from './logger.ts';

function capture() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  return { lines, stream };
}

test('credentials never reach a log line', () => {
  const { lines, stream } = capture();
  const log = createLogger('t', 'info', stream);
  const secret = 'bwk_SuperSecretValue123';
  log.info(
    {
      req: { headers: { authorization: `Bearer ${secret}`, cookie: `s=${secret}` } },
      password: secret,
      token: secret,
      key: secret,
      databaseUrl: `postgres://u:${secret}@h/db`,
      nested: { password: secret, secret },
    },
    'request',
  );
  assert.equal(lines.length, 1);
  assert.ok(!lines.join('').includes(secret), lines.join(''));
  assert.match(lines[0]!, /\[redacted\]/);
});

test('safeUrl strips the password and query string', () => {
  assert.equal(
    safeUrl('postgres://u:pw@127.0.0.1:5433/db?sslmode=require'),
    'postgres://u:***@127.0.0.1:5433/db',
  );
  assert.equal(safeUrl('not a url'), '[unparseable url]');
});

test('redactUrl: every query value, userinfo, credentials in the path, encoded forms', () => {
  const key = `bwk_${'A'.repeat(49)}`;
  const cases: [string, string][] = [
    [`/v1/whoami?key=${key}`, '/v1/whoami?key=[redacted]'],
    ['/x?a=1&b&c=2;d=3', '/x?a=[redacted]&[redacted]&c=[redacted]&d=[redacted]'],
    [`/v1/keys/${key}`, '/v1/keys/[redacted]'],
    [`/v1/keys/%62wk_${'B'.repeat(49)}`, '/v1/keys/[redacted]'],
    ['/v1/whoami?%6Bey=hunter2', '/v1/whoami?%6Bey=[redacted]'],
    ['/v1/whoami%3Fkey%3Dhunter2', '/v1/whoami?[redacted]'],
    ['http://user:hunter2@example.com/p?token=hunter2', 'http://[redacted]@example.com/p?token=[redacted]'],
    ['/health', '/health'],
  ];
  for (const [raw, want] of cases) assert.equal(redactUrl(raw), want, raw);
});

test('URLs and credentials quoted in messages and errors are scrubbed; other text is kept', () => {
  const { lines, stream } = capture();
  const log = createLogger('t', 'info', stream);
  const agentToken = `bwa_${'c'.repeat(43)}`;
  log.info('Route GET:/nope?key=hunter2 not found');
  log.warn(`job #12 failed for ${agentToken}: what?`);
  log.error({ err: new Error("'/x?token=hunter2' is not a valid url component") }, 'bad url');
  log.error({ err: { message: 'GET http://u:hunter2@h/p failed', stack: 'at /y?secret=hunter2' } }, 'x');
  log.info({ url: '/v1/whoami?key=hunter2' }, 'url field');
  const all = lines.join('');
  assert.ok(!all.includes('hunter2'), all);
  assert.ok(!all.includes(agentToken), all);
  assert.match(all, /job #12 failed for \[redacted\]: what\?/);
  assert.match(all, /Route GET:\/nope\?\[redacted\] not found/);
});
