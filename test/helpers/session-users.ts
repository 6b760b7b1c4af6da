import type { TestServer } from './server.ts';

export type TestUser = { id: string; username: string };

/**
 * A user row straight in the control DB (no password: sessions are issued to it directly, as a
 * sign-in would), with memberships by account id.
 */
export async function createTestUser(
  s: Pick<TestServer, 'db'>,
  opts: {
    username: string;
    platformAdmin?: boolean;
    memberships?: { accountId: string; role: 'owner' | 'admin' | 'member' | 'viewer' }[];
  },
): Promise<TestUser> {
  const r = await s.db.pool.query<{ id: string }>(
    'INSERT INTO users (username, platform_admin) VALUES ($1, $2) RETURNING id',
    [opts.username, opts.platformAdmin ?? false],
  );
  const id = r.rows[0]!.id;
  for (const m of opts.memberships ?? []) {
    await s.db.pool.query('INSERT INTO memberships (account_id, user_id, role) VALUES ($1, $2, $3)', [
      m.accountId,
      id,
      m.role,
    ]);
  }
  return { id, username: opts.username };
}

/** A signed-in session for the user, as the sign-in routes hand it out. */
export async function signIn(s: Pick<TestServer, 'sessions'>, user: { id: string }) {
  const t = await s.sessions.issue({ userId: user.id, sourceIp: '127.0.0.1', userAgent: 'test' });
  return { ...t, headers: { authorization: `Bearer ${t.access_token}` } };
}
