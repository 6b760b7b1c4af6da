import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { type CliError, EXIT, exitCodeForStatus, parseServerUrl } from './api-client.ts';
import { credentialsPath, loadCredentials, saveCredentials } from './credentials.ts';

test('server URLs: https anywhere, plain http only to loopback, never with credentials', () => {
  assert.equal(parseServerUrl('https://bulwark.example.com/'), 'https://bulwark.example.com');
  assert.equal(parseServerUrl('http://127.0.0.1:8080'), 'http://127.0.0.1:8080');
  assert.equal(parseServerUrl('http://localhost:8080'), 'http://localhost:8080');
  for (const bad of [
    'http://db.example.com',
    'ftp://x',
    'https://u:p@x.example',
    'nope',
    'https://x.example/?a=1',
  ]) {
    assert.throws(
      () => parseServerUrl(bad),
      (e: CliError) => e.exitCode === EXIT.usage,
      bad,
    );
  }
  assert.equal(parseServerUrl('http://db.example.com', true), 'http://db.example.com');
});

test('exit codes follow the HTTP status', () => {
  assert.equal(exitCodeForStatus(401), 5);
  assert.equal(exitCodeForStatus(403), 5);
  assert.equal(exitCodeForStatus(404), 6);
  assert.equal(exitCodeForStatus(400), 2);
  assert.equal(exitCodeForStatus(500), 1);
});

test('credentials: 0600 file in a 0700 dir, environment overrides, open files refused', () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'bulwark-cred-'));
  try {
    const env = { XDG_CONFIG_HOME: home };
    assert.equal(loadCredentials(env), null);
    const file = saveCredentials({ url: 'https://a.example', key: 'bwk_x' }, env);
    assert.equal(file, credentialsPath(env));
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.dirname(file)).mode & 0o777, 0o700);
    assert.deepEqual(loadCredentials(env), { url: 'https://a.example', key: 'bwk_x' });
    assert.deepEqual(loadCredentials({ ...env, BULWARK_KEY: 'bwk_y' }), {
      url: 'https://a.example',
      key: 'bwk_y',
    });
    fs.chmodSync(file, 0o644);
    assert.throws(() => loadCredentials(env), /chmod 600/);
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
});
