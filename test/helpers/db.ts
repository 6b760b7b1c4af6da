import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { testEnv } from './env.ts';

export type TestDb = { name: string; url: string; pool: pg.Pool; drop(): Promise<void> };

function withDb(url: string, db: string): string {
  return url.replace(/\/[^/?]*(\?.*)?$/, `/${db}$1`).replace(/undefined$/, '');
}

/** A fresh control database cloned from the migrated template; dropped by `drop()`. */
export async function createTestDb(): Promise<TestDb> {
  const env = testEnv();
  const name = `t_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: env.adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name} TEMPLATE ${env.template} OWNER ${env.controlRole}`);
  } finally {
    await admin.end();
  }
  const url = withDb(env.controlUrl, name);
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  pool.on('error', () => {});
  return {
    name,
    url,
    pool,
    async drop() {
      await pool.end();
      const a = new pg.Client({ connectionString: env.adminUrl });
      await a.connect();
      try {
        await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await a.end();
      }
    },
  };
}

export async function adminQuery<T extends pg.QueryResultRow>(
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  const a = new pg.Client({ connectionString: testEnv().adminUrl });
  await a.connect();
  try {
    return (await a.query<T>(sql, params)).rows;
  } finally {
    await a.end();
  }
}
