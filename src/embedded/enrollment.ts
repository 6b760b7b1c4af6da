import pg from 'pg';
import { withTx } from '../server/db/pool.ts';
import { storeEnrollment } from '../server/modules/nodes/nodes.service.ts';

/**
 * `bulwark up` enrolling its own agent: the one-time token is stored hashed and audited like an
 * operator's enrollment (actor: the system), in one transaction, by the server's own code.
 */
export async function enrollLocalAgent(
  controlUrl: string,
  e: { nodeName: string; token: string; ttlMs: number },
): Promise<void> {
  const pool = new pg.Pool({ connectionString: controlUrl, max: 1, application_name: 'bulwark-up' });
  pool.on('error', () => {});
  try {
    const expiresAt = new Date(Date.now() + e.ttlMs);
    await withTx(pool, (tx) =>
      storeEnrollment(tx, { nodeName: e.nodeName, token: e.token, expiresAt, actorType: 'system' }),
    );
  } finally {
    await pool.end();
  }
}
