/**
 * Invites made on the host, straight through the control database, by processes that run no
 * audit chainer (their events go through the plain `recordAudit`; the server's chainer finds
 * them): `bulwark admin invite` (the operator) and the first start of `bulwark up` (the system),
 * which makes the one-time invite of the first platform admin.
 */
import { type Db, withTx } from '../../db/pool.ts';
import { recordAudit } from '../audit/audit.service.ts';
import { ensureAccount } from '../keys/keys.repo.ts';
import * as repo from './invites.repo.ts';
import { DEFAULT_INVITE_HOURS, issueInvites } from './invites.service.ts';

const HOUR_MS = 3_600_000;

/** The account the first admin owns (created with their invite). */
export const FIRST_ACCOUNT = 'default';

type OperatorInvite = {
  code: string;
  expiresAt: Date;
  /** The account the new user joins (created if it did not exist), or null. */
  account: { name: string; created: boolean } | null;
  role: repo.InviteRole | null;
  platformAdmin: boolean;
};

/**
 * One invite made by the operator: into `accountName` (created if missing) with `role`, and/or a
 * platform admin. At least one of the two; audited as the operator's.
 */
export async function createOperatorInvite(
  db: Db,
  opts: {
    accountName?: string | undefined;
    role?: repo.InviteRole | undefined;
    platformAdmin: boolean;
    expiresInHours?: number | undefined;
  },
): Promise<OperatorInvite> {
  if (opts.accountName === undefined && !opts.platformAdmin)
    throw new TypeError('an invite needs an account or the platform-admin flag');
  return withTx(db, async (tx) => {
    const account = opts.accountName === undefined ? null : await ensureAccount(tx, opts.accountName);
    const actor = { actorType: 'operator' as const };
    if (account?.created)
      await recordAudit(tx, {
        ...actor,
        action: 'account.created',
        accountId: account.id,
        targetType: 'account',
        targetId: account.id,
      });
    const role = account ? (opts.role ?? 'owner') : null;
    const [issued] = await issueInvites(tx, recordAudit, {
      count: 1,
      accountId: account?.id ?? null,
      role,
      platformAdmin: opts.platformAdmin,
      expiresAt: new Date(Date.now() + (opts.expiresInHours ?? DEFAULT_INVITE_HOURS) * HOUR_MS),
      createdByUserId: null,
      actor,
    });
    return {
      code: issued!.code,
      expiresAt: issued!.expiresAt,
      account: account ? { name: account.name, created: account.created } : null,
      role,
      platformAdmin: opts.platformAdmin,
    };
  });
}

type FirstAdminInvite =
  | { state: 'issued'; code: string; expiresAt: Date }
  /** Someone already signed up: no first-admin invite is made. */
  | { state: 'users_exist' }
  /** A platform-admin invite is still pending (made by an earlier start or the operator). */
  | { state: 'pending'; since: Date };

/**
 * The first start of `bulwark up` on an install without users: one platform-admin invite (also
 * the owner of the first account, `default`), made once. Later starts find users or the pending invite and make none; when the first invite
 * expired unused and nobody signed up, the next start makes a new one. Serialised by an advisory
 * lock, so concurrent callers cannot both make one.
 */
export async function ensureFirstAdminInvite(
  db: Db,
  opts: { expiresInHours?: number } = {},
): Promise<FirstAdminInvite> {
  return withTx(db, async (tx) => {
    await repo.lockFirstAdmin(tx);
    const state = await repo.firstAdminState(tx);
    if (state.users > 0) return { state: 'users_exist' };
    if (state.pendingAdminInvite) return { state: 'pending', since: state.pendingAdminInvite };
    // The first admin also owns the install's first account, so the dashboard's first steps
    // (create a database, connect) work for them at once; more accounts come from their invites.
    const account = await ensureAccount(tx, FIRST_ACCOUNT);
    if (account.created)
      await recordAudit(tx, {
        actorType: 'system',
        action: 'account.created',
        accountId: account.id,
        targetType: 'account',
        targetId: account.id,
      });
    const [issued] = await issueInvites(
      tx,
      (t, e) => recordAudit(t, { ...e, details: { ...e.details, first_admin: true } }),
      {
        count: 1,
        accountId: account.id,
        role: 'owner',
        platformAdmin: true,
        expiresAt: new Date(Date.now() + (opts.expiresInHours ?? DEFAULT_INVITE_HOURS) * HOUR_MS),
        createdByUserId: null,
        actor: { actorType: 'system' },
      },
    );
    return { state: 'issued', code: issued!.code, expiresAt: issued!.expiresAt };
  });
}
