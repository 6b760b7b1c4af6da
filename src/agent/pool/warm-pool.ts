/**
 * The warm pool (ADR 0028, ADR 0034): N spare databases per node, made ahead of time — with
 * their pooler entry — so that a `database.create` only marks one as the tenant's and enables its
 * logins (postgres/spare-sql.ts) instead of waiting for CREATE DATABASE, the grants, a login into
 * the new database for the schema setup and a PgBouncer reload.
 *
 * - A spare's pooler entry (its owner's verifier, `spareOwnerPassword`, and the allowlist of the
 *   node's latest create) is added before the spare is marked ready and removed when it is
 *   destroyed; its owner has no LOGIN until the claim, so the entry lets nobody in.
 * - Claim is atomic twice over: in this process a spare leaves the `ready` list synchronously
 *   before anything awaits (two jobs can never take the same one), and in the cluster the claim
 *   is one transaction whose check requires the spare's markers (a second claim of the same spare
 *   fails: the markers are the tenant's). An error leaves the spare where the transaction left
 *   it: the pool re-lists its spares from the catalog before the next refill, so one is never
 *   lost nor counted twice.
 * - Refill runs in the background, one spare at a time, never while a create is running: a
 *   create holds the pool (`hold`) until its job has been reported.
 * - Checks: the cluster-level check runs inside every claim; the in-database fingerprint (a
 *   digest of everything made inside the spare) is taken when the spare is made and compared
 *   at start-up, on every drift job and every `auditMs`. A spare that fails either is never
 *   handed out: it is reported, destroyed and replaced.
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import { quoteIdent as q, roleNames } from '../../shared/identifiers.ts';
import { scramVerifierAsync } from '../../shared/scram.ts';
import type { PoolerManager } from '../pgbouncer/pooler-manager.ts';
import { type AllowlistEntry, coversLoopback } from '../pgbouncer/pooler-state.ts';
import type { DriftFinding } from '../postgres/drift.ts';
import {
  buildSpare,
  type ClaimTarget,
  claimSpareSql,
  connectSpare,
  destroySpare,
  dropSpareRoles,
  listSpares,
  newSpareName,
  rewarmSpare,
  SPARE_PREFIX,
  spareFingerprint,
  spareOwnerPassword,
  spareProblems,
  spareTag,
} from '../postgres/spare-sql.ts';
import { type ClusterAccess, isLoginRefused } from '../postgres/steward.ts';

export type WarmPoolOptions = {
  admin: pg.Pool;
  cluster: ClusterAccess;
  /** The node's PgBouncer config: each spare has its entry there before it is ready. */
  pooler: PoolerManager;
  /**
   * A login through PgBouncer as a spare's owner (the agent's proving login), made once while the
   * spare is being made: PgBouncer keeps the server connection it opened, so the create's proving
   * login and the tenant's first one find a PostgreSQL session ready instead of starting one.
   */
  warmUp?: (login: { database: string; user: string; password: string }) => Promise<unknown>;
  /** How many spares to keep (0: the pool is off). */
  size: number;
  log: Logger;
  /** Between two in-database checks of every spare (default 10 min; 0: only at start-up and on drift). */
  auditMs?: number;
  /** After the last create is reported, how long the refill waits before it starts (default 250 ms). */
  refillDelayMs?: number;
  /**
   * How often each ready spare's PgBouncer session is used again, so that PgBouncer keeps it
   * (default 2 min, under `KEPT_SESSION_TRUST_MS`; 0: never, a spare's session then lasts until
   * PgBouncer's idle timeout).
   */
  keepWarmMs?: number;
};

export type WarmPoolStats = { size: number; ready: number };

/**
 * A claim: `claimed` with the spare (the database's physical name from now on) and its owner's
 * password, or why the cold path runs instead.
 */
export type ClaimOutcome =
  | { claimed: true; spare: string; password: string; allowlist: readonly AllowlistEntry[] }
  | { claimed: false; reason: 'empty' | 'tampered' | 'error' };

