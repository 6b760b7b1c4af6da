/**
 * People: local users (created with a password that meets the policy), password sign-in with an
 * optional TOTP second factor, and TOTP enrolment. Sessions and tokens are the sessions module's:
 * sign-in proves who the user is, then asks it to issue a session.
 *
 * Sign-in answers one thing for an unknown username, a wrong password, a user without a local
 * password and a suspended user (401 `invalid_credentials`), after the same argon2 work (an
 * unknown user is verified against a dummy hash). Only once the password is proven does the
 * second factor speak (`totp_required`, or `invalid_credentials` for a wrong code): that says
 * nothing an attacker did not just prove (ADR 0013).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { AppError, badRequest, conflict, unavailable } from '../../../shared/errors.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, type Queryable, type Tx, withTx } from '../../db/pool.ts';
import type { AuditEventDraft, AuditService } from '../audit/audit.service.ts';
import type { IssuedTokens } from '../sessions/sessions.service.ts';
import { loginAuditEvent } from './login-event.ts';
import type { LoginThrottle } from './login-throttle.ts';
import { createPasswordGate, type PasswordGate } from './password-gate.ts';
import { checkPasswordPolicy, createDummyHash, hashPassword, verifyPassword } from './passwords.ts';
import { base32Encode, matchTotp, newTotpSecret, otpauthUri } from './totp.ts';
import * as repo from './users.repo.ts';

export const USERNAME_PATTERN = /^[a-z][a-z0-9._-]{1,62}$/;
const RECOVERY_CODE_COUNT = 10;
const RECOVERY_CODE_PATTERN = /^[a-z2-7]{4}-?[a-z2-7]{4}-?[a-z2-7]{4}$/;
const TOTP_ISSUER = 'Bulwark';

export type NewLocalUser = {
  username: string;
  password: string;
  platformAdmin: boolean;
  membership?: { accountId: string; role: repo.Role } | undefined;
};

/**
 * Creates a local user in the caller's transaction (invite redemption, the first admin): checks
 * the username and the password policy (400 `validation_failed` / `weak_password`), hashes the
 * password (argon2id, off the event loop) and inserts the user and, if given, the membership. A
 * taken username is a 409 `conflict`.
 */
export async function createLocalUser(tx: Queryable, input: NewLocalUser): Promise<repo.UserRow> {
  if (!USERNAME_PATTERN.test(input.username))
    throw badRequest('A username is 2–63 characters: a lower-case letter, then a-z, 0-9, ".", "_" or "-"');
  checkPasswordPolicy(input.password, input.username);
  const passwordHash = await hashPassword(input.password);
  let user: repo.UserRow;
  try {
    user = await repo.insertUser(tx, {
      username: input.username,
      passwordHash,
      platformAdmin: input.platformAdmin,
    });
  } catch (err) {
    if ((err as { code?: string }).code === '23505') throw conflict('That username is taken');
    throw err;
  }
  if (input.membership)
    await repo.insertMembership(tx, {
      accountId: input.membership.accountId,
      userId: user.id,
      role: input.membership.role,
    });
  return user;
}

/** What a sign-in returns: the session issuer's tokens (and the session they belong to). */
export type SessionTokens = IssuedTokens;
/** The sessions module's `issue`: a session in the sign-in's transaction. */
export type SessionIssuer = {
  issue(
    input: { userId: string; sourceIp: string; userAgent: string | null; requestId: string },
    tx: Tx,
  ): Promise<SessionTokens>;
};

type LoginInput = {
  username: string;
  password: string;
  totpCode?: string | undefined;
  sourceIp: string;
  userAgent: string | null;
  requestId: string;
};

type LoginResult = { ok: true; tokens: SessionTokens } | { ok: false; retryAfterS: number };

type UsersServiceDeps = {
  db: Db;
  log: Logger;
  audit: Pick<AuditService, 'record' | 'recordNow'>;
  /** Seals TOTP secrets (the master keyring); null: TOTP enrolment answers 503. */
  box: SecretBox | null;
  throttle: LoginThrottle;
  sessions: SessionIssuer;
  /** Bounds concurrent argon2 verifications (default: one core fewer than the host's). */
  passwordGate?: PasswordGate;
  /**
   * The sessions module's step-up check: TOTP enrolment starts only within minutes of
   * re-authenticating (a stolen session must not enrol a factor of its own).
   */
  stepUp?: (session: { userId: string; sessionId: string }, doing: string) => Promise<void>;
  now?: () => number;
};

