/**
 * Re-authentication of a signed-in user (issue 13): the proof a stolen session alone cannot give.
 * Used by the step-up window (sessions/step-up.ts: `POST /v1/auth/reauth`) and by a reveal that
 * carries its proof inline.
 *
 * - A local user (one with a password) re-enters the password, or — when TOTP is confirmed for
 *   them — a current TOTP code instead. Attempts go through the sign-in throttle under the same
 *   keys as a sign-in (per username and per address), so guessing here and at the sign-in share
 *   one budget; a wrong answer is a failed re-auth in the audit log and one greppable log line.
 * - A user without a local password (signed in through OIDC) has nothing to re-enter: they are
 *   told to sign in again (`methods: ['sign_in']`; the step-up window counts a fresh session).
 *
 * The checks are this module's own: its password verification (argon2id behind the shared gate)
 * and its TOTP step accounting (a code is used once).
 */
import type { Logger } from 'pino';
import { AppError, unavailable } from '../../../shared/errors.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import type { Db } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import type { LoginThrottle } from './login-throttle.ts';
import type { PasswordGate } from './password-gate.ts';
import { verifyPassword } from './passwords.ts';
import { matchTotp } from './totp.ts';
import * as people from './users.repo.ts';

export type ReauthProof = { password?: string | undefined; totp_code?: string | undefined };
export type ReauthPurpose = { action: string; targetType: string; targetId: string; name?: string };
/** Who re-authenticates: the signed-in user, where from, and the account they act in (if any). */
export type ReauthSubject = { userId: string; sourceIp: string; accountId?: string | null };
export type ReauthMethod = 'password' | 'totp' | 'sign_in';

/** What a user can re-authenticate with (`details.methods` of `reauth_required`). */
export function reauthMethods(hasPassword: boolean, totpConfirmed: boolean): ReauthMethod[] {
  if (!hasPassword) return ['sign_in'];
  return totpConfirmed ? ['password', 'totp'] : ['password'];
}

/** 403 `reauth_required` with the methods the user has. */
export function reauthRequired(methods: ReauthMethod[], doing = 'do this'): AppError {
  const message =
    methods[0] === 'sign_in'
      ? `Sign in again to ${doing} (a sign-in counts for 10 minutes)`
      : methods.includes('totp')
        ? `Confirm it's you: enter your password or a TOTP code to ${doing} (POST /v1/auth/reauth)`
        : `Confirm it's you: enter your password to ${doing} (POST /v1/auth/reauth)`;
  return new AppError('reauth_required', message, { methods });
}

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

  /** A 6-digit code of the confirmed factor, each step once. */
  const totpOk = async (userId: string, code: string): Promise<boolean> => {
    const trimmed = code.trim();
    if (!/^\d{6}$/.test(trimmed) || !deps.box) return false;
    const totp = await people.findTotp(db, userId);
    if (!totp?.confirmed_at) return false;
    // The sealing context of TOTP secrets (users.service.ts totpContext).
    const secret = Buffer.from(deps.box.open(totp.secret_sealed, `user-totp:${userId}`), 'base64');
    const step = matchTotp(secret, trimmed, now());
    return step !== null && (await people.takeTotpStep(db, userId, step, { confirm: false }));
  };

  return {
    /**
     * Passes when the signed-in local user proved themselves again; otherwise throws 403
     * `reauth_required` (nothing usable sent, or no local password: `['sign_in']`), 403
     * `reauth_failed` (wrong; audited) or 429 `rate_limited` (`details.retry_after_s`).
     */
    async verify(who: ReauthSubject, proof: ReauthProof, purpose: ReauthPurpose, requestId: string) {
      const user = await people.findUserById(db, who.userId);
      const login = user?.username ? await people.findLoginByUsername(db, user.username) : null;
      if (!user || !login?.password_hash) throw reauthRequired(['sign_in']);
      const methods = reauthMethods(true, login.totp_confirmed);
      const useTotp = login.totp_confirmed && proof.totp_code !== undefined;
      if (!useTotp && proof.password === undefined) throw reauthRequired(methods);
      const keys = throttle.keysFor(login.username ?? '', who.sourceIp);
      const waitMs = await throttle.take(db, [keys.user, keys.ip], new Date(now()));
      if (waitMs > 0) {
        const retryAfterS = Math.max(1, Math.ceil(waitMs / 1000));
        throw new AppError('rate_limited', 'Too many failed attempts; retry later', {
          retry_after_s: retryAfterS,
        });
      }
      let ok: boolean;
      if (useTotp) {
        // Without the master key no TOTP secret can be opened: not the person's mistake.
        if (!deps.box) {
          await throttle.refund(db, [keys.user, keys.ip]);
          throw unavailable('TOTP codes cannot be checked on this server (no master key): use the password');
        }
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
      const method = useTotp ? 'totp' : 'password';
      log.warn(
        { event: 'reauth_failed', source_ip: who.sourceIp, user_id: user.id, method, request_id: requestId },
        `re-authentication failed from ${who.sourceIp}`,
      );
      await deps.audit.recordNow({
        action: 'user.reauth_failed',
        actorType: 'user',
        actorId: user.id,
        accountId: who.accountId ?? null,
        targetType: purpose.targetType,
        targetId: purpose.targetId,
        outcome: 'failure',
        sourceIp: who.sourceIp,
        requestId,
        details: { for: purpose.action, ...(purpose.name ? { name: purpose.name } : {}), method },
      });
      throw new AppError('reauth_failed', 'That password or code is not right');
    },
  };
}

export type Reauth = ReturnType<typeof createReauth>;
