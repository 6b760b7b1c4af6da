import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadServerConfig } from './config.ts';

const good = {
  BULWARK_DATABASE_URL: 'postgres://bulwark_server:s3cr3t-Long-Value@127.0.0.1:5433/bulwark',
  BULWARK_SERVER_DATA_DIR: '/var/lib/bulwark/server',
};

test('a complete server config parses into a frozen object with defaults', () => {
  const r = loadServerConfig({ env: good });
  assert.equal(r.ok, true);
  if (!r.ok) return;
  assert.equal(r.config.port, 8080);
  assert.equal(r.config.host, '127.0.0.1');
  assert.ok(Object.isFrozen(r.config));
});

test('every problem is reported at once', () => {
  const r = loadServerConfig({
    env: { BULWARK_PORT: '70000', BULWARK_LOG_LEVEL: 'loud', BULWARK_BODY_LIMIT_BYTES: '5' },
  });
  assert.equal(r.ok, false);
  if (r.ok) return;
  const text = r.errors.join('\n');
  for (const key of ['port', 'logLevel', 'bodyLimitBytes', 'databaseUrl', 'dataDir']) {
    assert.match(text, new RegExp(`^${key}`, 'm'), `expected an error for ${key}`);
  }
});

test('a placeholder secret is refused', () => {
  const r = loadServerConfig({
    env: { ...good, BULWARK_DATABASE_URL: 'postgres://bulwark:changeme@127.0.0.1/bulwark' },
  });
  assert.equal(r.ok, false);
  if (!r.ok) assert.match(r.errors.join('\n'), /placeholder/);
});

test('secrets can come from NAME_FILE, but not from both NAME and NAME_FILE', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfg-'));
  const file = path.join(dir, 'url');
  fs.writeFileSync(file, `${good.BULWARK_DATABASE_URL}\n`, { mode: 0o600 });
  const fromFile = loadServerConfig({
    env: { BULWARK_SERVER_DATA_DIR: '/x', BULWARK_DATABASE_URL_FILE: file },
  });
  assert.equal(fromFile.ok, true);
  if (fromFile.ok) assert.equal(fromFile.config.databaseUrl, good.BULWARK_DATABASE_URL);
  const both = loadServerConfig({ env: { ...good, BULWARK_DATABASE_URL_FILE: file } });
  assert.equal(both.ok, false);
  const missing = loadServerConfig({
    env: { BULWARK_SERVER_DATA_DIR: '/x', BULWARK_DATABASE_URL_FILE: `${file}.nope` },
  });
  assert.equal(missing.ok, false);
  fs.rmSync(dir, { recursive: true });
});

test('unknown keys in a config file are refused, and the environment overrides the file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfg-'));
  const file = path.join(dir, 'server.json');
  fs.writeFileSync(
    file,
    JSON.stringify({ port: 9000, dataDir: '/d', databaseUrl: good.BULWARK_DATABASE_URL }),
  );
  const r = loadServerConfig({ env: { BULWARK_PORT: '9100' }, file });
  assert.equal(r.ok, true);
  if (r.ok) assert.equal(r.config.port, 9100);
  fs.writeFileSync(file, JSON.stringify({ prot: 9000 }));
  const bad = loadServerConfig({ env: good, file });
  assert.equal(bad.ok, false);
  if (!bad.ok) assert.match(bad.errors.join('\n'), /prot/);
  fs.writeFileSync(file, '{not json');
  assert.equal(loadServerConfig({ env: good, file }).ok, false);
  fs.rmSync(dir, { recursive: true });
});
