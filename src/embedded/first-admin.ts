import pg from 'pg';
import { inviteUrl } from '../server/modules/invites/invite-code.ts';
import { ensureFirstAdminInvite, FIRST_ACCOUNT } from '../server/modules/invites/invites.operator.ts';

/**
 * `bulwark up` on an install without users: one platform-admin invite, made and shown once, as a
 * link with the code in the URL fragment (never sent to a server, so never in a log). Returns the
 * lines to print: the link on the start that made it; on later starts a line saying one is pending
 * (its code cannot be shown again) or nothing once someone has signed up.
 */
export async function firstAdminLines(
  controlUrl: string,
  serverUrl: string,
  dataDirFlag: string,
): Promise<string[]> {
  const pool = new pg.Pool({ connectionString: controlUrl, max: 1, application_name: 'bulwark-up' });
  pool.on('error', () => {});
  try {
    const r = await ensureFirstAdminInvite(pool);
    if (r.state === 'users_exist') return [];
    const another = `bulwark admin invite --platform-admin${dataDirFlag}`;
    if (r.state === 'pending')
      return [
        `  first admin: an invite made ${r.since.toISOString()} is pending (for a new one: ${another})`,
      ];
    return [
      `  first admin: open  ${inviteUrl(serverUrl, r.code)}`,
      `               (one-time invite of a platform admin who owns account "${FIRST_ACCOUNT}", expires ${r.expiresAt.toISOString()}; shown only now)`,
    ];
  } finally {
    await pool.end();
  }
}
