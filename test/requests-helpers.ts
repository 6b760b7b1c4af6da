/**
 * Shared fixtures of the governed request tests: an account's signed-in people by role, HTTP calls
 * through the fully wired app, and a ready database row registered on a node.
 */
import assert from 'node:assert/strict';
import type { LightMyRequestResponse } from 'fastify';
import * as databasesRepo from '../src/server/modules/databases/databases.repo.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import type { TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';

export type Person = { id: string; name: string; headers: Record<string, string>; sessionId: string };

let seq = 0;

/** A signed-in member of the account with this role (a fresh sign-in: its step-up window is open). */
export async function person(
  s: TestServer,
  accountId: string,
  role: 'owner' | 'admin' | 'member' | 'viewer',
  prefix = 'p',
): Promise<Person> {
  const username = `${prefix}-${role}-${++seq}-${process.pid}`.slice(0, 60);
  const u = await createTestUser(s, { username, memberships: [{ accountId, role }] });
  const t = await signIn(s, u);
  return { id: u.id, name: username, headers: t.headers, sessionId: t.session.id };
}

/** A ready database row of the account on the node (the tenant database itself is the caller's). */
export async function readyDatabase(
  s: TestServer,
  o: { id: string; accountId: string; nodeId: string; name: string },
): Promise<void> {
  await databasesRepo.insertDatabase(s.db.pool, {
    id: o.id,
    accountId: o.accountId,
    nodeId: o.nodeId,
    name: o.name,
    passwordSealed: 'unused-in-this-test',
    allowlist: [],
    limits: { ...DEFAULT_LIMITS },
  });
  await databasesRepo.markReady(s.db.pool, o.id);
}

export function api(s: TestServer) {
  const call = (
    method: 'GET' | 'POST' | 'PUT',
    url: string,
    headers: Record<string, string>,
    payload?: object,
  ): Promise<LightMyRequestResponse> =>
    s.app.inject({
      method,
      url,
      headers: { ...headers, ...(payload ? { 'content-type': 'application/json' } : {}) },
      ...(payload ? { payload: JSON.stringify(payload) } : {}),
    });
  return {
    call,
    create: (db: string, h: Record<string, string>, body: object) =>
      call('POST', `/v1/databases/${db}/requests`, h, body),
    get: (db: string, id: string, h: Record<string, string>) =>
      call('GET', `/v1/databases/${db}/requests/${id}`, h),
    act: (db: string, id: string, what: string, h: Record<string, string>, body?: object) =>
      call('POST', `/v1/databases/${db}/requests/${id}/${what}`, h, body ?? {}),
    result: (db: string, id: string, h: Record<string, string>) =>
      call('GET', `/v1/databases/${db}/requests/${id}/result`, h),
  };
}

export function expectStatus(
  res: LightMyRequestResponse,
  status: number,
  code?: string,
): Record<string, unknown> {
  assert.equal(res.statusCode, status, res.body);
  const body = res.json() as Record<string, unknown>;
  if (code) assert.equal((body.error as { code: string }).code, code, res.body);
  return body;
}

/** Audit events of an action on one request. */
export async function auditOf(
  s: TestServer,
  action: string,
  requestId: string,
): Promise<
  { outcome: string; details: Record<string, unknown>; actor_type: string; actor_id: string | null }[]
> {
  const r = await s.db.pool.query(
    'SELECT outcome, details, actor_type, actor_id FROM audit_events WHERE action = $1 AND target_id = $2 ORDER BY id',
    [action, requestId],
  );
  return r.rows;
}
