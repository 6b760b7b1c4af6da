/**
 * Re-authentication before a password is revealed to a signed-in user (issue 13): a stolen
 * session alone must not be enough to read a database's password.
 *
 * - A local user (one with a password) re-enters the password, or — when TOTP is confirmed for
 *   them — a current TOTP code instead. Attempts go through the sign-in throttle under the same
 *   keys as a sign-in (per username and per address), so guessing here and at the sign-in share
 *   one budget; a wrong answer is a failed re-auth in the audit log and one greppable log line.
 * - A user without a local password (signed in through OIDC) has nothing to re-enter here: the
 *   reveal is allowed while the session is fresh (started within OIDC_FRESH_MS), else they sign in
 *   again.
 * - API keys are not asked (a key is its own credential, created for programs).
 *
 * The checks are the people module's own: its password verification (argon2id behind the shared
 * gate) and its TOTP step accounting (a code is used once).
 */
import type { Logger } from 'pino';
import { AppError, unavailable } from '../../../shared/errors.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import type { Db } from '../../db/pool.ts';
import type { UserCaller } from '../../http/caller.ts';
import type { AuditService } from '../audit/audit.service.ts';
import type { LoginThrottle } from '../people/login-throttle.ts';
import type { PasswordGate } from '../people/password-gate.ts';
import { verifyPassword } from '../people/passwords.ts';
import { matchTotp } from '../people/totp.ts';
import * as people from '../people/users.repo.ts';
import { sessionStartedAt } from './databases.reauth.repo.ts';

/** How long after an OIDC sign-in a reveal needs no new sign-in. */
export const OIDC_FRESH_MS = 10 * 60_000;

export type ReauthProof = { password?: string | undefined; totp_code?: string | undefined };
export type ReauthPurpose = { action: string; targetType: string; targetId: string; name: string };

const reauthRequired = (methods: string[], message: string) =>
  new AppError('reauth_required', message, { methods });

export function createReauth(deps: {
  db: Db;
  log: Logger;
  audit: Pick<AuditService, 'recordNow'>;
  /** Opens sealed TOTP secrets; null: TOTP codes cannot be checked (the password still can). */
  box: SecretBox | null;
  throttle: LoginThrottle;
  gate: PasswordGate;
  now?: () => number;
}) {
  const { db, log, throttle } = deps;
  const now = deps.now ?? Date.now;

  /** The people module's TOTP check: a 6-digit code of the confirmed factor, each step once. */
  const totpOk = async (userId: string, code: string): Promise<boolean> => {
    const trimmed = code.trim();
    if (!/^\d{6}$/.test(trimmed) || !deps.box) return false;
    const totp = await people.findTotp(db, userId);
    if (!totp?.confirmed_at) return false;
    // The people module's sealing context for TOTP secrets (users.service.ts totpContext).
    const secret = Buffer.from(deps.box.open(totp.secret_sealed, `user-totp:${userId}`), 'base64');
    const step = matchTotp(secret, trimmed, now());
    return step !== null && (await people.takeTotpStep(db, userId, step, { confirm: false }));
  };

  return {
    /**
     * Passes when the signed-in user proved themselves again (or may without: a fresh OIDC
     * session); otherwise throws 403 `reauth_required` (nothing sent), 403 `reauth_failed`
     * (wrong; audited) or 429 `rate_limited` (`details.retry_after_s`).
     */
    async check(caller: UserCaller, proof: ReauthProof, purpose: ReauthPurpose, requestId: string) {
      const user = await people.findUserById(db, caller.userId);
      const login = user?.username ? await people.findLoginByUsername(db, user.username) : null;
      if (!user || !login?.password_hash) {
        const started = await sessionStartedAt(db, caller.sessionId, caller.userId);
        if (started !== null && now() - started.getTime() <= OIDC_FRESH_MS) return;
        throw reauthRequired(
          ['sign_in'],
          'Sign in again to reveal a password (an OIDC sign-in counts for 10 minutes)',
        );
      }
      const methods = login.totp_confirmed ? ['password', 'totp'] : ['password'];
      const useTotp = login.totp_confirmed && proof.totp_code !== undefined;
      if (!useTotp && proof.password === undefined)
        throw reauthRequired(
          methods,
          login.totp_confirmed
            ? 'Enter your password or a TOTP code to reveal a password'
            : 'Enter your password to reveal a password',
        );
      const keys = throttle.keysFor(login.username ?? '', caller.sourceIp);
      const waitMs = await throttle.take(db, [keys.user, keys.ip], new Date(now()));
      if (waitMs > 0) {
        const retryAfterS = Math.max(1, Math.ceil(waitMs / 1000));
        throw new AppError('rate_limited', 'Too many failed attempts; retry later', {
          retry_after_s: retryAfterS,
        });
      }
      let ok: boolean;
      if (useTotp) {
        ok = await totpOk(user.id, proof.totp_code ?? '');
      } else {
        const verified = await deps.gate.run(() =>
          verifyPassword(login.password_hash ?? '', proof.password ?? ''),
        );
        if (verified === null) {
          await throttle.refund(db, [keys.user, keys.ip]);
          throw unavailable('The server is busy checking passwords; retry in a moment');
        }
        ok = verified;
      }
      if (ok) {
        await throttle.succeed(db, keys);
        return;
      }
      log.warn(
        {
          event: 'reauth_failed',
          source_ip: caller.sourceIp,
          user_id: user.id,
          method: useTotp ? 'totp' : 'password',
          request_id: requestId,
        },
        `re-authentication failed from ${caller.sourceIp}`,
      );
      await deps.audit.recordNow({
        action: 'user.reauth_failed',
        actorType: 'user',
        actorId: user.id,
        accountId: caller.accountId,
        targetType: purpose.targetType,
        targetId: purpose.targetId,
        outcome: 'failure',
        sourceIp: caller.sourceIp,
        requestId,
        details: { for: purpose.action, name: purpose.name, method: useTotp ? 'totp' : 'password' },
      });
      throw new AppError('reauth_failed', 'That password or code is not right');
    },
  };
}

export type Reauth = ReturnType<typeof createReauth>;
