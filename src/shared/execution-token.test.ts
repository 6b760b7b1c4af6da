import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, type KeyObject, randomUUID, sign } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  type ExecutionCapability,
  type ExecutionClaims,
  jwkThumbprint,
  pinnedKeysFromJwks,
  type ReplayGuard,
  signExecutionToken,
  sqlSha256,
  type VerifyOptions,
  verifyExecutionToken,
} from './execution-token.ts';

const SQL = 'UPDATE orders SET status = $$shipped$$ WHERE id = 42';
const T0 = Date.UTC(2026, 11, 2, 8, 0, 0);

function newSigner() {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const x = publicKey.export({ format: 'jwk' }).x!;
  return { kid: jwkThumbprint(x), privateKey, publicKey, x };
}

const server = newSigner();
const keys = new Map<string, KeyObject>([[server.kid, server.publicKey]]);

function claims(over: Partial<ExecutionClaims> = {}): ExecutionClaims {
  const iat = Math.floor(T0 / 1000);
  return {
    request_id: 'req_01',
    database: 'shop',
    node: 'node-a',
    capability: 'migrator',
    mode: 'execute',
    sql_sha256: sqlSha256(SQL),
    approved_rows: 1,
    jti: randomUUID(),
    iat,
    exp: iat + 300,
    ...over,
  };
}

function memoryReplay(): ReplayGuard {
  const seen = new Set<string>();
  return {
    admit(jti) {
      if (seen.has(jti)) return 'replayed';
      seen.add(jti);
      return 'ok';
    },
  };
}