export type UsersService = ReturnType<typeof createUsersService>;

const normalizeUsername = (username: string) => username.normalize('NFKC').toLowerCase();
const sha256 = (s: string) => createHash('sha256').update(s).digest();
const totpContext = (userId: string) => `user-totp:${userId}`;

function newRecoveryCode(): string {
  const raw = base32Encode(randomBytes(8)).toLowerCase().slice(0, 12);
  return `${raw.slice(0, 4)}-${raw.slice(4, 8)}-${raw.slice(8, 12)}`;
}
const recoveryHash = (code: string) => sha256(`recovery:${code.toLowerCase().replaceAll('-', '')}`);

type FailReason = 'unknown_user' | 'wrong_password' | 'no_password' | 'suspended' | 'wrong_totp';

export function createUsersService(deps: UsersServiceDeps) {
  const { db, log, audit, throttle } = deps;
  const now = deps.now ?? Date.now;
  const gate = deps.passwordGate ?? createPasswordGate();
  // Made now, so the first unknown username does not pay for it (a timing difference).
  const dummyHash = createDummyHash();
  dummyHash().catch(() => {});

  /** A short keyed hash of the username as typed (normalised): never the text, which may be a password. */
  const usernameTag = (input: LoginInput) => throttle.usernameTag(normalizeUsername(input.username));

  const loginEvent = (
    input: LoginInput,
    e: Pick<AuditEventDraft, 'outcome' | 'actorId'> & { details: Record<string, unknown> },
  ): AuditEventDraft =>
    loginAuditEvent('password', input, {
      outcome: e.outcome,
      userId: e.actorId,
      details: { username_tag: usernameTag(input), ...e.details },
    });

  /** One greppable line per refused sign-in (docs/operations.md has a fail2ban filter for it). */
  const logFailure = (input: LoginInput, reason: FailReason | 'throttled' | 'busy') =>
    log.warn(
      {
        event: 'login_failed',
        source_ip: input.sourceIp,
        reason,
        username_tag: usernameTag(input),
        request_id: input.requestId,
      },
      `login failed from ${input.sourceIp}: ${reason}`,
    );

  async function refuse(input: LoginInput, userId: string | null, reason: FailReason) {
    logFailure(input, reason);
    await audit.recordNow(loginEvent(input, { outcome: 'failure', actorId: userId, details: { reason } }));
    return new AppError('invalid_credentials', 'Invalid username, password or code');
  }

  /** Checks a TOTP or recovery code and uses it up; false when it is wrong or already used. */
  async function checkSecondFactor(userId: string, code: string): Promise<boolean> {
    const trimmed = code.trim().toLowerCase();
    if (/^\d{6}$/.test(trimmed)) {
      const totp = await repo.findTotp(db, userId);
      if (!totp?.confirmed_at || !deps.box) return false;
      const secret = Buffer.from(deps.box.open(totp.secret_sealed, totpContext(userId)), 'base64');
      const step = matchTotp(secret, trimmed, now());
      return step !== null && (await repo.takeTotpStep(db, userId, step, { confirm: false }));
    }
    if (RECOVERY_CODE_PATTERN.test(trimmed)) return repo.takeRecoveryCode(db, userId, recoveryHash(trimmed));
    return false;
  }

  return {
    createLocalUser: (tx: Queryable, input: NewLocalUser) => createLocalUser(tx, input),

    async login(input: LoginInput): Promise<LoginResult> {
      const username = normalizeUsername(input.username);
      const keys = throttle.keysFor(username, input.sourceIp);
      const waitMs = await throttle.take(db, [keys.user, keys.ip], new Date(now()));
      if (waitMs > 0) {
        logFailure(input, 'throttled');
        await audit.recordNow(loginEvent(input, { outcome: 'denied', details: { reason: 'throttled' } }));
        return { ok: false, retryAfterS: Math.max(1, Math.ceil(waitMs / 1000)) };
      }
      const user = USERNAME_PATTERN.test(username) ? await repo.findLoginByUsername(db, username) : null;
      // The same argon2 work whether or not the user exists or has a password.
      const hash = user?.password_hash ?? (await dummyHash());
      const passwordOk = await gate.run(() => verifyPassword(hash, input.password));
      if (passwordOk === null) {
        // Too many verifications waiting on this process: refused before the password is looked at.
        await throttle.refund(db, [keys.user, keys.ip]);
        logFailure(input, 'busy');
        return { ok: false, retryAfterS: 1 };
      }
      if (!user) throw await refuse(input, null, 'unknown_user');
      if (!user.password_hash) throw await refuse(input, user.id, 'no_password');
      if (!passwordOk) throw await refuse(input, user.id, 'wrong_password');
      if (user.status !== 'active') throw await refuse(input, user.id, 'suspended');
      if (user.totp_confirmed) {
        if (!input.totpCode) {
          // Not a failure: the client asks for the code and sends the request again.
          await throttle.refund(db, [keys.user, keys.ip]);
          await audit.recordNow(
            loginEvent(input, { outcome: 'failure', actorId: user.id, details: { reason: 'totp_required' } }),
          );
          throw new AppError('totp_required', 'A TOTP or recovery code is required (totp_code)');
        }
        if (!(await checkSecondFactor(user.id, input.totpCode)))
          throw await refuse(input, user.id, 'wrong_totp');
      }
      const tokens = await withTx(db, async (tx) => {
        await throttle.succeed(tx, keys);
        await audit.record(
          tx,
          loginEvent(input, { actorId: user.id, details: { second_factor: user.totp_confirmed } }),
        );
        return deps.sessions.issue(
          {
            userId: user.id,
            sourceIp: input.sourceIp,
            userAgent: input.userAgent,
            requestId: input.requestId,
          },
          tx,
        );
      });
      return { ok: true, tokens };
    },

    /**
     * Starts TOTP enrolment: a new secret (replacing an unconfirmed one), shown once. Needs the
     * session's step-up window (`ctx.sessionId`): a factor is a lasting credential.
     */
    async enrolTotp(
      userId: string,
      ctx: { sessionId: string; sourceIp: string; requestId: string },
    ): Promise<{ secret: string; otpauth_uri: string }> {
      const box = deps.box;
      if (!box) throw unavailable('TOTP needs the master key (BULWARK_MASTER_KEY_FILE)');
      const user = await repo.findUserById(db, userId);
      if (!user) throw new AppError('unauthorized', 'Authentication required');
      if ((await repo.findTotp(db, userId))?.confirmed_at)
        throw conflict('A second factor is already confirmed for this user');
      if (deps.stepUp) await deps.stepUp({ userId, sessionId: ctx.sessionId }, 'set up TOTP');
      const secret = newTotpSecret();
      const stored = await repo.upsertPendingTotp(
        db,
        userId,
        box.seal(secret.toString('base64'), totpContext(userId)),
      );
      if (!stored) throw conflict('A second factor is already confirmed for this user');
      await audit.recordNow({
        action: 'user.totp_enrolment_started',
        actorType: 'user',
        actorId: userId,
        targetType: 'user',
        targetId: userId,
        sourceIp: ctx.sourceIp,
        requestId: ctx.requestId,
      });
      const b32 = base32Encode(secret);
      return { secret: b32, otpauth_uri: otpauthUri(b32, TOTP_ISSUER, user.username ?? userId) };
    },

    /** Confirms enrolment with a current code; returns the recovery codes, shown this once. */
    async confirmTotp(
      userId: string,
      code: string,
      ctx: { sourceIp: string; requestId: string },
    ): Promise<{ recovery_codes: string[] }> {
      const box = deps.box;
      if (!box) throw unavailable('TOTP needs the master key (BULWARK_MASTER_KEY_FILE)');
      const totp = await repo.findTotp(db, userId);
      if (!totp || totp.confirmed_at)
        throw conflict('No TOTP enrolment is pending; start one with POST /v1/me/totp');
      const secret = Buffer.from(box.open(totp.secret_sealed, totpContext(userId)), 'base64');
      const step = matchTotp(secret, code.trim(), now());
      const codes = Array.from({ length: RECOVERY_CODE_COUNT }, newRecoveryCode);
      const ok = await withTx(db, async (tx) => {
        if (step === null || !(await repo.takeTotpStep(tx, userId, step, { confirm: true }))) return false;
        await repo.replaceRecoveryCodes(tx, userId, codes.map(recoveryHash));
        await audit.record(tx, {
          action: 'user.totp_confirmed',
          actorType: 'user',
          actorId: userId,
          targetType: 'user',
          targetId: userId,
          sourceIp: ctx.sourceIp,
          requestId: ctx.requestId,
        });
        return true;
      });
      if (!ok) throw new AppError('invalid_credentials', 'Invalid code');
      return { recovery_codes: codes };
    },
  };
}
