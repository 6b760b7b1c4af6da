import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadAgentConfig } from './config.ts';

test('the agent refuses plain http to a non-loopback server unless allowed', () => {
  const base = {
    BULWARK_AGENT_STATE_DIR: '/var/lib/bulwark/agent',
    BULWARK_AGENT_ADMIN_DATABASE_URL: 'postgres://admin:Long-Admin-Secret@127.0.0.1:5433/postgres',
  };
  for (const url of [
    'http://bulwark.example.com',
    'http://10.0.0.5:8080',
    'http://[2001:db8::1]:8080',
    'ftp://x',
  ]) {
    assert.equal(loadAgentConfig({ env: { ...base, BULWARK_SERVER_URL: url } }).ok, false, url);
  }
  for (const url of [
    'https://bulwark.example.com',
    'http://127.0.0.1:8080',
    'http://localhost:8080',
    'http://[::1]:8080',
  ]) {
    assert.equal(loadAgentConfig({ env: { ...base, BULWARK_SERVER_URL: url } }).ok, true, url);
  }
  assert.equal(
    loadAgentConfig({
      env: { ...base, BULWARK_SERVER_URL: 'http://10.0.0.5:8080', BULWARK_AGENT_ALLOW_INSECURE: 'true' },
    }).ok,
    true,
  );
});

test('execution capabilities: reader,migrator by default; an operator narrows them to reader or none', () => {
  const env = {
    BULWARK_SERVER_URL: 'https://bulwark.example.com',
    BULWARK_AGENT_STATE_DIR: '/var/lib/bulwark/agent',
    BULWARK_AGENT_ADMIN_DATABASE_URL: 'postgres://admin:Long-Admin-Secret@127.0.0.1:5433/postgres',
  };
  const caps = (v?: string) => {
    const r = loadAgentConfig({
      env: v === undefined ? env : { ...env, BULWARK_AGENT_EXECUTION_CAPABILITIES: v },
    });
    return r.ok ? r.config.executionCapabilities : null;
  };
  assert.deepEqual(caps(), ['reader', 'migrator']);
  assert.deepEqual(caps('reader'), ['reader']);
  assert.deepEqual(caps(' migrator , reader,reader'), ['migrator', 'reader']);
  assert.deepEqual(caps('none'), []);
  assert.equal(caps('admin'), null);
  assert.equal(caps('reader,none'), null);
  assert.equal(caps(','), null);
});