function opts(over: Partial<VerifyOptions> = {}): VerifyOptions {
  return {
    keys,
    now: T0,
    maxSkewSeconds: 30,
    expect: { database: 'shop', node: 'node-a', mode: 'execute', sql: SQL },
    allowedCapabilities: ['reader', 'migrator'],
    replay: memoryReplay(),
    ...over,
  };
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
const reason = (token: string, o: VerifyOptions = opts()) => {
  const r = verifyExecutionToken(token, o);
  return r.ok ? 'ok' : r.reason;
};

describe('execution tokens', () => {
  it('round-trips: a token the server signed verifies with all its claims', () => {
    const c = claims();
    const r = verifyExecutionToken(signExecutionToken(server, c), opts());
    assert.deepEqual(r, { ok: true, kid: server.kid, claims: c });
  });

  it('is a compact JWS with the pinned header', () => {
    const [h] = signExecutionToken(server, claims()).split('.');
    assert.deepEqual(JSON.parse(Buffer.from(h!, 'base64url').toString()), {
      alg: 'EdDSA',
      typ: 'bulwark-exec+jwt',
      kid: server.kid,
    });
  });

  it('refuses a forged token (another key claiming our kid)', () => {
    const forger = newSigner();
    assert.equal(
      reason(signExecutionToken({ kid: server.kid, privateKey: forger.privateKey }, claims())),
      'bad_signature',
    );
  });

  it('refuses an unknown kid', () => {
    const other = newSigner();
    assert.equal(reason(signExecutionToken(other, claims())), 'unknown_kid');
  });

  it('refuses tampered SQL (the agent holds other text than the token binds)', () => {
    const token = signExecutionToken(server, claims());
    assert.equal(
      reason(
        token,
        opts({ expect: { database: 'shop', node: 'node-a', mode: 'execute', sql: `${SQL} OR true` } }),
      ),
      'sql_mismatch',
    );
    assert.equal(
      reason(
        token,
        opts({
          expect: { database: 'shop', node: 'node-a', mode: 'execute', sqlSha256: sqlSha256(`${SQL} `) },
        }),
      ),
      'sql_mismatch',
    );
  });

  it('refuses tampered claims and tampered signatures', () => {
    const [h, p, s] = signExecutionToken(server, claims()).split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
    for (const change of [
      { approved_rows: 1000 },
      { capability: 'reader' },
      { sql_sha256: sqlSha256('DROP TABLE orders') },
      { exp: payload.exp + 3600 },
    ])
      assert.equal(reason(`${h}.${b64({ ...payload, ...change })}.${s}`), 'bad_signature');
    const flipped = Buffer.from(s, 'base64url');
    flipped[0]! ^= 1;
    assert.equal(reason(`${h}.${p}.${flipped.toString('base64url')}`), 'bad_signature');
    assert.equal(reason(`${h}.${p}.${s.slice(0, -2)}`), 'bad_signature');
  });

  it('refuses alg none, HS256 keyed with the public key, and any other alg', () => {
    const c = claims();
    const none = `${b64({ alg: 'none', typ: 'bulwark-exec+jwt', kid: server.kid })}.${b64(c)}.`;
    assert.equal(reason(none), 'malformed'); // an empty signature part is not even a JWS here
    assert.equal(reason(`${none}AAAA`), 'alg');
    const hsInput = `${b64({ alg: 'HS256', typ: 'bulwark-exec+jwt', kid: server.kid })}.${b64(c)}`;
    const pub = server.publicKey.export({ format: 'pem', type: 'spki' });
    const hs = `${hsInput}.${createHmac('sha256', pub).update(hsInput).digest('base64url')}`;
    assert.equal(reason(hs), 'alg');
    const rsInput = `${b64({ alg: 'ES256', typ: 'bulwark-exec+jwt', kid: server.kid })}.${b64(c)}`;
    const sig = sign(null, Buffer.from(rsInput), server.privateKey).toString('base64url');
    assert.equal(reason(`${rsInput}.${sig}`), 'alg');
    // A signature by the right key does not help a header with extra members (jwk, crit…).
    const extraInput = `${b64({ alg: 'EdDSA', typ: 'bulwark-exec+jwt', kid: server.kid, jwk: {} })}.${b64(c)}`;
    const extraSig = sign(null, Buffer.from(extraInput), server.privateKey).toString('base64url');
    assert.equal(reason(`${extraInput}.${extraSig}`), 'malformed');
  });

  it('refuses garbage as malformed, never throws', () => {
    for (const t of ['', 'a.b', 'a.b.c.d', '...', 'x'.repeat(5000), 'é.é.é', `${b64([])}.${b64({})}.AA`])
      assert.equal(reason(t), 'malformed');
  });

  it('refuses a token signed with claims outside the format (lifetime over 5 minutes)', () => {
    const c = claims();
    const input = `${b64({ alg: 'EdDSA', typ: 'bulwark-exec+jwt', kid: server.kid })}.${b64({ ...c, exp: c.iat + 3600 })}`;
    const sig = sign(null, Buffer.from(input), server.privateKey).toString('base64url');
    assert.equal(reason(`${input}.${sig}`), 'malformed');
    assert.throws(() => signExecutionToken(server, { ...c, exp: c.iat + 301 }));
  });

  it('expiry: clock moved +6 min refused, -6 min refused as not yet valid, ±30 s skew accepted', () => {
    const c = claims();
    const token = () => signExecutionToken(server, { ...c, jti: randomUUID() });
    assert.equal(reason(token(), opts({ now: T0 + 6 * 60_000 })), 'expired');
    assert.equal(reason(token(), opts({ now: T0 - 6 * 60_000 })), 'not_yet_valid');
    assert.equal(reason(token(), opts({ now: T0 + 300_000 + 29_000 })), 'ok');
    assert.equal(reason(token(), opts({ now: T0 + 300_000 + 31_000 })), 'expired');
    assert.equal(reason(token(), opts({ now: T0 - 29_000 })), 'ok');
    assert.equal(reason(token(), opts({ now: T0 - 31_000 })), 'not_yet_valid');
  });

  it('throws (never accepts) on a NaN clock or an unbounded skew', () => {
    const token = signExecutionToken(server, claims());
    assert.throws(() => verifyExecutionToken(token, opts({ now: Number.NaN })));
    assert.throws(() => verifyExecutionToken(token, opts({ maxSkewSeconds: Number.POSITIVE_INFINITY })));
  });

  it('refuses another database and another node', () => {
    assert.equal(reason(signExecutionToken(server, claims({ database: 'billing' }))), 'wrong_database');
    assert.equal(reason(signExecutionToken(server, claims({ node: 'node-b' }))), 'wrong_node');
    // A dry-run token cannot commit, and an execute token cannot be spent as a grant of access.
    assert.equal(reason(signExecutionToken(server, claims({ mode: 'dry_run' }))), 'wrong_mode');
    assert.equal(reason(signExecutionToken(server, claims({ mode: 'access' }))), 'wrong_mode');
  });

  it('refuses a capability the local config forbids, whatever the server signed', () => {
    const only: ExecutionCapability[] = ['reader'];
    assert.equal(
      reason(signExecutionToken(server, claims()), opts({ allowedCapabilities: only })),
      'capability_forbidden',
    );
    assert.equal(
      reason(
        signExecutionToken(server, claims({ capability: 'reader' })),
        opts({ allowedCapabilities: new Set(only) }),
      ),
      'ok',
    );
  });

  it('refuses a replayed jti, and records nothing for a refused token', () => {
    const replay = memoryReplay();
    const token = signExecutionToken(server, claims());
    assert.equal(reason(token, opts({ replay })), 'ok');
    assert.equal(reason(token, opts({ replay })), 'replayed');
    const c = claims();
    const wrongDb = signExecutionToken(server, { ...c, database: 'billing' });
    assert.equal(reason(wrongDb, opts({ replay })), 'wrong_database');
    assert.equal(reason(signExecutionToken(server, c), opts({ replay })), 'ok'); // same jti: not consumed above
  });

  it('pinnedKeysFromJwks accepts our JWKS and refuses private, mismatched or foreign keys', () => {
    const jwk = { kty: 'OKP', crv: 'Ed25519', x: server.x, kid: server.kid, use: 'sig', alg: 'EdDSA' };
    const pinned = pinnedKeysFromJwks({ keys: [jwk] });
    assert.equal(reason(signExecutionToken(server, claims()), opts({ keys: pinned })), 'ok');
    const d = server.privateKey.export({ format: 'jwk' }).d;
    assert.throws(() => pinnedKeysFromJwks({ keys: [{ ...jwk, d }] }));
    assert.throws(() => pinnedKeysFromJwks({ keys: [{ ...jwk, kid: newSigner().kid }] }));
    assert.throws(() => pinnedKeysFromJwks({ keys: [{ ...jwk, alg: 'HS256' }] }));
    assert.throws(() => pinnedKeysFromJwks({ keys: [jwk, jwk] }));
    assert.throws(() => pinnedKeysFromJwks([jwk]));
  });
});
