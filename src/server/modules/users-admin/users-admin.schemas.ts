import { z } from 'zod';
import type { AdminSessionRow, AdminUserRow } from './users-admin.repo.ts';

const role = z.enum(['owner', 'admin', 'member', 'viewer']);

/** A user as the admin API shows it: never a password hash, TOTP secret or identity. */
export const adminUserSchema = z.object({
  id: z.uuid(),
  username: z.string().max(63).nullable(),
  platform_admin: z.boolean(),
  status: z.enum(['active', 'suspended']),
  totp_enabled: z.boolean(),
  role: role.nullable().describe('The role in the account listed; null in the platform-wide list'),
  created_at: z.string().max(40),
});

/** A session as the admin API shows it: never a token. */
export const adminSessionSchema = z.object({
  id: z.uuid(),
  user_id: z.uuid(),
  status: z.enum(['active', 'revoked', 'expired']),
  created_at: z.string().max(40),
  last_used_at: z.string().max(40),
  expires_at: z.string().max(40),
  revoked_at: z.string().max(40).nullable(),
  revoked_reason: z.enum(['logout', 'refresh_reuse', 'user_suspended', 'revoked']).nullable(),
  source_ip: z.string().max(45).nullable(),
  user_agent: z.string().max(500).nullable(),
});

export const presentAdminUser = (u: AdminUserRow): z.infer<typeof adminUserSchema> => ({
  id: u.id,
  username: u.username,
  platform_admin: u.platform_admin,
  status: u.status,
  totp_enabled: u.totp_enabled,
  role: u.role,
  created_at: u.created_at.toISOString(),
});

export const presentAdminSession = (
  s: AdminSessionRow,
  now = Date.now(),
): z.infer<typeof adminSessionSchema> => ({
  id: s.id,
  user_id: s.user_id,
  status: s.revoked_at ? 'revoked' : s.expires_at.getTime() <= now ? 'expired' : 'active',
  created_at: s.created_at.toISOString(),
  last_used_at: s.last_used_at.toISOString(),
  expires_at: s.expires_at.toISOString(),
  revoked_at: s.revoked_at?.toISOString() ?? null,
  revoked_reason: s.revoked_reason as z.infer<typeof adminSessionSchema>['revoked_reason'],
  source_ip: s.source_ip,
  user_agent: s.user_agent,
});
