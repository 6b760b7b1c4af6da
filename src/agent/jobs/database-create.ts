import {
  type CreateResult,
  createPayloadSchema,
  type DatabaseLimits,
  DEFAULT_LIMITS,
  JOB_KINDS,
} from '../../shared/contracts/jobs.ts';
import { isReservedDatabaseName, roleNames } from '../../shared/identifiers.ts';
import { scramVerifierAsync } from '../../shared/scram.ts';
import { type AllowlistEntry, coversLoopback, normaliseAllowlist } from '../pgbouncer/pooler-state.ts';
import { claimedSpareOf, isSpareName, spareOwnerPassword } from '../postgres/spare-sql.ts';
import { connectSteward, stewardPassword } from '../postgres/steward.ts';
import {
  dropOurRoles,
  ensureDatabase,
  ensureRoles,
  ensureStewardRole,
  grantDatabase,
  NotOursError,
  resetSettings,
  setOwnerPassword,
  setupSchema,
} from '../postgres/tenant-sql.ts';
import { classify, type DatabaseJobDeps, getSecret, parsePayload, proveLogin } from './database-common.ts';
import { type JobHandler, PermanentJobError } from './job-context.ts';

/** The steps of `database.create`, in order; each is idempotent, so a rerun resumes anywhere. */
export const CREATE_STEPS = ['roles', 'database', 'grants', 'schema', 'pooler', 'probe', 'done'] as const;
/**
 * The warm path's own steps (ADR 0028): before the claim of a spare, and right after its commit
 * (the database is then the tenant's; a rerun finishes it on the cold path's idempotent steps).
 */
export const WARM_STEPS = ['claim', 'claimed'] as const;
type Step = (typeof CREATE_STEPS)[number] | (typeof WARM_STEPS)[number];

/**
 * `database.create`: five roles, the database (owned by the steward), its privileges, the pooler
 * entry, then a login through PgBouncer as the owner. A rerun also puts back what the tenant may
 * have changed: role- and database-level settings, a legacy database's ownership. Ready only when that login works. A name collision with
 * something that is not ours fails permanently and removes what this job made.
 *
 * Latency (issue 4, ≤ 1.5× the raw SQL): after the roles, independent branches run at once —
 * CREATE DATABASE, then its privileges (database grants, and the schema setup on a steward
 * connection opened meanwhile); the pooler apply (render, write, RELOAD, proof of the reload:
 * it needs only the owner's verifier, not the database); the owner's password fetch; and,
 * once the database exists and the reload is proven, the owner's login through PgBouncer.
 * The job succeeds only when every branch has, so `ready` still means: every privilege set
 * and a real owner login through the pooler worked.
 *
 * Warm path (ADR 0028, ADR 0034): with a ready spare in the node's warm pool, the claim (one
 * transaction on a kept admin connection: check, markers, logins, limits) replaces the roles, the
 * database, the grants, the schema setup and the pooler apply — the spare keeps its generated
 * names (the database's physical name, reported as `physical_name`) and its pooler entry, made
 * with it; its owner's password is the spare's (`owner_password`, sealed by the server). The
 * steward's password for the database id is set in the claim's own transaction. The owner's
 * proving login through PgBouncer begins beside the claim when the spare needs nothing changed
 * first (its allowlist, the default limits, no loopback rule): PgBouncer's kept session of the
 * spare serves it, and the job reports only when both are done (without that session the login
 * meets an owner without LOGIN, and is made again once the claim has committed). Otherwise it
 * follows the claim. A PgBouncer reload only when the create's allowlist differs from the spare's
 * entry. An empty pool or a tampered spare: the
 * cold path below, unchanged (physical name = the payload's name).
 */
/** Longer than PgBouncer's server_login_retry (15 s, its default, which the rendered config keeps). */
const LOCKOUT_WAIT_MS = 20_000;
/** PgBouncer refusing or holding a login after a refused server login (server_login_retry). */
const isPoolerLoginHold = (err: unknown) =>
  /server_login_retry|server login has been failing|timeout expired|timeout exceeded/i.test(
    String((err as Error)?.message),
  );

