import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger, safeUrl } from './logger.ts';

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
