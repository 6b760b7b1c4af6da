import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createAgentVerifier } from '../src/agent/execution/agent-verifier.ts';
import {
  EXECUTION_KEYS_FILE,
  type ExecutionKeysAnswer,
  openPinnedKeys,
  readPinFile,
  writePinFile,
} from '../src/agent/execution/execution-keys.ts';
import { createReplayCache } from '../src/agent/execution/replay-cache.ts';
import { pinServerExecutionKeys } from '../src/embedded/execution-pins.ts';
import { createExecutionKeyRing } from '../src/server/crypto/execution-key-ring.ts';
import { jwkThumbprint, sqlSha256 } from '../src/shared/execution-token.ts';
import { createLogger } from '../src/shared/logger.ts';

const log = createLogger('test', 'silent');
const tmp = () => mkdtempSync(join(tmpdir(), 'bulwark-pins-'));

/** A server's answer from its key ring (what GET /v1/agent/execution-keys serves). */
const answerOf = (ring: ReturnType<typeof createExecutionKeyRing>): ExecutionKeysAnswer => ({
  node_id: 'n1',
  keys: ring.jwks().keys,
  endorsements: ring.endorsements(),
});

describe('pinned execution keys', () => {
  it('pins on first use of the authenticated API, 0600, and reads the file back', async () => {
    const ring = createExecutionKeyRing({ dir: tmp() });
    const stateDir = tmp();
    let calls = 0;
    const pins = await openPinnedKeys({
      stateDir,
      fetchKeys: async () => {
        calls++;
        return answerOf(ring);
      },
      log,
    });
    assert.deepEqual([...pins.keys().keys()], [ring.kid]);
    assert.equal(calls, 1);
    const file = join(stateDir, EXECUTION_KEYS_FILE);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    // Next start: from the file, no call.
    const again = await openPinnedKeys({ stateDir, fetchKeys: async () => assert.fail('no fetch'), log });
    assert.deepEqual([...again.keys().keys()], [ring.kid]);
    chmodSync(file, 0o644);
    assert.throws(() => readPinFile(file), /group\/others/);
  });

  it('accepts a rotated key only through the endorsement chain, even after missed rotations', async () => {
    const ring = createExecutionKeyRing({ dir: tmp() });
    const stateDir = tmp();
    const first = ring.kid;
    writePinFile(join(stateDir, EXECUTION_KEYS_FILE), new Map([[first, ring.jwks().keys[0]!.x]]));
    let t = 0;
    const pins = await openPinnedKeys({ stateDir, fetchKeys: async () => answerOf(ring), log, now: () => t });
    ring.rotate();
    const third = ring.rotate();
    assert.equal(await pins.refresh(), true);
    assert.ok(pins.keys().has(third));
    // Rate-limited: no second call within the minute.
    ring.rotate();
    assert.equal(await pins.refresh(), false);
    t += 61_000;
    assert.equal(await pins.refresh(), true);
    assert.ok(pins.keys().has(ring.kid));
  });

  it('refuses a key the server publishes without an endorsement from a pinned key', async () => {
    const ring = createExecutionKeyRing({ dir: tmp() });
    const stateDir = tmp();
    writePinFile(join(stateDir, EXECUTION_KEYS_FILE), new Map([[ring.kid, ring.jwks().keys[0]!.x]]));
    const rogue = generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }).x as string;
    const rogueKid = jwkThumbprint(rogue);
    const other = createExecutionKeyRing({ dir: tmp() });
    other.rotate(); // an endorsement chain, but from keys this agent never pinned
    const pins = await openPinnedKeys({
      stateDir,
      fetchKeys: async () => ({
        node_id: 'n1',
        keys: [{ kty: 'OKP', crv: 'Ed25519', x: rogue, kid: rogueKid }, ...other.jwks().keys],
        endorsements: [
          ...other.endorsements(),
          // A forged endorsement of the rogue key "by" the pinned kid.
          { kid: rogueKid, x: rogue, by: ring.kid, sig: Buffer.alloc(64, 1).toString('base64url') },
        ],
      }),
      log,
    });
    assert.equal(await pins.refresh(), false);
    assert.deepEqual([...pins.keys().keys()], [ring.kid]); // kept, never emptied
  });
});

describe('embedded stack pinning', () => {
  it('up writes the server key ring into the agent pin file, again after a rotation', async () => {
    const root = tmp();
    const layout = { server: join(root, 'server'), agent: join(root, 'agent') };
    const [kid] = pinServerExecutionKeys(layout);
    const pins = await openPinnedKeys({ stateDir: layout.agent, fetchKeys: null, log });
    assert.deepEqual([...pins.keys().keys()], [kid]);
    const ring = createExecutionKeyRing({ dir: layout.server });
    assert.equal(ring.kid, kid); // the server reads the key up made
    const next = ring.rotate();
    assert.deepEqual(pinServerExecutionKeys(layout).sort(), [kid, next].sort());
    assert.equal(statSync(join(layout.agent, EXECUTION_KEYS_FILE)).mode & 0o777, 0o600);
  });
});

describe('the agent verifier', () => {
  it('an unknown kid triggers one refresh: an endorsed rotated key verifies, a rogue one stays unknown', async () => {
    const ring = createExecutionKeyRing({ dir: tmp() });
    const stateDir = tmp();
    writePinFile(join(stateDir, EXECUTION_KEYS_FILE), new Map([[ring.kid, ring.jwks().keys[0]!.x]]));
    let fetches = 0;
    const keys = await openPinnedKeys({
      stateDir,
      fetchKeys: async () => {
        fetches++;
        return answerOf(ring);
      },
      log,
      minRefreshMs: 0,
    });
    const replay = createReplayCache({ file: join(stateDir, 'replay.log'), maxEntries: 100 });
    const verifier = createAgentVerifier({ keys, nodeId: 'n1', capabilities: ['reader'], replay });
    const now = Math.floor(Date.now() / 1000);
    const claims = (jti: string) => ({
      request_id: 'r1',
      database: 'shop',
      node: 'n1',
      capability: 'reader' as const,
      mode: 'execute' as const,
      sql_sha256: sqlSha256('SELECT 1'),
      approved_rows: null,
      jti,
      iat: now,
      exp: now + 300,
    });
    const expect = { database: 'shop', mode: 'execute' as const, sql: 'SELECT 1' };
    ring.rotate();
    const r = await verifier.verify(ring.sign(claims('j1')), expect);
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(fetches, 1);
    // A key of another ring: refreshed again (rate limit 0 here), still not pinned.
    const rogue = createExecutionKeyRing({ dir: tmp() });
    const bad = await verifier.verify(rogue.sign(claims('j2')), expect);
    assert.deepEqual(bad, { ok: false, reason: 'unknown_kid' });
    assert.equal(fetches, 2);
    // The refused token consumed no replay slot; the accepted one did.
    assert.equal(replay.size(), 1);
    replay.close();
  });
});
