import { scramVerifier } from '../../shared/scram.ts';
import {
  authLine,
  consoleRuleLine,
  HBA_HEADER,
  type HbaRule,
  hbaRuleLine,
  type PoolerSettings,
  rejectDatabaseLines,
  renderIni,
} from './pgbouncer.config.ts';
import type { PoolerDatabase, PoolerState } from './pooler-state.ts';

export class PoolerConfigError extends Error {}

/** File contents; auth and hba are assembled from cached per-database byte lines. */
export type Rendered = { ini: string; auth: Buffer; hba: Buffer };
/** The one-time user whose login proves a reload (see pooler-manager.ts). */
export type Probe = { user: string; password: string };

export const PROBE_PREFIX = 'bulwark_probe_';

/**
 * Renders PgBouncer's files from the desired state and checks them before anything is
 * written: every tenant line is validated when first rendered (names, SCRAM verifier, CIDR),
 * the assembled files structurally (admin console rule first, probe rule last).
 */
export function createPoolerRenderer(opts: {
  settings: Omit<PoolerSettings, 'authFile' | 'hbaFile' | 'pidFile' | 'probeUser'>;
  files: { auth: string; hba: string; pid: string };
  adminPassword: string;
  now: () => number;
}) {
  const { files, now } = opts;
  const adminVerifier = scramVerifier(opts.adminPassword);
  /**
   * Render caches. Entries are immutable (a change replaces the entry object), so identity
   * tells what changed: per database its validated lines; for the whole tenant section the
   * bytes of the last render, reused while the `databases` object is the same and no
   * allowlist entry or just-in-time login has expired since.
   */
  type Bytes = Buffer<ArrayBufferLike>;
  type Timed = { line: Bytes; exp: number };
  type EntryLines = {
    db: PoolerDatabase;
    /** Pooler users of the entry: the owner, then its live just-in-time logins. */
    users: string[];
    auth: Bytes;
    hba: Bytes;
    /** Every line with the instant it stops being rendered (Infinity: never). */
    authLines: Timed[];
    rules: Timed[];
    minExp: number;
  };
  const entryCache = new Map<string, EntryLines>();
  let sectionCache: {
    databases: PoolerState['databases'];
    validUntil: number;
    auth: Bytes;
    hba: Bytes;
  } | null = null;
  const bytes = (line: string) => Buffer.from(`${line}\n`);
  const linesOf = (key: string, db: PoolerDatabase): EntryLines => {
    const cached = entryCache.get(key);
    if (cached?.db === db) return cached;
    if (key !== db.name) throw new Error(`state key ${key} does not match ${db.name}`);
    const allow = db.allowlist.map((e) => ({
      cidr: e.cidr,
      exp: e.expires_at === null ? Number.POSITIVE_INFINITY : Date.parse(e.expires_at),
    }));
    const authLines: Timed[] = [
      { line: bytes(authLine({ user: db.owner, verifier: db.verifier })), exp: Number.POSITIVE_INFINITY },
    ];
    const rules: Timed[] = allow.map((e) => ({
      line: bytes(hbaRuleLine({ database: db.name, user: db.owner, cidr: e.cidr })),
      exp: e.exp,
    }));
    // Just-in-time logins: the owner's allowlist, each rule ending at the earlier of the two expiries.
    for (const l of db.access ?? []) {
      const until = Date.parse(l.valid_until);
      if (!Number.isFinite(until)) throw new Error(`login ${l.login} has no valid expiry`);
      authLines.push({ line: bytes(authLine({ user: l.login, verifier: l.verifier })), exp: until });
      for (const e of allow)
        rules.push({
          line: bytes(hbaRuleLine({ database: db.name, user: l.login, cidr: e.cidr })),
          exp: Math.min(e.exp, until),
        });
    }
    const l = {
      db,
      users: [db.owner, ...(db.access ?? []).map((a) => a.login)],
      auth: Buffer.concat(authLines.map((a) => a.line)),
      hba: Buffer.concat(rules.map((r) => r.line)),
      authLines,
      rules,
      minExp: Math.min(Number.POSITIVE_INFINITY, ...rules.map((r) => r.exp), ...authLines.map((a) => a.exp)),
    };
    entryCache.set(key, l);
    return l;
  };

  const renderSection = (s: PoolerState, t: number) => {
    if (sectionCache?.databases === s.databases && t < sectionCache.validUntil) return sectionCache;
    const auth: Bytes[] = [];
    const hba: Bytes[] = [];
    const users = new Set([opts.settings.adminUser]);
    let validUntil = Number.POSITIVE_INFINITY;
    let count = 0;
    const live = (lines: Timed[], out: Bytes[]) => {
      for (const r of lines) {
        if (r.exp > t) {
          out.push(r.line);
          if (r.exp < validUntil) validUntil = r.exp;
        }
      }
    };
    for (const key in s.databases) {
      const l = linesOf(key, s.databases[key]!);
      count++;
      for (const user of l.users) {
        if (users.has(user) || user.startsWith(PROBE_PREFIX))
          throw new Error(`duplicate or reserved pooler user ${user}`);
        users.add(user);
      }
      if (l.minExp > t) {
        auth.push(l.auth);
        hba.push(l.hba);
        if (l.minExp < validUntil) validUntil = l.minExp;
      } else {
        live(l.authLines, auth);
        live(l.rules, hba);
      }
    }
    if (entryCache.size > count)
      for (const key of entryCache.keys()) if (!(key in s.databases)) entryCache.delete(key);
    sectionCache = { databases: s.databases, validUntil, auth: Buffer.concat(auth), hba: Buffer.concat(hba) };
    return sectionCache;
  };

  /**
   * `closing`: databases every login to which is refused for now (a cut in progress, see
   * pooler-manager.ts), whatever their own rules say.
   */
  const render = (
    s: PoolerState,
    probe: Probe,
    extraRules: HbaRule[],
    closing: Iterable<string> = [],
  ): Rendered => {
    const t = now();
    try {
      const adminUser = opts.settings.adminUser;
      const section = renderSection(s, t);
      const auth: Bytes[] = [bytes(authLine({ user: adminUser, verifier: adminVerifier })), section.auth];
      const hba: Bytes[] = [bytes(HBA_HEADER), bytes(consoleRuleLine(adminUser))];
      for (const db of closing) for (const line of rejectDatabaseLines(db)) hba.push(bytes(line));
      hba.push(section.hba);
      for (const rule of extraRules) hba.push(bytes(hbaRuleLine(rule)));
      // One iteration: the probe password is 192 random bits, used once; stretching buys nothing.
      auth.push(bytes(authLine({ user: probe.user, verifier: scramVerifier(probe.password, 1) })));
      hba.push(bytes(consoleRuleLine(probe.user)));
      const rendered = {
        ini: renderIni({
          ...opts.settings,
          authFile: files.auth,
          hbaFile: files.hba,
          pidFile: files.pid,
          probeUser: probe.user,
        }),
        auth: Buffer.concat(auth),
        hba: Buffer.concat(hba),
      };
      validate(rendered, probe);
      return rendered;
    } catch (err) {
      throw new PoolerConfigError(`pooler config refused: ${(err as Error).message}`);
    }
  };

  /** Structural checks of the assembled files (each line was validated when rendered). */
  const validate = (r: Rendered, probe: Probe) => {
    const nl = 0x0a;
    const firstEnd = r.hba.indexOf(nl);
    const firstRule = r.hba.subarray(firstEnd + 1, r.hba.indexOf(nl, firstEnd + 1)).toString();
    if (r.hba[0] !== 0x23 || firstRule !== consoleRuleLine(opts.settings.adminUser))
      throw new Error('the admin console rule must be the first hba rule');
    const lastStart = r.hba.lastIndexOf(nl, r.hba.length - 2) + 1;
    if (r.hba.subarray(lastStart).toString() !== `${consoleRuleLine(probe.user)}\n`)
      throw new Error('the probe rule must be the last hba rule');
    if (!r.auth.subarray(0, 64).toString().startsWith(`"${opts.settings.adminUser}" `))
      throw new Error('auth file lacks the admin');
    if (!r.ini.includes('[databases]') || !r.ini.includes('auth_type = hba'))
      throw new Error('ini is incomplete');
  };

  return { render };
}
