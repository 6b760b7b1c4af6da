/**
 * Attached databases, the server's side (issue 17, ADR 0031): an agent reports the whole list its
 * own config file attaches, with its role checks; each becomes (or stays) a `databases` row of kind
 * `attached` on that agent's node — `ready` when the checks passed, `failed` with the findings
 * otherwise — so that the explorer, governed execution and the audit find it by name like a hosted
 * database. An attached database the node no longer lists is detached (deleted). The report holds
 * no secret: Bulwark never has an attached database's credentials.
 *
 * A node offers; the account decides. A newly registered attached database waits (`provisioning`,
 * `attached.accepted_at` null) until an admin of its account accepts it — the explorer and governed
 * SQL need `ready`, so nothing of the account's reaches that node's agent for it before — or
 * rejects it (deleted, and that node may not offer that name to that account again).
 *
 * A name already taken in the account (by a hosted database, or by an attached one of another
 * node) or on the node is refused for that entry, never taken over; an unknown account likewise.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type {
  AttachedReport,
  AttachedReportAnswer,
  AttachedReportEntry,
} from '../../../shared/contracts/attached.ts';
import { badRequest, conflict, notFound } from '../../../shared/errors.ts';
import { notify } from '../../db/notify.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import { assertDatabaseInScope, type Caller, callerActor, requireLevel } from '../../http/caller.ts';
import { type AuditService, auditFromCaller } from '../audit/audit.service.ts';
import { DATABASE_STATUS_CHANNEL } from './databases.jobs.ts';
import * as repo from './databases.repo.ts';
import { checkDatabaseName } from './databases.service.ts';

type Row = {
  id: string;
  account_id: string;
  name: string;
  status: string;
  attached_accepted_at: Date | null;
};

/** The failure reason shown for an entry whose checks refused it (the findings say the rest). */
function failureReason(e: AttachedReportEntry): string | null {
  if (e.ok) return null;
  const refusing = e.findings.filter((f) => f.severity === 'refuse');
  if (refusing.length === 0) return 'the agent could not check the roles (no login)';
  const first = refusing
    .slice(0, 3)
    .map((f) => `${f.role}: ${f.kind}${f.object ? ` (${f.object})` : ''}`)
    .join('; ');
  return `refused by the agent's role checks: ${first}${refusing.length > 3 ? ` and ${refusing.length - 3} more` : ''}`.slice(
    0,
    1000,
  );
}

