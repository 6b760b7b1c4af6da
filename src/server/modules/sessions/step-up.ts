/**
 * Step-up re-authentication ("sudo mode", issue 13): a signed-in user proves themselves again
 * (`POST /v1/auth/reauth`: the password, or a TOTP code when enrolled) and their session is
 * stamped; for 5 minutes after, the actions that mint lasting access — an API key, an invite,
 * starting TOTP enrolment — and a password reveal go through. Without it they answer 403
 * `reauth_required` (`details.methods`), so a stolen session (a copied cookie, a borrowed
 * laptop, a leaked access token) cannot turn itself into a credential that outlives it.
 *
 * - Signing in does not open the window for a local user: only an explicit re-auth does.
 * - A user without a local password (OIDC) has nothing to re-enter: a session that started within
 *   the last 10 minutes counts (they sign in again to get one).
 * - API keys are never asked (a key is its own credential, made for programs); the services call
 *   `require` only for signed-in callers.
 * - The window is read from the session row at the time of the action (one primary-key lookup,
 *   no cache), so it holds on every replica and ends with the session.
 */
import { unauthorized } from '../../../shared/errors.ts';
import type { Db } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import type { Reauth, ReauthProof } from '../people/reauth.ts';
import { reauthMethods, reauthRequired } from '../people/reauth.ts';
import { findStepUp, stampReauth } from './step-up.repo.ts';

/** How long an explicit re-authentication lets the guarded actions through. */
export const STEP_UP_WINDOW_MS = 5 * 60_000;
/** How long after signing in a user without a local password (OIDC) counts as re-authenticated. */
export const SIGN_IN_FRESH_MS = 10 * 60_000;

/** The session a guarded action is done in. */
export type StepUpSession = { userId: string; sessionId: string };
/** The check the guarded services are given: passes, or throws 403 `reauth_required`. */
export type RequireStepUp = (session: StepUpSession, doing: string) => Promise<void>;

export function createStepUp(deps: {
  db: Db;
  reauth: Pick<Reauth, 'verify'>;
  audit: Pick<AuditService, 'recordNow'>;
  now?: () => number;
}) {
  const { db } = deps;
  const now = deps.now ?? Date.now;

  /** Whether the session's window is open now; the methods its user has, for the refusal. */
  async function state(s: StepUpSession) {
    const row = await findStepUp(db, s.sessionId, s.userId);
    if (!row) throw unauthorized();
    const t = now();
    const open = row.has_password
      ? row.reauthenticated_at !== null && t - row.reauthenticated_at.getTime() <= STEP_UP_WINDOW_MS
      : t - row.created_at.getTime() <= SIGN_IN_FRESH_MS;
    return { open, methods: reauthMethods(row.has_password, row.totp_confirmed) };
  }

  const require: RequireStepUp = async (s, doing) => {
    const { open, methods } = await state(s);
    if (!open) throw reauthRequired(methods, doing);
  };

  return {
    require,

    /**
     * `POST /v1/auth/reauth`: checks the proof (the sign-in's throttle; a wrong one is audited
     * `user.reauth_failed`) and opens the session's window.
     */
    async open(
      who: StepUpSession & { sourceIp: string; accountId?: string | null },
      proof: ReauthProof,
      requestId: string,
    ): Promise<{ reauthenticated_at: string; valid_until: string }> {
      await deps.reauth.verify(
        who,
        proof,
        { action: 'session.reauth', targetType: 'session', targetId: who.sessionId },
        requestId,
      );
      const at = new Date(now());
      if (!(await stampReauth(db, who.sessionId, who.userId, at))) throw unauthorized();
      await deps.audit.recordNow({
        action: 'user.reauthenticated',
        actorType: 'user',
        actorId: who.userId,
        accountId: who.accountId ?? null,
        targetType: 'session',
        targetId: who.sessionId,
        sourceIp: who.sourceIp,
        requestId,
      });
      return {
        reauthenticated_at: at.toISOString(),
        valid_until: new Date(at.getTime() + STEP_UP_WINDOW_MS).toISOString(),
      };
    },

    /**
     * A reveal: a proof sent with it is checked as by `open` (without opening the window) — for a
     * user with a local password; otherwise the window must be open.
     */
    async requireOrVerify(
      who: StepUpSession & { sourceIp: string; accountId?: string | null },
      proof: ReauthProof,
      purpose: { action: string; targetType: string; targetId: string; name?: string },
      doing: string,
      requestId: string,
    ): Promise<void> {
      const given = proof.password !== undefined || proof.totp_code !== undefined;
      const { open, methods } = await state(who);
      if (given && methods[0] !== 'sign_in') return deps.reauth.verify(who, proof, purpose, requestId);
      if (!open) throw reauthRequired(methods, doing);
    },
  };
}

export type StepUp = ReturnType<typeof createStepUp>;
