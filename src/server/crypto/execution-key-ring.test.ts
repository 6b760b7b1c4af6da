import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  type ExecutionClaims,
  pinnedKeysFromJwks,
  sqlSha256,
  verifyExecutionToken,
} from '../../shared/execution-token.ts';
import { createExecutionKeyRing, EXECUTION_KEY_FILE, EXECUTION_RETIRED_FILE } from './execution-key-ring.ts';

const T0 = Date.UTC(2026, 11, 2, 8, 0, 0);
let n = 0;
const claims = (now: number): ExecutionClaims => ({
  request_id: 'r1',
  database: 'shop',
  node: 'n1',
  capability: 'reader',
  mode: 'execute',
  sql_sha256: sqlSha256('SELECT 1'),
  approved_rows: null,
  jti: `j${n++}`,
  iat: Math.floor(now / 1000),
  exp: Math.floor(now / 1000) + 300,
});

describe('execution key ring', () => {
  it('creates a 0600 key, keeps it across restarts, publishes it as a JWKS', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'bulwark-xkeys-')), 'data');
    const ring = createExecutionKeyRing({ dir, now: () => T0 });
    assert.equal(statSync(join(dir, EXECUTION_KEY_FILE)).mode & 0o777, 0o600);
    const { keys } = ring.jwks();
    assert.equal(keys.length, 1);
    assert.deepEqual(Object.keys(keys[0]!).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x']);
    assert.equal(keys[0]!.kid, ring.kid);
    assert.equal(createExecutionKeyRing({ dir }).kid, ring.kid);
    assert.deepEqual(readdirSync(dir).sort(), [EXECUTION_KEY_FILE]); // no temp file left behind
    chmodSync(join(dir, EXECUTION_KEY_FILE), 0o640);
    assert.throws(() => createExecutionKeyRing({ dir }), /group\/others/);
  });

  it('rotation: the old kid verifies until its tokens expired, then leaves the JWKS', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bulwark-xkeys-'));
    let now = T0;
    const ring = createExecutionKeyRing({ dir, now: () => now });
    const oldKid = ring.kid;
    const oldToken = ring.sign(claims(now));
    now += 60_000;
    const newKid = ring.rotate();
    assert.notEqual(newKid, oldKid);
    assert.equal(statSync(join(dir, EXECUTION_RETIRED_FILE)).mode & 0o777, 0o600);
    const verify = (token: string, at: number, keys = pinnedKeysFromJwks(ring.jwks())) =>
      verifyExecutionToken(token, {
        keys,
        now: at,
        expect: { database: 'shop', node: 'n1', mode: 'execute', sql: 'SELECT 1' },
        allowedCapabilities: ['reader'],
        replay: null,
      });
    assert.deepEqual(
      ring.jwks().keys.map((k) => k.kid),
      [newKid, oldKid],
    );
    assert.equal(verify(oldToken, now).ok, true);
    const newToken = ring.sign(claims(now));
    assert.equal(verify(newToken, now).ok, true);
    // Still published while a token the old key signed just before rotating may live.
    now = T0 + 60_000 + 330_000;
    assert.ok(ring.jwks().keys.some((k) => k.kid === oldKid));
    now += 1_000;
    assert.deepEqual(
      ring.jwks().keys.map((k) => k.kid),
      [newKid],
    );
    assert.deepEqual(verify(oldToken, T0, pinnedKeysFromJwks(ring.jwks())), {
      ok: false,
      reason: 'unknown_kid',
    });
    // A restarted server sees the same retired set.
    now = T0 + 60_000;
    assert.equal(createExecutionKeyRing({ dir, now: () => now }).jwks().keys.length, 2);
  });
});
