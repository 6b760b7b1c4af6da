/**
 * A database's credentials: where to connect, the owner's password on request (a signed-in user
 * re-authenticates first: sessions/step-up.ts), and its rotation. Built by the databases service
 * with its own helpers (scope-checked lookup, status check, audit in the change's transaction).
 */
import type { Logger } from 'pino';
import { JOB_KINDS } from '../../../shared/contracts/jobs.ts';
import { conflict, forbidden, notFound } from '../../../shared/errors.ts';
import { roleNames } from '../../../shared/identifiers.ts';
import type { ServerConfig } from '../../config.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import { type Caller, callerLogFields, requireLevel } from '../../http/caller.ts';
import { enqueueJob } from '../jobs/jobs.repo.ts';
import type { ReauthProof } from '../people/reauth.ts';
import type { StepUp } from '../sessions/step-up.ts';
import { requireHosted } from './databases.kind.ts';
import * as repo from './databases.repo.ts';

export const passwordContext = (databaseId: string) => `database:${databaseId}`;

export function createCredentialOps(ctx: {
  db: Db;
  config: Pick<ServerConfig, 'poolerPublicHost' | 'poolerPort' | 'poolerSslmode'>;
  log: Logger;
  /** The sessions module's step-up check (undefined: signed-in users cannot reveal). */
  stepUp: Pick<StepUp, 'requireOrVerify'> | undefined;
  requireBox: () => SecretBox;
  /** The caller's live database by name (404 otherwise), locked for update inside `tx`. */
  find: (caller: Caller, name: string, tx?: Tx) => Promise<repo.DatabaseRow>;
  requireStatus: (row: repo.DatabaseRow, allowed: repo.DatabaseStatus[], what: string) => void;
  audit: (
    tx: Tx,
    caller: Caller,
    action: string,
    id: string,
    details: Record<string, unknown>,
  ) => Promise<unknown>;
  newPassword: (box: SecretBox, databaseId: string) => Promise<{ sealed: string; verifier: string }>;
}) {
  const { db, config, log, requireBox, requireStatus, audit, newPassword } = ctx;
  // Bulwark holds no credential of an attached database (its agent's host does): 409.
  const find = async (caller: Caller, name: string, tx?: Tx) => {
    const row = await ctx.find(caller, name, tx);
    requireHosted(row, 'hold credentials or connection details for');
    return row;
  };
  /**
   * Where to connect to a database: its physical name (a warm-pool spare keeps its own, ADR 0034)
   * and its owner role, through the node's PgBouncer.
   */
  const connectionOf = (row: repo.DatabaseRow) => {
    const database = repo.physicalName(row);
    const user = roleNames(database).owner;
    // The node's own PgBouncer when its agent reported where it is (issue 17), else the server's setting.
    const own = row.node_pooler_host !== null && row.node_pooler_port !== null;
    const hostName = own ? row.node_pooler_host! : config.poolerPublicHost;
    const port = own ? row.node_pooler_port! : config.poolerPort;
    const host = hostName.includes(':') ? `[${hostName}]` : hostName;
    return {
      host: hostName,
      port,
      user,
      database,
      sslmode: config.poolerSslmode,
      uri: `postgresql://${user}@${host}:${port}/${database}?sslmode=${config.poolerSslmode}`,
    };
  };

  /**
   * The checks a reveal makes of its caller before any password leaves: write level, a master key,
   * and a signed-in user's step-up (inline `proof` or an open window). `target` names the database
   * (for a create, the one about to be made).
   */
  const requireMayReveal = async (
    caller: Caller,
    target: { id: string; name: string },
    proof: ReauthProof,
    requestId: string,
  ): Promise<SecretBox> => {
    requireLevel(caller, 'write');
    const box = requireBox();
    if (caller.kind === 'user') {
      if (!ctx.stepUp) throw forbidden('Signed-in users cannot reveal passwords on this server');
      await ctx.stepUp.requireOrVerify(
        caller,
        proof,
        { action: 'database.reveal', targetType: 'database', targetId: target.id, name: target.name },
        'reveal a password',
        requestId,
      );
    }
    return box;
  };

  return {
    /** Where to connect: everything but the password. */
    async connection(caller: Caller, name: string) {
      requireLevel(caller, 'read');
      return connectionOf(await find(caller, name));
    },

    connectionOf,
    requireMayReveal,

    /**
     * The owner's password of a database the caller just created and may reveal
     * (`requireMayReveal` passed before the create; the create's audit event says `reveal: true`).
     */
    async openPassword(caller: Caller, row: Pick<repo.DatabaseRow, 'id'>): Promise<string | null> {
      const box = requireBox();
      const sealed = await repo.findSealed(db, { id: row.id, accountId: caller.accountId });
      if (!sealed?.password_sealed) return null;
      return box.open(sealed.password_sealed, passwordContext(row.id));
    },

    /**
     * The owner's password, on explicit request only (write level). Logged without the value. A
     * signed-in user proves themselves again first — inline (`proof`) or by an open step-up window
     * (sessions/step-up.ts); API keys do not.
     */
    async reveal(
      caller: Caller,
      name: string,
      proof: ReauthProof = {},
      requestId = '',
    ): Promise<{ password: string }> {
      requireLevel(caller, 'write');
      requireBox();
      // Another account's database is a 404 before anything is asked of the user.
      const box =
        caller.kind === 'user'
          ? await requireMayReveal(caller, await find(caller, name), proof, requestId)
          : await requireMayReveal(caller, { id: '', name }, proof, requestId);
      const password = await withTx(db, async (tx) => {
        const row = await find(caller, name, tx);
        requireStatus(row, ['provisioning', 'ready', 'failed'], 'reveal credentials');
        const sealed = await repo.findSealed(tx, { id: row.id, accountId: caller.accountId });
        if (!sealed?.password_sealed) throw notFound('Database');
        // Recorded before the password leaves: no audit row, no password.
        await audit(tx, caller, 'database.credentials_revealed', row.id, {
          name,
          password_version: row.password_version,
        });
        return box.open(sealed.password_sealed, passwordContext(row.id));
      });
      log.info({ database: name, ...callerLogFields(caller) }, 'database credentials revealed');
      return { password };
    },

    /** A new password for the owner; it replaces the old one when the agent reports it live. */
    async rotate(caller: Caller, name: string): Promise<repo.DatabaseRow> {
      requireLevel(caller, 'write');
      const box = requireBox();
      // The verifier is computed before the transaction (off the event loop, ~tens of ms).
      const before = await find(caller, name);
      const { sealed, verifier } = await newPassword(box, before.id);
      return withTx(db, async (tx) => {
        const row = await find(caller, name, tx);
        if (row.id !== before.id) throw conflict('The database changed meanwhile; try again');
        requireStatus(row, ['ready'], 'rotate credentials');
        if (row.rotation_pending) throw conflict('A credential rotation is already in progress');
        await repo.setPendingPassword(tx, row.id, sealed);
        await enqueueJob(tx, {
          nodeId: row.node_id,
          accountId: caller.accountId,
          kind: JOB_KINDS.rotate,
          payload: { database_id: row.id, name, verifier },
        });
        await audit(tx, caller, 'database.credentials_rotation_requested', row.id, { name });
        log.info(
          { database: name, database_id: row.id, ...callerLogFields(caller) },
          'credential rotation queued',
        );
        // Read back: the answer carries the request's `last_rotation` (what `--wait` follows).
        return (await repo.findByName(tx, caller.accountId, name))!;
      });
    },
  };
}
