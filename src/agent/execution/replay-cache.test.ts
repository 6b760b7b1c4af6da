import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  type ExecutionClaims,
  jwkThumbprint,
  signExecutionToken,
  sqlSha256,
  verifyExecutionToken,
} from '../../shared/execution-token.ts';
import { createReplayCache, ReplayCacheError } from './replay-cache.ts';

const T0 = Date.UTC(2026, 11, 2, 8, 0, 0);
const exp0 = T0 / 1000 + 300;
const dataDir = () => mkdtempSync(join(tmpdir(), 'bulwark-replay-'));

describe('replay cache', () => {
  it('creates its file 0600 and refuses a seen jti', () => {
    const file = join(dataDir(), 'replay.log');
    const cache = createReplayCache({ file, maxEntries: 10, now: () => T0 });
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(cache.admit('a', exp0), 'ok');
    assert.equal(cache.admit('a', exp0), 'replayed');
    cache.close();
  });

  it('survives a restart: a new cache on the same file still refuses the jti', () => {
    const file = join(dataDir(), 'replay.log');
    const first = createReplayCache({ file, maxEntries: 10, now: () => T0 });
    assert.equal(first.admit('a', exp0), 'ok');
    first.close(); // or a crash: admit fsyncs before it answers
    const second = createReplayCache({ file, maxEntries: 10, now: () => T0 + 60_000 });
    assert.equal(second.admit('a', exp0), 'replayed');
    assert.equal(second.admit('b', exp0), 'ok');
    second.close();
    assert.equal(statSync(file).mode & 0o777, 0o600);
  });

  it('a restart through verifyExecutionToken refuses the same token (replayed)', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const kid = jwkThumbprint(publicKey.export({ format: 'jwk' }).x!);
    const claims: ExecutionClaims = {
      request_id: 'r1',
      database: 'shop',
      node: 'n1',
      capability: 'reader',
      mode: 'execute',
      sql_sha256: sqlSha256('SELECT 1'),
      approved_rows: null,
      jti: randomUUID(),
      iat: T0 / 1000,
      exp: exp0,
    };
    const token = signExecutionToken({ kid, privateKey }, claims);
    const file = join(dataDir(), 'replay.log');
    const verifyWith = (replay: ReturnType<typeof createReplayCache>) =>
      verifyExecutionToken(token, {
        keys: new Map([[kid, publicKey]]),
        now: T0,
        expect: { database: 'shop', node: 'n1', mode: 'execute', sql: 'SELECT 1' },
        allowedCapabilities: ['reader'],
        replay,
      });
    const a = createReplayCache({ file, maxEntries: 10, now: () => T0 });
    assert.equal(verifyWith(a).ok, true);
    a.close();
    const b = createReplayCache({ file, maxEntries: 10, now: () => T0 });
    assert.deepEqual(verifyWith(b), { ok: false, reason: 'replayed' });
    b.close();
  });

  it('forgets a jti only after exp + skew, and compacts expired lines on start', () => {
    const file = join(dataDir(), 'replay.log');
    let now = T0;
    const cache = createReplayCache({ file, maxEntries: 10, skewSeconds: 30, now: () => now });
    cache.admit('old', exp0);
    cache.admit('new', exp0 + 600);
    now = (exp0 + 29) * 1000;
    assert.equal(cache.admit('old', exp0), 'replayed');
    now = (exp0 + 31) * 1000;
    cache.close();
    const again = createReplayCache({ file, maxEntries: 10, skewSeconds: 30, now: () => now });
    assert.equal(readFileSync(file, 'utf8'), `new ${exp0 + 600}\n`);
    assert.equal(again.size(), 1);
    again.close();
  });

  it('is bounded and fails closed when full (unexpired jtis are never forgotten)', () => {
    const file = join(dataDir(), 'replay.log');
    let now = T0;
    const cache = createReplayCache({ file, maxEntries: 3, now: () => now });
    for (const j of ['a', 'b', 'c']) assert.equal(cache.admit(j, exp0), 'ok');
    assert.equal(cache.admit('d', exp0), 'full');
    assert.equal(cache.admit('a', exp0), 'replayed');
    now = (exp0 + 31) * 1000; // all expired: room again
    assert.equal(cache.admit('d', exp0 + 300), 'ok');
    // Many admits rewrite the log rather than let it grow without end.
    for (let i = 0; i < 20; i++) {
      now += 400_000;
      assert.equal(cache.admit(`e${i}`, now / 1000 + 300), 'ok');
    }
    assert.ok(readFileSync(file, 'utf8').split('\n').length <= 8);
    cache.close();
  });

  it('fails closed on a corrupted file, a group-readable file, and drops only a torn last line', () => {
    const dir = dataDir();
    const file = join(dir, 'replay.log');
    writeFileSync(file, `a ${exp0}\n\u0000garbage\nb ${exp0}\n`, { mode: 0o600 });
    assert.throws(() => createReplayCache({ file, maxEntries: 10, now: () => T0 }), ReplayCacheError);
    writeFileSync(file, `a ${exp0}\nb not-a-number\n`, { mode: 0o600 });
    assert.throws(() => createReplayCache({ file, maxEntries: 10, now: () => T0 }), ReplayCacheError);
    writeFileSync(file, `a ${exp0}\n`, { mode: 0o600 });
    chmodSync(file, 0o644);
    assert.throws(() => createReplayCache({ file, maxEntries: 10, now: () => T0 }), /group\/others/);
    chmodSync(file, 0o600);
    writeFileSync(file, `a ${exp0}\nb ${exp0}`, { mode: 0o600 }); // crash mid-append of b
    const cache = createReplayCache({ file, maxEntries: 10, now: () => T0 });
    assert.equal(cache.admit('a', exp0), 'replayed');
    assert.equal(cache.admit('b', exp0), 'ok'); // b was never acknowledged, so never run
    cache.close();
  });
});
