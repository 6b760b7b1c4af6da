/**
 * Governed execution's login on an attached database (ADR 0031): the entry's own reader or
 * migrator (by the token's capability) at the entry's host and database, with TLS as the entry
 * says (under the framing filter). Its credentials are the operator's: a refused login is a
 * refusal (`database`), never repaired by preparing a role — Bulwark owns nothing there. A kept
 * login is found under the same key shape as a hosted one's (`<database id>:<user>`); a cancel
 * goes to the entry's server (attached-connect.ts), never through the agent's admin pool.
 */
import type { ExecutePayload } from '../../shared/contracts/execution.ts';
import type { AttachedDatabase } from '../attached/attached-config.ts';
import { attachedSsl, cancelAttachedBackend } from '../attached/attached-connect.ts';
import { isLoginRefused } from '../postgres/steward.ts';
import type { ExecutionPool } from './execution-pool.ts';
import { NotPreparedError } from './execution-role.ts';
import { type ExecutionSession, openExecutionSession } from './execution-session.ts';

/** A session to run on, with its kept-login key and how to cancel its statement. */
export type Leased = {
  session: ExecutionSession;
  key: string;
  user: string;
  /** Asks the session's server to cancel its statement. May reject. */
  cancel(): Promise<unknown>;
};

export async function connectAttached(
  pool: Pick<ExecutionPool, 'take'>,
  p: ExecutePayload,
  db: AttachedDatabase,
): Promise<Leased> {
  const { user, password } = db[p.capability];
  const key = `${p.database_id}:${user}`;
  const cancelOf = (session: ExecutionSession) => () =>
    cancelAttachedBackend(db, session.pid, session.secretKey);
  const kept = await pool.take(key, { statementMs: p.statement_timeout_ms, lockMs: p.lock_timeout_ms });
  if (kept) return { session: kept, key, user, cancel: cancelOf(kept) };
  const ssl = attachedSsl(db);
  try {
    const session = await openExecutionSession({
      host: db.host,
      port: db.port,
      database: db.database,
      user,
      password,
      statementTimeoutMs: p.statement_timeout_ms,
      lockTimeoutMs: p.lock_timeout_ms,
      ...(ssl ? { tls: ssl } : {}),
    });
    return { session, key, user, cancel: cancelOf(session) };
  } catch (err) {
    if (!isLoginRefused(err)) throw err;
    throw new NotPreparedError(
      `attached database ${p.name}: its ${p.capability} role ${user} could not log in at ${db.host}:${db.port}/${db.database} (${(err as Error).message.slice(0, 300)})`,
    );
  }
}
