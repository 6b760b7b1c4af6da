import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { openFileLimits, withRaisedNofile } from './pgbouncer-process.ts';

test('PgBouncer starts with its open-file soft limit raised to the hard limit, arguments kept as arguments', () => {
  const self = openFileLimits('self');
  assert.ok(self && self.soft > 0 && self.hard >= self.soft);
  // As if this process ran with a low soft limit (systemd's default is 1024).
  const hard = Math.min(self.hard, 8_192);
  const soft = Math.min(512, hard);
  const raised = withRaisedNofile('/bin/sh', ['-c', 'ulimit -Sn; printf "%s|" "$@"', 'x', '$(id)', 'a b;c'], {
    soft,
    hard,
  });
  const out = execFileSync('prlimit', [`--nofile=${soft}:${hard}`, raised.cmd, ...raised.args], {
    encoding: 'utf8',
  });
  assert.equal(out, `${hard}\n$(id)|a b;c|`);
  // Nothing to raise: the program runs as given.
  assert.deepEqual(withRaisedNofile('/usr/sbin/pgbouncer', ['/p/ini'], { soft: hard, hard }), {
    cmd: '/usr/sbin/pgbouncer',
    args: ['/p/ini'],
  });
});