export function createAttachedService(deps: { db: Db; audit: Pick<AuditService, 'record'>; log: Logger }) {
  const { db, log } = deps;

  /** The caller's attached database by name, locked (another account's, or a hosted one: 404 / 409). */
  const findAttached = async (tx: Tx, caller: Caller, name: string) => {
    checkDatabaseName(name);
    assertDatabaseInScope(caller, name);
    const row = await repo.findByName(tx, caller.accountId, name, { forUpdate: true });
    if (!row) throw notFound('Database');
    if (row.kind !== 'attached')
      throw conflict(`${name} is a hosted database: there is nothing to accept or reject`);
    return row;
  };

  const decided = (tx: Tx, caller: Caller, action: string, row: repo.DatabaseRow) =>
    deps.audit.record(
      tx,
      auditFromCaller(caller, {
        action,
        targetType: 'database',
        targetId: row.id,
        details: { name: row.name, node: row.node_name },
      }),
    );

  const event = (
    tx: Tx,
    nodeId: string,
    action: string,
    row: { id: string; account_id: string; name: string },
    details: Record<string, unknown>,
    ok = true,
  ) =>
    deps.audit.record(tx, {
      action,
      actorType: 'agent',
      actorId: nodeId,
      accountId: row.account_id,
      targetType: 'database',
      targetId: row.id,
      outcome: ok ? 'success' : 'failure',
      details: { name: row.name, ...details },
    });

  return {
    /**
     * An admin of the account accepts an attached database its node offered: from now on it is
     * `ready` (or `failed`, when the agent's checks refused it) and the explorer and governed SQL
     * run on it. Accepting an accepted one changes nothing.
     */
    async accept(caller: Caller, name: string): Promise<repo.DatabaseRow> {
      requireLevel(caller, 'admin');
      const id = await withTx(db, async (tx) => {
        const row = await findAttached(tx, caller, name);
        if (row.attached_accepted_at) return row.name;
        const ok = row.attached?.ok === true;
        await tx.query(
          `UPDATE databases SET attached_accepted_at = now(), attached_accepted_by = $2, status = $3,
                  failure_reason = CASE WHEN $3 = 'failed' THEN coalesce(failure_reason, $4) END,
                  ready_at = CASE WHEN $3 = 'ready' THEN now() END, updated_at = now()
            WHERE id = $1`,
          [
            row.id,
            callerActor(caller).id,
            ok ? 'ready' : 'failed',
            "refused by the agent's role checks (see attached.findings)",
          ],
        );
        await decided(tx, caller, 'database.attach_accepted', row);
        await notify(tx, DATABASE_STATUS_CHANNEL, row.id);
        return row.name;
      });
      return (await repo.findByName(db, caller.accountId, id))!;
    },

    /**
     * An admin of the account rejects (or, once accepted, drops) an attached database: it is
     * deleted here, and its node may not offer that name to the account again. Nothing is done to
     * the database itself.
     */
    async reject(caller: Caller, name: string, confirm: string): Promise<void> {
      requireLevel(caller, 'admin');
      if (confirm !== name) throw badRequest('To reject an attached database, repeat its name in "confirm"');
      await withTx(db, async (tx) => {
        const row = await findAttached(tx, caller, name);
        await tx.query(
          `UPDATE databases SET status = 'deleted', deleted_at = now(), attached_rejected_at = now(),
                  updated_at = now()
            WHERE id = $1`,
          [row.id],
        );
        await decided(tx, caller, 'database.attach_rejected', row);
        await notify(tx, DATABASE_STATUS_CHANNEL, row.id);
      });
    },

    /** Applies one node's report as a whole; answers per entry. */
    async report(nodeId: string, report: AttachedReport): Promise<AttachedReportAnswer> {
      const answer = await withTx(db, async (tx) => {
        // The node's attached rows, locked: two reports of one node apply one after the other.
        const mine = await tx.query<Row>(
          `SELECT id, account_id, name, status, attached_accepted_at FROM databases
            WHERE node_id = $1 AND kind = 'attached' AND deleted_at IS NULL
            ORDER BY id FOR UPDATE`,
          [nodeId],
        );
        const byKey = new Map(mine.rows.map((r) => [`${r.account_id}/${r.name}`, r]));
        const kept = new Set<string>();
        const out: AttachedReportAnswer['databases'] = [];
        const refuse = (e: AttachedReportEntry, reason: string) =>
          out.push({ name: e.name, account_id: e.account_id, database_id: null, status: 'refused', reason });
        for (const e of report.databases) {
          const key = `${e.account_id}/${e.name}`;
          if (kept.has(key)) {
            refuse(e, 'listed twice in the report');
            continue;
          }
          const state = {
            ok: e.ok,
            checked_at: new Date().toISOString(),
            server_version: e.server_version,
            findings: e.findings,
          };
          const existing = byKey.get(key);
          // Until its account accepted it, an attached database waits whatever its checks say.
          const accepted = existing?.attached_accepted_at != null;
          const status = !accepted ? 'provisioning' : e.ok ? 'ready' : 'failed';
          const reason = accepted ? failureReason(e) : null;
          if (existing) {
            kept.add(key);
            await tx.query(
              `UPDATE databases SET status = $2, failure_reason = $3, attached = $4,
                      ready_at = CASE WHEN $2 = 'ready' THEN coalesce(ready_at, now()) ELSE ready_at END,
                      updated_at = now()
                WHERE id = $1`,
              [existing.id, status, reason, JSON.stringify(state)],
            );
            if (existing.status !== status) {
              await event(tx, nodeId, 'database.attached_checked', existing, { status, reason }, e.ok);
              await notify(tx, DATABASE_STATUS_CHANNEL, existing.id);
            }
            out.push({
              name: e.name,
              account_id: e.account_id,
              database_id: existing.id,
              status: 'attached',
              reason: null,
            });
            continue;
          }
          const account = await tx.query('SELECT 1 FROM accounts WHERE id = $1', [e.account_id]);
          if (account.rowCount === 0) {
            refuse(e, 'no such account');
            continue;
          }
          // Rejected by the account: this node may not offer that name to it again.
          const rejected = await tx.query(
            `SELECT 1 FROM databases WHERE account_id = $1 AND name = $2 AND node_id = $3
                AND kind = 'attached' AND attached_rejected_at IS NOT NULL LIMIT 1`,
            [e.account_id, e.name, nodeId],
          );
          if ((rejected.rowCount ?? 0) > 0) {
            refuse(e, 'the account rejected this database from this node');
            continue;
          }
          // Its label must be free in the account, and (an attached database's name on the node is
          // its label) no database may be called that on the node (databases_node_physical_key).
          const taken = await tx.query(
            `SELECT 1 FROM databases WHERE deleted_at IS NULL
                AND ((account_id = $1 AND name = $3) OR (node_id = $2 AND coalesce(pg_name, name) = $3))
              LIMIT 1`,
            [e.account_id, nodeId, e.name],
          );
          if ((taken.rowCount ?? 0) > 0) {
            refuse(e, 'the name is taken by another database of the account or on this node');
            continue;
          }
          const id = randomUUID();
          await tx.query(
            `INSERT INTO databases (id, account_id, node_id, name, status, failure_reason, kind, attached,
                                    limits, ready_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'attached', $7, '{}'::jsonb, NULL)`,
            [id, e.account_id, nodeId, e.name, status, reason, JSON.stringify(state)],
          );
          kept.add(key);
          const row = { id, account_id: e.account_id, name: e.name };
          await event(
            tx,
            nodeId,
            'database.attached',
            row,
            { status, checks_passed: e.ok, awaiting: 'acceptance' },
            e.ok,
          );
          out.push({
            name: e.name,
            account_id: e.account_id,
            database_id: id,
            status: 'attached',
            reason: null,
          });
        }
        // What the node no longer lists is detached: the row is deleted, its history kept.
        for (const r of mine.rows) {
          if (kept.has(`${r.account_id}/${r.name}`)) continue;
          await tx.query(
            `UPDATE databases SET status = 'deleted', deleted_at = now(), updated_at = now() WHERE id = $1`,
            [r.id],
          );
          await event(tx, nodeId, 'database.detached', r, {});
          await notify(tx, DATABASE_STATUS_CHANNEL, r.id);
        }
        return out;
      });
      log.info(
        {
          node_id: nodeId,
          attached: answer.filter((a) => a.status === 'attached').length,
          refused: answer
            .filter((a) => a.status === 'refused')
            .map((a) => ({ name: a.name, reason: a.reason })),
        },
        'attached databases reported',
      );
      return { databases: answer };
    },
  };
}

export type AttachedService = ReturnType<typeof createAttachedService>;