/**
 * How long after its warm-up a spare's kept PgBouncer session is trusted to be there still: half
 * PgBouncer's `server_idle_timeout` (600 s, its default, which the rendered config keeps). A
 * proving login begun before the claim commits needs that session: without it PgBouncer opens a
 * new one, PostgreSQL refuses the owner (no LOGIN yet), and PgBouncer then fails every new login
 * to that database at once for `server_login_retry` (15 s) — the tenant's first one included.
 */
export const KEPT_SESSION_TRUST_MS = 300_000;
/** How often a ready spare's kept session is used again (`keepWarmMs`' default). */
export const KEEP_WARM_MS = 120_000;

/** The spare a claim took, told before its transaction is sent (`claim`'s `onChosen`). */
export type ChosenSpare = {
  name: string;
  password: string;
  allowlist: readonly AllowlistEntry[];
  /** Warmed up (its owner's PgBouncer session opened) less than `KEPT_SESSION_TRUST_MS` ago. */
  warmSession: boolean;
};

const isTamper = (err: unknown) => /^spare \S+ tampered:/.test(String((err as Error)?.message));

export function createWarmPool(opts: WarmPoolOptions) {
  const { admin, cluster, pooler, log } = opts;
  const now = () => performance.now();
  const tag = spareTag(cluster.key);
  const prefix = `${SPARE_PREFIX}${tag}_`;
  /**
   * The allowlist new spares' pooler entries get: the latest create's (permanent entries only),
   * so a create with the node's usual allowlist needs no PgBouncer reload. Empty until then.
   */
  let allowlist: readonly AllowlistEntry[] = [];
  /** Ready spares, oldest first; a spare under an in-database check is out of this list. */
  let ready: { name: string; fingerprint: string; warmedAt?: number }[] = [];
  /** Creates running now (refill waits for them). */
  let holds = 0;
  let releaseWaiters: (() => void)[] = [];
  let filling: Promise<void> | null = null;
  /** Set when the catalog must be re-read before trusting `ready` (after an unclear claim). */
  let relist = true;
  let stopped = false;
  let auditTimer: NodeJS.Timeout | undefined;
  let keepWarmTimer: NodeJS.Timeout | undefined;
  let keepingWarm: Promise<void> | null = null;
  let refillTimer: NodeJS.Timeout | undefined;
  /** Resolves when a refill scheduled after a create's report starts (null: none scheduled). */
  let refillDue: Promise<void> | null = null;
  let refillFired: () => void = () => {};
  /** Spares out of `ready` while an in-database check runs (a re-listing leaves them alone). */
  const checking = new Set<string>();
  /** Tampered spares found by a check, reported by the next drift job. */
  let pendingFindings: DriftFinding[] = [];

  const tampered = (spare: string, detail: string): DriftFinding => ({
    kind: 'spare_tampered',
    object: spare,
    detail: `warm-pool spare changed since it was made (${detail.slice(0, 800)}); not handed out, destroyed and replaced`,
  });

  /** Removes pooler entries (of this agent's spares) whose database is gone. */
  const dropEntries = async (names: string[]) => {
    if (!names.some((n) => pooler.state().databases[n])) return;
    await pooler.update((s) => {
      const databases = { ...s.databases };
      for (const n of names) delete databases[n];
      return { ...s, databases };
    });
  };

  const destroy = async (spare: string) => {
    try {
      // A spare claimed meanwhile is the tenant's: neither it nor its entry is touched.
      if (await destroySpare(admin, spare)) await dropEntries([spare]);
    } catch (err) {
      log.warn({ spare, err: { message: (err as Error).message } }, 'could not destroy a spare');
    }
  };

  const verifierOf = (spare: string) => pooler.state().databases[spare]?.verifier ?? null;

  /** The in-database fingerprint and the cluster-level check of one spare (out of `ready` meanwhile). */
  const check = async (spare: { name: string; fingerprint: string }): Promise<string | null> => {
    const problems = await spareProblems(admin, spare.name, verifierOf(spare.name));
    if (problems.length > 0) return problems.join('; ');
    const c = await connectSpare(cluster, spare.name).catch((err: Error) => err);
    // A refused login is a changed password or LOGIN; anything else (the cluster out of
    // connection slots, a restart) proves nothing and is thrown: the caller keeps the spare.
    if (c instanceof Error) {
      if (isLoginRefused(c)) return `its steward could not log in: ${c.message}`;
      throw c;
    }
    try {
      const fp = await spareFingerprint(c);
      return fp === spare.fingerprint ? null : 'objects inside it were added or changed';
    } finally {
      await c.end().catch(() => {});
    }
  };

  /** Re-reads this agent's spares from the catalog: unfinished ones and orphan roles go. */
  const reconcile = async () => {
    const { spares, orphanRoles, databases } = await listSpares(admin, tag);
    const known = new Set(ready.map((s) => s.name));
    const next: typeof ready = [];
    for (const s of spares) {
      if (checking.has(s.name)) continue;
      if (s.fingerprint === null) await destroy(s.name);
      else if (known.has(s.name)) next.push({ name: s.name, fingerprint: s.fingerprint });
      else {
        const problem = await check({ name: s.name, fingerprint: s.fingerprint });
        if (problem === null) next.push({ name: s.name, fingerprint: s.fingerprint });
        else {
          pendingFindings.push(tampered(s.name, problem));
          log.warn({ spare: s.name, problem }, 'tampered spare destroyed');
          await destroy(s.name);
        }
      }
    }
    if (orphanRoles.length > 0) await dropSpareRoles(admin, orphanRoles).catch(() => {});
    // Entries of spares whose database is gone (a crash between the drop and the entry's removal).
    const present = new Set(databases);
    const orphanEntries = Object.keys(pooler.state().databases).filter(
      (n) => n.startsWith(prefix) && !present.has(n),
    );
    await dropEntries(orphanEntries).catch((err: Error) =>
      log.warn({ err: { message: err.message } }, 'could not remove pooler entries of gone spares'),
    );
    // Claims may have happened meanwhile: keep only spares still in the list or found new. An
    // audit may have put back a spare it was checking while this ran (skipped above): kept too.
    const claimedMeanwhile = new Set([...known].filter((n) => !ready.some((s) => s.name === n)));
    const listed = new Set(next.map((s) => s.name));
    const putBack = ready.filter((s) => !known.has(s.name) && !listed.has(s.name));
    // What this process knows of a spare still in its list (when it was warmed up) stays with it.
    const current = new Map(ready.map((s) => [s.name, s]));
    ready = [
      ...next.filter((s) => !claimedMeanwhile.has(s.name)).map((s) => ({ ...current.get(s.name), ...s })),
      ...putBack,
    ];
    relist = false;
    // More spares than the size (an operator lowered it): the newest extra ones go.
    for (const extra of ready.splice(Math.max(opts.size, 0))) await destroy(extra.name);
  };

  /**
   * Opens the spare's PgBouncer server connection ahead of its claim (`opts.warmUp`): the owner may
   * log in only for that moment, before the spare is marked ready (a claim's check would refuse
   * it with LOGIN). A failed warm-up costs only the speed it would have bought.
   */
  const warmUp = async (name: string): Promise<boolean> => {
    if (!opts.warmUp) return false;
    const owner = q(roleNames(name).owner);
    await admin.query(`ALTER ROLE ${owner} LOGIN`);
    try {
      await opts.warmUp({
        database: name,
        user: roleNames(name).owner,
        password: spareOwnerPassword(cluster.key, name),
      });
      return true;
    } catch (err) {
      log.debug({ spare: name, err: { message: (err as Error).message } }, 'spare warm-up login failed');
      return false;
    } finally {
      await admin.query(`ALTER ROLE ${owner} NOLOGIN`);
    }
  };

  /** Ready spares whose pooler entry has another allowlist than new ones get: updated in one reload. */
  const followAllowlist = async () => {
    const state = pooler.state().databases;
    const stale = ready.filter((r) => {
      const e = state[r.name];
      return e && JSON.stringify(e.allowlist) !== JSON.stringify(allowlist);
    });
    if (stale.length === 0) return;
    const names = new Set(stale.map((r) => r.name));
    await pooler.update((s) => {
      const databases = { ...s.databases };
      for (const n of names) if (databases[n]) databases[n] = { ...databases[n]!, allowlist: [...allowlist] };
      return { ...s, databases };
    });
  };

  /**
   * The node's usual allowlist, until a create says otherwise: the one most of its databases'
   * pooler entries have (permanent entries only).
   */
  const usualAllowlist = (): readonly AllowlistEntry[] => {
    const counts = new Map<string, number>();
    for (const [name, e] of Object.entries(pooler.state().databases)) {
      if (name.startsWith(prefix)) continue;
      const key = JSON.stringify(e.allowlist.filter((a) => a.expires_at === null));
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    const best = [...counts].sort((a, b) => b[1] - a[1])[0];
    return best ? (JSON.parse(best[0]) as AllowlistEntry[]) : [];
  };

  const idleOfCreates = () =>
    holds === 0 ? Promise.resolve() : new Promise<void>((res) => releaseWaiters.push(res));

  const fill = async () => {
    for (let failures = 0; !stopped && failures < 3; ) {
      await idleOfCreates();
      if (stopped) return;
      if (relist) await reconcile();
      await followAllowlist();
      if (ready.length >= opts.size) return;
      const name = newSpareName(tag);
      try {
        const verifier = await scramVerifierAsync(spareOwnerPassword(cluster.key, name));
        const entryAllowlist = allowlist;
        let warmedAt: number | undefined;
        // The pooler entry goes live before the ready marker: a ready spare always has one.
        const fingerprint = await buildSpare(admin, cluster, name, verifier, async () => {
          // The warm-up login comes from 127.0.0.1: a rule for it alone while it runs when the
          // allowlist does not cover it (as for a create's proving login).
          const owner = roleNames(name).owner;
          const loopback = opts.warmUp !== undefined && !coversLoopback(entryAllowlist.map((e) => e.cidr));
          await pooler.update(
            (s) => ({
              ...s,
              databases: {
                ...s.databases,
                [name]: { name, owner, verifier, allowlist: [...entryAllowlist] },
              },
            }),
            loopback ? { loopbackFor: { database: name, user: owner } } : {},
          );
          try {
            if (await warmUp(name)) warmedAt = now();
          } finally {
            if (loopback) await pooler.endLoopback(name);
          }
        });
        ready.push({ name, fingerprint, ...(warmedAt === undefined ? {} : { warmedAt }) });
        failures = 0;
      } catch (err) {
        failures++;
        log.warn({ spare: name, err: { message: (err as Error).message } }, 'could not make a spare');
        await destroy(name);
      }
    }
  };

  /** Starts a refill unless one runs (it re-checks the count before each spare). */
  const refill = (): Promise<void> => {
    if (opts.size <= 0 || stopped) return Promise.resolve();
    filling ??= fill()
      .catch((err: Error) => log.warn({ err: { message: err.message } }, 'warm pool refill failed'))
      .finally(() => {
        filling = null;
      });
    return filling;
  };

  /**
   * Uses each ready spare's PgBouncer session again before PgBouncer's idle timeout closes it: a
   * spare warmed up (or kept) less than `KEPT_SESSION_TRUST_MS` ago whose session PgBouncer still
   * lists gets one login on it (no LOGIN needed: PgBouncer serves it from that session); any other
   * is warmed up again (`rewarmSpare`: unfinished, and LOGIN for that one login). Each spare is out of
   * `ready` meanwhile; never while a create runs or the pool refills; a spare whose allowlist does
   * not cover this host's loopback address is left as it is (its warm-up would need a reload).
   */
  const keepWarm = async () => {
    if (!opts.warmUp) return;
    const every = opts.keepWarmMs ?? KEEP_WARM_MS;
    for (const spare of [...ready]) {
      if (stopped || holds > 0 || filling) return;
      if (spare.warmedAt !== undefined && now() - spare.warmedAt < every) continue;
      const entry = pooler.state().databases[spare.name];
      if (!entry || !coversLoopback(entry.allowlist.map((e) => e.cidr))) continue;
      const at = ready.indexOf(spare);
      if (at < 0) continue; // claimed meanwhile
      ready.splice(at, 1);
      checking.add(spare.name);
      try {
        const user = roleNames(spare.name).owner;
        const trusted = spare.warmedAt !== undefined && now() - spare.warmedAt < KEPT_SESSION_TRUST_MS;
        const login = { database: spare.name, user, password: spareOwnerPassword(cluster.key, spare.name) };
        if (trusted && (await pooler.serverHeld(spare.name, user))) await opts.warmUp(login);
        else await rewarmSpare(admin, spare.name, spare.fingerprint, () => opts.warmUp!(login));
        spare.warmedAt = now();
      } catch (err) {
        log.debug(
          { spare: spare.name, err: { message: (err as Error).message } },
          'keeping a spare warm failed',
        );
        // Unsure how it was left (its owner may have LOGIN, its marker be unfinished): it stays
        // out of the list; the next listing of the catalog destroys it unless it is a ready spare
        // as made, and the refill replaces it.
        checking.delete(spare.name);
        relist = true;
        void refill();
        return;
      }
      checking.delete(spare.name);
      if (!ready.some((s) => s.name === spare.name)) ready.push(spare);
    }
  };

  /** Checks every ready spare inside; tampered ones are reported, destroyed and replaced. */
  const audit = async (): Promise<DriftFinding[]> => {
    const findings = pendingFindings;
    pendingFindings = [];
    for (const spare of [...ready]) {
      const at = ready.indexOf(spare);
      if (at < 0) continue; // claimed meanwhile
      ready.splice(at, 1);
      checking.add(spare.name);
      // A check that fails to run (a lost connection) proves nothing: the spare stays.
      const problem = await check(spare).catch((err: Error) => {
        log.warn({ spare: spare.name, err: { message: err.message } }, 'spare check failed; kept');
        return null;
      });
      checking.delete(spare.name);
      if (problem === null) {
        if (!ready.some((s) => s.name === spare.name)) ready.push(spare);
      } else {
        findings.push(tampered(spare.name, problem));
        log.warn({ spare: spare.name, problem }, 'tampered spare destroyed');
        await destroy(spare.name);
      }
    }
    void refill();
    return findings;
  };

  return {
    size: opts.size,
    tag,
    stats: (): WarmPoolStats => ({ size: opts.size, ready: ready.length }),
    /** Lists, checks and refills in the background (never throws). */
    start(): void {
      if (opts.size <= 0) {
        // Turned off: spares left from when it was on are removed.
        void this.drain().catch((err: Error) =>
          log.warn({ err: { message: err.message } }, 'could not remove the warm pool'),
        );
        return;
      }
      stopped = false;
      if (allowlist.length === 0) allowlist = usualAllowlist();
      void refill();
      const every = opts.auditMs ?? 600_000;
      if (every > 0) {
        auditTimer = setInterval(() => {
          if (holds === 0 && !filling) void audit().catch(() => {});
        }, every);
        auditTimer.unref();
      }
      const keep = opts.keepWarmMs ?? KEEP_WARM_MS;
      if (keep > 0 && opts.warmUp) {
        keepWarmTimer = setInterval(() => {
          if (holds > 0 || filling || keepingWarm) return;
          keepingWarm = keepWarm()
            .catch(() => {})
            .finally(() => {
              keepingWarm = null;
            });
        }, keep);
        keepWarmTimer.unref();
      }
    },
    /** Waits for a running refill to finish its current spare, then stops. */
    async stop(): Promise<void> {
      stopped = true;
      clearInterval(auditTimer);
      clearInterval(keepWarmTimer);
      await keepingWarm;
      clearTimeout(refillTimer);
      refillDue = null;
      refillFired();
      for (const w of releaseWaiters) w();
      releaseWaiters = [];
      await filling;
    },
    /**
     * Marks a create as running (refill waits until every hold is released). Release after the
     * job has been reported; the refill starts `refillDelayMs` after the last release.
     */
    hold(): () => void {
      holds++;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        holds--;
        if (holds > 0) return;
        // The refill yields a moment more: the create's answer and its tenant's first login
        // (through this node's PgBouncer and PostgreSQL) come before a CREATE DATABASE.
        clearTimeout(refillTimer);
        refillFired();
        refillDue = new Promise<void>((res) => {
          refillFired = res;
        });
        refillTimer = setTimeout(() => {
          refillDue = null;
          refillFired();
          if (holds > 0 || stopped) return;
          const waiters = releaseWaiters;
          releaseWaiters = [];
          for (const w of waiters) w();
          void refill();
        }, opts.refillDelayMs ?? 250);
        refillTimer.unref();
      };
    },
    /**
     * Hands a spare out as `target` (one transaction), or says why not: the caller then makes the
     * database the cold way. `onChosen` hears which spare (and its owner's password) as soon as it
     * leaves the list, before the transaction is sent: the caller's proving login may start then.
     */
    async claim(target: ClaimTarget, onChosen?: (spare: ChosenSpare) => void): Promise<ClaimOutcome> {
      const spare = ready.shift();
      if (!spare) return { claimed: false, reason: 'empty' };
      const entry = pooler.state().databases[spare.name];
      try {
        if (!entry) throw new Error(`spare ${spare.name} tampered: not in the pooler`);
        // The caller may start its proving login now, beside the claim's transaction.
        onChosen?.({
          name: spare.name,
          password: spareOwnerPassword(cluster.key, spare.name),
          allowlist: entry.allowlist,
          warmSession: spare.warmedAt !== undefined && now() - spare.warmedAt < KEPT_SESSION_TRUST_MS,
        });
        const { stewardVerifier, ...rest } = target;
        await admin.query(
          claimSpareSql(spare.name, entry.verifier, {
            ...rest,
            ...(stewardVerifier ? { stewardVerifier: await stewardVerifier(spare.name) } : {}),
          }),
        );
        return {
          claimed: true,
          spare: spare.name,
          password: spareOwnerPassword(cluster.key, spare.name),
          allowlist: entry.allowlist,
        };
      } catch (err) {
        if (isTamper(err)) {
          const detail = (err as Error).message.replace(/^spare \S+ tampered: /, '');
          pendingFindings.push(tampered(spare.name, detail));
          log.warn({ spare: spare.name, problem: detail }, 'tampered spare not handed out; destroyed');
          await destroy(spare.name);
          return { claimed: false, reason: 'tampered' };
        }
        // Unclear (connection lost around COMMIT): the catalog says whether it was claimed.
        relist = true;
        log.warn({ spare: spare.name, err: { message: (err as Error).message } }, 'spare claim failed');
        return { claimed: false, reason: 'error' };
      }
    },
    /**
     * The allowlist new spares' pooler entries get (the latest create's permanent entries): a
     * create with the same allowlist needs no PgBouncer reload.
     */
    useAllowlist(entries: readonly AllowlistEntry[]): void {
      const permanent = entries.filter((e) => e.expires_at === null);
      if (JSON.stringify(permanent) !== JSON.stringify(allowlist)) allowlist = permanent;
    },
    /** Resolves when no refill is running (tests, benchmarks). */
    settled: async (): Promise<void> => {
      while (filling || refillDue) {
        await refillDue;
        await filling;
      }
    },
    refill,
    audit,
    /** Destroys every spare of this agent (tests, and an operator turning the pool off). */
    async drain(): Promise<void> {
      await this.stop();
      const { spares, orphanRoles, databases } = await listSpares(admin, tag);
      ready = [];
      for (const s of spares) await destroy(s.name);
      if (orphanRoles.length > 0) await dropSpareRoles(admin, orphanRoles).catch(() => {});
      const present = new Set(databases);
      await dropEntries(
        Object.keys(pooler.state().databases).filter((n) => n.startsWith(prefix) && !present.has(n)),
      );
    },
  };
}

export type WarmPool = ReturnType<typeof createWarmPool>;
