import type { Permission } from '../../src/server/http/caller.ts';
import { createOperatorKey } from '../../src/server/modules/keys/keys.service.ts';
import type { TestServer } from './server.ts';

export type TestKey = { key: string; id: string; accountId: string; headers: { authorization: string } };

/**
 * A real API key (through the same SQL as `bulwark admin create-key`): account-scoped admin
 * by default (the account is created if missing); pass `level`/`databases` to narrow it.
 */
export async function createTestKey(
  s: Pick<TestServer, 'db'>,
  opts: { account: string; level?: Permission; databases?: string[] | null; explorer?: boolean },
): Promise<TestKey> {
  const { key, row, account } = await createOperatorKey(s.db.pool, {
    accountName: opts.account,
    level: opts.level ?? 'admin',
  });
  if (opts.databases !== undefined || opts.explorer !== undefined) {
    await s.db.pool.query(
      'UPDATE api_keys SET databases = $2, explorer = coalesce($3, explorer) WHERE id = $1',
      [row.id, opts.databases ?? null, opts.explorer ?? null],
    );
  }
  return { key, id: row.id, accountId: account.id, headers: { authorization: `Bearer ${key}` } };
}
