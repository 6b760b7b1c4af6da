/**
 * OIDC sign-in: the authorization code flow with PKCE (S256), state and nonce, through
 * openid-client (discovery, the authorization URL, the code exchange and every ID token check:
 * signature, iss, aud, exp, nonce).
 *
 * `start` makes a random state and stores only its SHA-256 (oidc_flows, 10 minutes); the PKCE
 * verifier and the nonce are HMACs of the state under the install's key, so the database holds
 * nothing usable without the state. The flow is also bound to the browser that started it: a
 * random value in an HttpOnly cookie, whose SHA-256 the row keeps (login CSRF).
 *
 * `callback` takes the flow (deleted: a state works once, even when the sign-in then fails), then
 * lets openid-client exchange the code and check the ID token. The identity is looked up by
 * HMAC-SHA256(install key, issuer + "\n" + subject): the subject is never stored in clear. A new
 * identity becomes a user only when its role claim maps to a role in an account (config) or its
 * flow carries a valid invite (taken in the transaction that creates the user: single use, and a
 * used, expired or unknown invite get the same 403 as no role at all); otherwise 403. No email, name or picture is requested or stored
 * unless the operator opted in. Every sign-in and every refusal is an audit event (`auth.login`,
 * method `oidc`, actor type 'user'), and each refusal is one greppable log line.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import * as client from 'openid-client';
import type { Logger } from 'pino';
import { AppError, forbidden, unauthorized, unavailable } from '../../../shared/errors.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { loginAuditEvent } from '../people/login-event.ts';
import type { IssuedTokens } from '../sessions/sessions.service.ts';
import { installSecret } from './install-secret.ts';
import { classify, createOidcClient, type FailReason } from './oidc.client.ts';
import { type OidcRole, type OidcRoleMapping, oidcRedirectUrl } from './oidc.config.ts';
import * as repo from './oidc.repo.ts';

export const OIDC_FLOW_TTL_MS = 10 * 60_000;
/** The binding of a flow that ends in session cookies starts with this. */
export const COOKIE_FLOW_PREFIX = 'c.';
const SIGN_IN_FAILED = 'Sign-in failed';
const NO_ROLE_MESSAGE =
  'This identity has no role here: ask an administrator for an invite, or for a group that maps to a role';
const SUBJECT_KEY_NAME = 'oidc-subject-key';

type OidcSettings = {
  publicUrl?: string | undefined;
  oidcIssuer?: string | undefined;
  oidcClientId?: string | undefined;
  oidcClientSecret?: string | undefined;
  oidcRedirectUrl?: string | undefined;
  oidcScopes: string[];
  oidcRoleClaim: string;
  oidcRoleMap: OidcRoleMapping[];
  oidcStoreProfile: boolean;
  oidcLabel?: string | undefined;
};

type IssuedSession = IssuedTokens;

/** What the sessions service offers a sign-in (sessions.service.ts `issue`). */
type SessionIssuer = {
  issue(
    input: { userId: string; sourceIp: string | null; userAgent?: string | null; requestId?: string | null },
    tx?: Tx,
  ): Promise<IssuedSession>;
};

type OidcServiceDeps = {
  db: Db;
  log: Logger;
  /** The master keyring: it seals the install's subject key; without it sign-in answers 503. */
  box: SecretBox | null;
  config: OidcSettings;
  audit: Pick<AuditService, 'record' | 'recordNow'>;
  sessions: SessionIssuer;
  /** Invites: a new identity without a mapped role joins by the invite its flow carries. */
  invites?: InviteTaker;
  /** The clock (tests move it instead of waiting); ID token times are checked against it too. */
  now?: () => number;
};

/** An invite taken (deleted) by its code's SHA-256 in the caller's transaction; null: used, expired or unknown. */
type InviteTaker = {
  take(
    tx: Tx,
    codeHash: Buffer,
  ): Promise<{
    id: string;
    account_id: string | null;
    role: OidcRole | null;
    platform_admin: boolean;
  } | null>;
};

/** Thrown inside the sign-up transaction to roll it back (the invite put back) before a refusal. */
class NoRole extends Error {}

type CallbackInput = {
  code?: string | undefined;
  state?: string | undefined;
  iss?: string | undefined;
  error?: string | undefined;
  /** The value of the browser's flow cookie. */
  binding?: string | undefined;
};

type ClientInfo = { sourceIp: string; userAgent: string | null; requestId: string };

type SignedIn = IssuedSession & { user_id: string; created: boolean; redirect: string | null };

const sha256 = (s: string) => createHash('sha256').update(s).digest();

