import { isJitLoginOf } from '../../shared/access-login.ts';
import {
  accessGrantText,
  EXECUTION_JOB_KINDS,
  type GrantAccessPayload,
  grantAccessPayloadSchema,
} from '../../shared/contracts/execution.ts';
import { type ExecutionMode, sqlSha256, type VerifyResult } from '../../shared/execution-token.ts';
import { roleNames } from '../../shared/identifiers.ts';
import { MAX_ACCESS_LOGINS } from '../pgbouncer/pooler-state.ts';
import { accessMarker, ensureAccessRole, findAccessRole, storedVerifier } from '../postgres/access-sql.ts';
import { NotOursError } from '../postgres/tenant-sql.ts';
import { type AccessRevokeDeps, accessRevoke } from './access-revoke.ts';
import { classify, parsePayload } from './database-common.ts';
import { type JobHandler, PermanentJobError } from './job-context.ts';

/** The agent's token check (execution/agent-verifier.ts `verify`): pinned keys, node, replay cache. */
export type AccessTokenVerifier = (
  token: string,
  expect: { database: string; mode: ExecutionMode; sqlSha256: string },
) => Promise<VerifyResult>;

export type AccessGrantDeps = AccessRevokeDeps & {
  verify: AccessTokenVerifier;
  /** Told after a login is made, so the agent's own expiry timer covers it (access-expiry.ts). */
  onGranted?: () => void;
  now?: () => number;
};

/** The longest grant the agent accepts (the request API allows up to a year). */
export const MAX_ACCESS_VALIDITY_MS = 366 * 24 * 3600 * 1000;

export const GRANT_STEPS = ['verify', 'role', 'pooler'] as const;

/**
 * `access.grant`: a time-boxed login for one approved access request. Nothing is touched before
 * the token holds: signed by a pinned key, for this node and database, mode `access`, with
 * `sql_sha256` equal to the hash of accessGrantText() recomputed from this job's own fields (the
 * server cannot sign one grant and send another), a capability this node allows, a jti never seen.
 * Then the role (access-sql.ts), then PgBouncer: its auth file and hba take the login under the
 * database's allowlist until `valid_until` (the reload is proven by the pooler's probe login).
 *
 * A retried job carries the same token, which the replay cache then refuses; the retry may still
 * finish a grant whose login an earlier attempt made — same grant marker, same verifier — since
 * it only repeats what the token already allowed. Anything else refused is permanent.
 */
export function accessGrant(deps: AccessGrantDeps): JobHandler {
  const now = deps.now ?? Date.now;
  const step = (name: (typeof GRANT_STEPS)[number]) => deps.onStep?.(EXECUTION_JOB_KINDS.grantAccess, name);
  return async (payload, ctx) => {
    const p = parsePayload(grantAccessPayloadSchema, payload);
    const validUntil = new Date(p.valid_until);
    try {
      if (!isJitLoginOf(p.name, p.login))
        throw new PermanentJobError(`login ${p.login} is not a just-in-time login name of ${p.name}`);
      const left = validUntil.getTime() - now();
      if (!(left > 0)) throw new PermanentJobError('the grant is already past its valid_until');
      if (left > MAX_ACCESS_VALIDITY_MS) throw new PermanentJobError('the grant is valid for too long');
      // Local checks first: a refusal here leaves the token's jti unspent.
      const entry = deps.pooler.state().databases[p.name];
      if (!entry) throw new NotOursError(`database ${p.name} is not on this node's pooler`);
      if (!entry.access?.some((l) => l.login === p.login) && (entry.access?.length ?? 0) >= MAX_ACCESS_LOGINS)
        throw new PermanentJobError(`database ${p.name} already has ${MAX_ACCESS_LOGINS} live logins`);
      await step('verify');
      await verifyGrant(deps, ctx.admin, p);

      await step('role');
      await ensureAccessRole(ctx.admin, {
        databaseId: p.database_id,
        grantId: p.grant_id,
        login: p.login,
        capability: p.capability,
        verifier: p.verifier,
        validUntil,
        roles: roleNames(p.name),
      });
      deps.onGranted?.();

      await step('pooler');
      const login = {
        login: p.login,
        verifier: p.verifier,
        valid_until: validUntil.toISOString(),
        grant_id: p.grant_id,
      };
      await deps.pooler.update((s) => {
        const db = s.databases[p.name];
        if (!db) throw new NotOursError(`database ${p.name} is not on this node's pooler`);
        const others = (db.access ?? []).filter((l) => l.login !== p.login);
        return { ...s, databases: { ...s.databases, [p.name]: { ...db, access: [...others, login] } } };
      });
      ctx.log.info({ database: p.name, login: p.login, valid_until: login.valid_until }, 'access granted');
      return { login: p.login, valid_until: login.valid_until };
    } catch (err) {
      throw classify(err);
    }
  };
}

/** The token must bind this very grant; a replay only finishes what an earlier attempt started. */
async function verifyGrant(
  deps: AccessGrantDeps,
  admin: Parameters<typeof findAccessRole>[0],
  p: GrantAccessPayload,
) {
  const verdict = await deps.verify(p.token, {
    database: p.name,
    mode: 'access',
    sqlSha256: sqlSha256(accessGrantText(p)),
  });
  if (verdict.ok) return;
  if (verdict.reason === 'replayed') {
    const role = await findAccessRole(admin, p.login);
    // Still able to log in: a login already revoked (NOLOGIN, left because it owns something) is
    // never brought back by a replay.
    if (
      role?.marker === accessMarker(p.database_id, p.grant_id) &&
      role.canLogin &&
      (await storedVerifier(admin, p.login)) === p.verifier
    )
      return;
  }
  throw new PermanentJobError(`access token refused: ${verdict.reason}`);
}

/** The just-in-time credential kinds, offered by an agent that manages a pooler and verifies tokens. */
export function accessHandlers(deps: AccessGrantDeps): [string, JobHandler][] {
  return [
    [EXECUTION_JOB_KINDS.grantAccess, accessGrant(deps)],
    [EXECUTION_JOB_KINDS.revokeAccess, accessRevoke(deps)],
  ];
}
