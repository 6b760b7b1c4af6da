import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadServerConfig } from '../src/server/config.ts';
import { oidcRedirectUrl } from '../src/server/modules/oidc/oidc.config.ts';

// The OIDC settings: https issuers (http on loopback only), a client secret from a file, the role
// map's syntax, and the settings an issuer needs.

const base = {
  BULWARK_DATABASE_URL: 'postgres://u:p4ss-word@127.0.0.1/db',
  BULWARK_SERVER_DATA_DIR: '/srv/b',
};
const oidc = {
  BULWARK_OIDC_ISSUER: 'https://idp.example.com/realms/main',
  BULWARK_OIDC_CLIENT_ID: 'bulwark',
  BULWARK_OIDC_CLIENT_SECRET: 's3cr3t-from-the-idp-0123456789',
  BULWARK_OIDC_REDIRECT_URL: 'https://bulwark.example.com/v1/auth/oidc/callback',
};

function load(env: Record<string, string>) {
  return loadServerConfig({ env: { ...base, ...env } });
}

function errors(env: Record<string, string>): string {
  const r = load(env);
  assert.equal(r.ok, false, 'expected the config to be refused');
  return r.ok ? '' : r.errors.join('\n');
}

test('OIDC is off by default: scope openid only, no profile, claim groups', () => {
  const r = load({});
  assert.ok(r.ok);
  assert.equal(r.config.oidcIssuer, undefined);
  assert.deepEqual(r.config.oidcScopes, ['openid']);
  assert.equal(r.config.oidcStoreProfile, false);
  assert.equal(r.config.oidcRoleClaim, 'groups');
  assert.deepEqual(r.config.oidcRoleMap, []);
});

test('a complete OIDC config, with the role map parsed and the secret read from a file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bulwark-oidc-config-'));
  try {
    const file = path.join(dir, 'client-secret');
    fs.writeFileSync(file, 'from-a-file-0123456789abcdef\n', { mode: 0o600 });
    const { BULWARK_OIDC_CLIENT_SECRET: _inline, ...rest } = oidc;
    const r = load({
      ...rest,
      BULWARK_OIDC_CLIENT_SECRET_FILE: file,
      BULWARK_OIDC_ROLE_MAP: 'db-admins=acme:admin, db-viewers=acme:viewer',
      BULWARK_OIDC_STORE_PROFILE: 'false',
    });
    assert.ok(r.ok, r.ok ? '' : r.errors.join('\n'));
    assert.equal(r.config.oidcClientSecret, 'from-a-file-0123456789abcdef');
    assert.deepEqual(r.config.oidcRoleMap, [
      { value: 'db-admins', account: 'acme', role: 'admin' },
      { value: 'db-viewers', account: 'acme', role: 'viewer' },
    ]);
    assert.equal(r.config.oidcStoreProfile, false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a role map value may itself hold "=": the last one splits it', () => {
  const r = load({ ...oidc, BULWARK_OIDC_ROLE_MAP: 'cn=ops=acme:viewer' });
  assert.ok(r.ok, r.ok ? '' : r.errors.join('\n'));
  assert.deepEqual(r.config.oidcRoleMap, [{ value: 'cn=ops', account: 'acme', role: 'viewer' }]);
});

test('http issuers and redirect URLs are refused unless on a loopback address', () => {
  assert.match(errors({ ...oidc, BULWARK_OIDC_ISSUER: 'http://idp.example.com' }), /oidcIssuer.*https/);
  assert.match(
    errors({ ...oidc, BULWARK_OIDC_REDIRECT_URL: 'http://bulwark.example.com/cb' }),
    /oidcRedirectUrl/,
  );
  assert.match(errors({ ...oidc, BULWARK_OIDC_ISSUER: 'https://user:pw@idp.example.com' }), /oidcIssuer/);
  for (const issuer of ['http://127.0.0.1:9000', 'http://[::1]:9000/realm', 'http://localhost:9000'])
    assert.ok(load({ ...oidc, BULWARK_OIDC_ISSUER: issuer }).ok, issuer);
});

test('an issuer needs a client id, a secret and a redirect URL (or a public URL)', () => {
  const {
    BULWARK_OIDC_CLIENT_ID: _a,
    BULWARK_OIDC_CLIENT_SECRET: _b,
    BULWARK_OIDC_REDIRECT_URL: _c,
    ...only
  } = oidc;
  const e = errors(only);
  assert.match(e, /oidcClientId/);
  assert.match(e, /oidcClientSecret/);
  assert.match(e, /oidcRedirectUrl/);
  const derived = load({
    ...only,
    ...{ BULWARK_OIDC_CLIENT_ID: 'x', BULWARK_OIDC_CLIENT_SECRET: 'long-enough-secret' },
    BULWARK_PUBLIC_URL: 'https://b.example.com/',
  });
  assert.ok(derived.ok, derived.ok ? '' : derived.errors.join('\n'));
  assert.equal(oidcRedirectUrl(derived.config), 'https://b.example.com/v1/auth/oidc/callback');
  assert.match(errors({ BULWARK_OIDC_CLIENT_ID: 'x' }), /need an issuer/);
});

test('a bad role map entry, a placeholder secret and scopes without openid are refused', () => {
  assert.match(errors({ ...oidc, BULWARK_OIDC_ROLE_MAP: 'dba=acme:superuser' }), /claim value=account:role/);
  assert.match(errors({ ...oidc, BULWARK_OIDC_ROLE_MAP: 'dba=Acme:admin' }), /claim value=account:role/);
  assert.match(errors({ ...oidc, BULWARK_OIDC_ROLE_MAP: '=acme:admin' }), /claim value=account:role/);
  assert.match(errors({ ...oidc, BULWARK_OIDC_CLIENT_SECRET: 'changeme' }), /placeholder/);
  assert.match(errors({ ...oidc, BULWARK_OIDC_SCOPES: 'email,profile' }), /must include openid/);
});