const sameAllowlist = (a: readonly AllowlistEntry[], b: readonly AllowlistEntry[]) =>
  a.length === b.length && a.every((e, i) => e.cidr === b[i]!.cidr && e.expires_at === b[i]!.expires_at);

export function databaseCreate(deps: DatabaseJobDeps): JobHandler {
  const step = (name: Step) => deps.onStep?.(JOB_KINDS.create, name);
  return async (payload, ctx) => {
    const p = parsePayload(createPayloadSchema, payload);
    // A spare's or a generated name is a physical name the server may send (a database moving
    // here keeps it, ADR 0034; a new database's is generated, ADR 0039); every other reserved
    // name is refused. A generated one for a new database may give way to a spare's own name.
    const physicalGiven = isSpareName(p.name);
    const spareServes = !physicalGiven || p.generated_name === true;
    if (isReservedDatabaseName(p.name) && !physicalGiven)
      throw new PermanentJobError(`database name ${p.name} is reserved`);
    const roles = roleNames(p.name);
    const now = deps.now ?? Date.now;
    const t0 = performance.now();
    const steps: Record<string, number> = {};
    const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
      const t = performance.now();
      try {
        return await fn();
      } finally {
        steps[name] = Math.round((performance.now() - t) * 100) / 100;
      }
    };
    const allowlist = normaliseAllowlist(p.allowlist, now());
    const login = { database: p.name, user: roles.owner };
    // The proving login comes from 127.0.0.1: open it in the same reload when not allowed anyway.
    const loopback = !coversLoopback(allowlist.map((e) => e.cidr));
    let probeMs = 0;
    let poolerTouched = false;
    let warm: { physical: string; password: string } | null = null;
    /** The proving login begun beside the claim (its ms), when the spare needs nothing changed first. */
    let early: Promise<number> | null = null;
    /** Whose loopback rule the `finally` ends (the physical name's, on the warm path). */
    let loopbackOf = p.name;
    // The warm pool refills only once this job has been reported (never competing with it).
    const release = deps.warmPool?.hold();
    if (release) {
      if (ctx.afterReport) ctx.afterReport(release);
      else queueMicrotask(release);
    }
    // Spares made from now on get this create's allowlist in their pooler entry.
    deps.warmPool?.useAllowlist(allowlist);
    // The cold path's secret round trip to the server overlaps its work (nothing waits on it until
    // the probe); the warm path knows the spare's password and never asks.
    let secretRun: Promise<string> | null = null;
    const secret = () => {
      secretRun ??= timed('secret', () => getSecret(ctx));
      secretRun.catch(() => {});
      return secretRun;
    };
    // The steward's verifier (4096 PBKDF2 rounds) off the event loop, while the job starts.
    const verifierOfSteward = (r: typeof roles) => {
      const v = scramVerifierAsync(stewardPassword(deps.cluster.key, p.database_id, r));
      v.catch(() => {});
      return v;
    };
    let pooledRun: Promise<void> | null = null;
    const pooled = () =>
      (pooledRun ??= (async () => {
        await step('pooler');
        poolerTouched = true;
        const applied = await deps.pooler.update(
          (s) => ({
            ...s,
            databases: {
              ...s.databases,
              [p.name]: { name: p.name, owner: roles.owner, verifier: p.verifier, allowlist },
            },
          }),
          loopback ? { loopbackFor: login } : {},
        );
        steps.pooler = Math.round(applied.ms * 100) / 100;
        for (const [k, v] of Object.entries(applied.phases)) steps[`pooler_${k}`] = Math.round(v * 100) / 100;
      })());
    // The owner (who owns the database, so needs no grant) logs in through PgBouncer once the
    // database exists and the reload is proven.
    const prove = async () => {
      await step('probe');
      const password = await secret();
      probeMs = await timed('probe', () => proveLogin(deps, { ...login, password }));
    };
    const settle = async (branches: Promise<unknown>[]) => {
      const results = await Promise.allSettled(branches);
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
    };
    try {
      // A name to keep (a move's) is made under it: never from a spare. Nor is a rerun's: what an
      // earlier attempt began on the cold path is finished there.
      const pool = !spareServes || (ctx.attempt ?? 1) > 1 ? undefined : deps.warmPool;
      // A rerun whose earlier run's claim committed: that spare is this database (ADR 0034).
      const before =
        (ctx.attempt ?? 1) > 1 && spareServes ? await claimedSpareOf(ctx.admin, p.database_id, p.name) : null;
      // The spare was made with the default limits, and PgBouncer may hold a session opened then
      // (the pool's warm-up): other limits are set by the claim, and that session, whose settings
      // are the spare's, is closed before anyone uses it.
      const otherLimits = (Object.keys(DEFAULT_LIMITS) as (keyof DatabaseLimits)[]).some(
        (k) => p.limits[k] !== DEFAULT_LIMITS[k],
      );
      if (before !== null)
        warm = { physical: before, password: spareOwnerPassword(deps.cluster.key, before) };
      else if (pool && pool.stats().ready > 0) {
        await step('claim');
        const outcome = await timed('claim', () =>
          pool.claim(
            {
              databaseId: p.database_id,
              limits: p.limits,
              // The steward's password for this id (derived) goes in the claim's transaction.
              stewardVerifier: (spare) => verifierOfSteward(roleNames(spare)),
            },
            (spare) => {
              // The spare's entry and its kept owner session serve the proving login as they are
              // (same allowlist, default limits, no loopback rule to add): it starts beside the
              // claim — only while PgBouncer holds that session (see KEPT_SESSION_TRUST_MS: a
              // login that made it open one would be refused, and lock the database out for 15 s).
              if (!spare.warmSession || loopback || otherLimits || !sameAllowlist(spare.allowlist, allowlist))
                return;
              const login = { database: spare.name, user: roleNames(spare.name).owner };
              const t = performance.now();
              early = deps.pooler.serverHeld(login.database, login.user).then(async (held) => {
                if (!held) throw new Error('no kept session: the proving login waits for the claim');
                await proveLogin(deps, { ...login, password: spare.password });
                return performance.now() - t;
              });
              early.catch(() => {});
            },
          ),
        );
        if (outcome.claimed) warm = { physical: outcome.spare, password: outcome.password };
        else ctx.log.info({ reason: outcome.reason }, 'warm pool not used; creating the database');
      }
      if (warm) {
        await step('claimed');
        const { physical, password } = warm;
        const r = roleNames(physical);
        loopbackOf = physical;
        // The spare's entry serves its owner already; only another allowlist (or a loopback
        // rule for the proof) needs a reload.
        const entry = deps.pooler.state().databases[physical];
        if (!entry) throw new Error(`database ${physical} has no pooler entry`);
        const reload =
          loopback || !sameAllowlist(entry.allowlist, allowlist)
            ? (async () => {
                const applied = await deps.pooler.update(
                  (s) => ({
                    ...s,
                    databases: { ...s.databases, [physical]: { ...s.databases[physical]!, allowlist } },
                  }),
                  loopback ? { loopbackFor: { database: physical, user: r.owner } } : {},
                );
                steps.pooler = Math.round(applied.ms * 100) / 100;
              })()
            : Promise.resolve();
        reload.catch(() => {});
        // A rerun's: the steward's password for this id (derived), beside the proving login (a
        // claim of this job set it in its own transaction).
        const steward =
          before === null
            ? Promise.resolve()
            : timed('steward', async () =>
                setOwnerPassword(ctx.admin, r.steward, await verifierOfSteward(r)),
              );
        const proveNow = async () => {
          await step('probe');
          probeMs = await timed('probe', () =>
            proveLogin(deps, { database: physical, user: r.owner, password }),
          );
        };
        // After a login begun early failed: if the kept session went between PgBouncer's listing
        // and that login (its lifetime ended, PostgreSQL restarted), PgBouncer met an owner
        // without LOGIN and now holds new logins to the database for its server_login_retry
        // (15 s): wait that out (bounded) rather than fail the create. The tenant gets the
        // database only after this login worked, so never meets the hold.
        const proveAfterEarly = async () => {
          const deadline = performance.now() + LOCKOUT_WAIT_MS;
          for (let i = 0; ; i++) {
            try {
              await proveNow();
              if (i > 0) steps.probe_waited_lockout = 1;
              return;
            } catch (err) {
              if (performance.now() > deadline || !isPoolerLoginHold(err)) throw err;
              await new Promise((res) => setTimeout(res, 500));
            }
          }
        };
        const begun = early as Promise<number> | null;
        const proved = begun
          ? // Begun beside the claim, through the spare's kept session. Without that session (closed
            // by PgBouncer's idle timeout) it met an owner without LOGIN: once more, now that the
            // claim has committed.
            begun.then((ms) => {
              probeMs = ms;
              steps.probe = Math.round(ms * 100) / 100;
              steps.probe_beside_claim = 1;
            }, proveAfterEarly)
          : reload.then(async () => {
              if (otherLimits) await deps.pooler.reconnect(physical);
              await proveNow();
            });
        await settle([reload, steward, proved]);
      }
      if (!warm) {
        await step('roles');
        secret();
        const stewardVerifier = verifierOfSteward(roles);
        // The pooler apply (it needs only the owner's verifier) overlaps the roles as well.
        const pooler = pooled();
        pooler.catch(() => {});
        // The steward (the database's owner) first; the other roles, passwords and limits beside
        // CREATE DATABASE (ADR 0037).
        await timed('steward_role', () => ensureStewardRole(ctx.admin, { databaseId: p.database_id, roles }));
        const rolesDone = timed('roles', async () =>
          ensureRoles(ctx.admin, {
            databaseId: p.database_id,
            roles,
            verifier: p.verifier,
            limits: p.limits,
            key: deps.cluster.key,
            stewardVerifier: await stewardVerifier,
            // Beside CREATE DATABASE, whose WAL it would otherwise wait behind: the database grants,
            // a synchronous commit begun only after this one, flush it before the job can end.
            asyncCommit: true,
          }),
        );
        rolesDone.catch(() => {});
        const created = (async () => {
          await step('database');
          const made = await timed('database', () => ensureDatabase(ctx.admin, p.name, roles, p.database_id));
          // A rerun: per-database settings of any role (the tenant's `ALTER ROLE … IN DATABASE`).
          if (made === 'exists') await timed('settings', () => resetSettings(ctx.admin, p.name, roles, null));
        })();
        // Privileges as soon as the database exists: the steward's connection into it opens while
        // the database grants run, then the schema setup runs on it.
        const privileges = Promise.all([created, rolesDone]).then(async () => {
          const conn = timed('schema_connect', () =>
            connectSteward(deps.cluster, { databaseId: p.database_id, name: p.name, roles }),
          );
          conn.catch(() => {});
          try {
            await step('grants');
            await timed('grants', () => grantDatabase(ctx.admin, p.name, roles));
            await step('schema');
            const c = await conn;
            await timed('schema', () => setupSchema(c, roles));
          } finally {
            await conn.then((c) => c.end()).catch(() => {});
          }
        });
        // The job ends only when every branch is done.
        const proved = Promise.all([created, rolesDone, pooler]).then(prove);
        await settle([rolesDone, created, pooler, privileges, proved]);
      }
    } catch (err) {
      if (err instanceof NotOursError) {
        // Clean failure: nothing of ours stays behind (the database, if any, is not ours).
        // The pooler entry (added while the roles and CREATE DATABASE ran) goes too, once its
        // apply is over; the roles go regardless.
        await (pooledRun as Promise<void> | null)?.catch(() => {});
        if (poolerTouched && deps.pooler.state().databases[p.name]) {
          await deps.pooler
            .update((s) => {
              const { [p.name]: _gone, ...rest } = s.databases;
              return { ...s, databases: rest };
            })
            .catch((e: Error) => ctx.log.warn({ err: { message: e.message } }, 'pooler entry not removed'));
        }
        await dropOurRoles(ctx.admin, roles, p.database_id);
      }
      throw classify(err);
    } finally {
      if (loopback) await deps.pooler.endLoopback(loopbackOf);
    }
    await step('done');
    steps.total = Math.round((performance.now() - t0) * 100) / 100;
    steps.warm = warm ? 1 : 0;
    const result: CreateResult = {
      name: p.name,
      roles: warm ? roleNames(warm.physical) : roles,
      physical_name: warm ? warm.physical : p.name,
      ...(warm ? { owner_password: warm.password } : {}),
      pooler_probe_ms: Math.round(probeMs * 100) / 100,
      steps_ms: steps,
    };
    return result;
  };
}