export function createOidcService(deps: OidcServiceDeps) {
  const { db, log, audit, config } = deps;
  const now = deps.now ?? Date.now;
  const enabled = Boolean(config.oidcIssuer && config.oidcClientId && config.oidcClientSecret);
  const redirectUri = enabled ? oidcRedirectUrl(config) : '';
  const scope = [
    ...new Set([...config.oidcScopes, ...(config.oidcStoreProfile ? ['email', 'profile'] : [])]),
  ].join(' ');

  const oidcClient = createOidcClient({ config, log, now });
  const clientConfig = oidcClient.configuration;
  const key = installSecret({ db, box: deps.box, name: SUBJECT_KEY_NAME });

  function requireEnabled(): void {
    if (!enabled) throw new AppError('not_found', 'OIDC sign-in is not configured');
  }

  const derive = (k: Buffer, purpose: string, value: string) =>
    createHmac('sha256', k).update(`${purpose}\n${value}`).digest('base64url');

  /** One greppable line per refused sign-in (the same shape as the password login's). */
  function logFailure(info: ClientInfo, reason: FailReason) {
    log.warn(
      { event: 'login_failed', method: 'oidc', source_ip: info.sourceIp, reason, request_id: info.requestId },
      `login failed from ${info.sourceIp}: oidc_${reason}`,
    );
  }

  const loginEvent = (info: ClientInfo, e: Parameters<typeof loginAuditEvent>[2]) =>
    loginAuditEvent('oidc', info, e);

  async function refuse(
    info: ClientInfo,
    reason: FailReason,
    extra: { userId?: string | null; details?: Record<string, unknown> } = {},
  ): Promise<never> {
    const denied = reason === 'no_role' || reason === 'user_suspended';
    logFailure(info, reason);
    await audit.recordNow(
      loginEvent(info, {
        outcome: denied ? 'denied' : 'failure',
        userId: extra.userId ?? null,
        details: { reason, ...extra.details },
      }),
    );
    if (reason === 'idp_unreachable') throw unavailable('The identity provider cannot be reached');
    if (denied) throw forbidden(reason === 'no_role' ? NO_ROLE_MESSAGE : 'This user is suspended');
    throw unauthorized(SIGN_IN_FAILED);
  }

  /** The role claim's values (a string or an array of strings; anything else is no value). */
  function claimValues(claims: Record<string, unknown>): string[] {
    const v = claims[config.oidcRoleClaim];
    if (typeof v === 'string') return [v];
    if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string');
    return [];
  }

  function profile(claims: Record<string, unknown>): { email: string | null; displayName: string | null } {
    if (!config.oidcStoreProfile) return { email: null, displayName: null };
    const email = typeof claims.email === 'string' && claims.email.length <= 320 ? claims.email : null;
    const name = typeof claims.name === 'string' ? claims.name.slice(0, 200) : null;
    return { email, displayName: name };
  }

  return {
    enabled,
    /** The sign-in button's text (config oidcLabel); null: the dashboard's default. */
    label: enabled ? (config.oidcLabel ?? null) : null,
    /** The flow cookie is Secure when the IdP sends the browser back over https. */
    secureCookie: redirectUri.startsWith('https:'),

    /**
     * A new flow: where to send the browser, and the value of its binding cookie. A flow that ends
     * in the dashboard's session cookies has a binding that says so (`c.` + random): the flow keeps
     * the SHA-256 of the whole value, so the mode cannot be changed without failing the binding.
     */
    async start(input: {
      redirect?: string | undefined;
      invite?: string | undefined;
      session?: 'token' | 'cookie' | undefined;
    }): Promise<{ url: string; binding: string }> {
      requireEnabled();
      const c = await clientConfig();
      const k = await key();
      const state = client.randomState();
      const binding = `${input.session === 'cookie' ? COOKIE_FLOW_PREFIX : ''}${randomBytes(32).toString('base64url')}`;
      const at = now();
      await repo.insertFlow(db, {
        stateHash: sha256(state),
        bindingHash: sha256(binding),
        inviteHash: input.invite ? sha256(input.invite) : null,
        redirect: input.redirect ?? null,
        expiresAt: new Date(at + OIDC_FLOW_TTL_MS),
        now: new Date(at),
      });
      const url = client.buildAuthorizationUrl(c, {
        redirect_uri: redirectUri,
        scope,
        response_type: 'code',
        code_challenge: await client.calculatePKCECodeChallenge(derive(k, 'pkce', state)),
        code_challenge_method: 'S256',
        state,
        nonce: derive(k, 'nonce', state),
      });
      return { url: url.href, binding };
    },

    /** The IdP's redirect back: the flow, the code exchange, the identity, a session. */
    async callback(input: CallbackInput, info: ClientInfo): Promise<SignedIn> {
      requireEnabled();
      if (!input.state) return refuse(info, 'missing_state');
      const flow = await repo.takeFlow(db, sha256(input.state));
      if (!flow) return refuse(info, 'unknown_state');
      if (flow.expires_at.getTime() <= now()) return refuse(info, 'expired_state');
      if (!input.binding || !timingSafeEqual(sha256(input.binding), flow.binding_hash))
        return refuse(info, 'browser_mismatch');
      if (input.error !== undefined)
        return refuse(info, 'idp_error', { details: { idp_error: input.error } });

      const c = await clientConfig();
      const k = await key();
      const expectedIssuer = c.serverMetadata().issuer;
      const current = new URL(redirectUri);
      for (const [name, value] of Object.entries({ code: input.code, state: input.state, iss: input.iss }))
        if (value !== undefined) current.searchParams.set(name, value);
      let claims: Record<string, unknown>;
      try {
        const tokens = await client.authorizationCodeGrant(c, current, {
          pkceCodeVerifier: derive(k, 'pkce', input.state),
          expectedState: input.state,
          expectedNonce: derive(k, 'nonce', input.state),
        });
        const idClaims = tokens.claims();
        if (!idClaims) return refuse(info, 'invalid_response');
        claims = idClaims as Record<string, unknown>;
      } catch (err) {
        if (err instanceof AppError) throw err;
        const reason = classify(err, input, expectedIssuer);
        log.debug({ err: (err as Error).message, reason }, 'OIDC code exchange refused');
        return refuse(info, reason);
      }

      const issuer = String(claims.iss);
      const subjectHmac = createHmac('sha256', k)
        .update(`${issuer}\n${String(claims.sub)}`)
        .digest();
      const { email, displayName } = profile(claims);
      const existing = await repo.findIdentityUser(db, issuer, subjectHmac);
      if (existing) return signInExisting(existing, { issuer, subjectHmac, email, displayName }, flow, info);

      // A new identity: the role map, or (later) an invite.
      const values = new Set(claimValues(claims));
      const mapped = config.oidcRoleMap.filter((m) => values.has(m.value));
      const accounts = await repo.accountIdsByName(db, [...new Set(mapped.map((m) => m.account))]);
      const memberships = mapped.flatMap((m) => {
        const accountId = accounts.get(m.account);
        if (!accountId)
          log.warn({ account: m.account }, 'OIDC role map names an account that does not exist');
        return accountId ? [{ accountId, role: m.role, via: 'role_map' }] : [];
      });
      const withInvite = flow.invite_hash !== null && deps.invites !== undefined;
      if (memberships.length === 0 && !withInvite)
        return refuse(info, 'no_role', { details: { invite: flow.invite_hash !== null } });

      let created: { userId: string; session: IssuedSession } | null;
      try {
        created = await withTx(db, async (tx) => {
          // The invite is taken (deleted) in this transaction: a failure below puts it back.
          const invite = withInvite ? await deps.invites!.take(tx, flow.invite_hash!) : null;
          const all = [...memberships];
          if (invite?.account_id && invite.role && !all.some((m) => m.accountId === invite.account_id))
            all.push({ accountId: invite.account_id, role: invite.role, via: 'invite' });
          const platformAdmin = invite?.platform_admin ?? false;
          if (all.length === 0 && !platformAdmin) throw new NoRole();
          const userId = await repo.insertOidcUser(tx, {
            issuer,
            subjectHmac,
            platformAdmin,
            email,
            displayName,
          });
          if (!userId) return null;
          for (const m of all) await repo.insertMembership(tx, m.accountId, userId, m.role);
          const event = {
            actorType: 'user' as const,
            actorId: userId,
            sourceIp: info.sourceIp,
            requestId: info.requestId,
          };
          if (invite)
            await audit.record(tx, {
              ...event,
              action: 'invite.redeemed',
              accountId: invite.account_id,
              targetType: 'invite',
              targetId: invite.id,
              details: {
                user_id: userId,
                method: 'oidc',
                role: invite.role,
                platform_admin: invite.platform_admin,
              },
            });
          for (const m of all)
            await audit.record(tx, {
              ...event,
              action: 'user.created',
              accountId: m.accountId,
              targetType: 'user',
              targetId: userId,
              details: { method: 'oidc', role: m.role, via: m.via },
            });
          const session = await deps.sessions.issue({ userId, ...info }, tx);
          await audit.record(tx, loginEvent(info, { userId, details: { new_user: true } }));
          return { userId, session };
        });
      } catch (err) {
        if (!(err instanceof NoRole)) throw err;
        // The same answer for a used, an expired and an unknown invite: no oracle.
        return refuse(info, 'no_role', { details: { invite: true } });
      }
      if (!created) {
        // A concurrent first sign-in of the same identity made the user: sign that one in.
        const raced = await repo.findIdentityUser(db, issuer, subjectHmac);
        if (!raced) return refuse(info, 'invalid_response');
        return signInExisting(raced, { issuer, subjectHmac, email, displayName }, flow, info);
      }
      return { ...created.session, user_id: created.userId, created: true, redirect: flow.redirect };
    },
  };

  async function signInExisting(
    user: repo.IdentityUser,
    identity: { issuer: string; subjectHmac: Buffer; email: string | null; displayName: string | null },
    flow: repo.FlowRow,
    info: ClientInfo,
  ): Promise<SignedIn> {
    if (user.status !== 'active') return refuse(info, 'user_suspended', { userId: user.user_id });
    if (config.oidcStoreProfile) await repo.updateIdentityProfile(db, identity);
    const session = await withTx(db, async (tx) => {
      const s = await deps.sessions.issue({ userId: user.user_id, ...info }, tx);
      await audit.record(tx, loginEvent(info, { userId: user.user_id, details: { new_user: false } }));
      return s;
    });
    return { ...session, user_id: user.user_id, created: false, redirect: flow.redirect };
  }
}

export type OidcService = ReturnType<typeof createOidcService>;
