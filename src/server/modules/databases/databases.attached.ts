/**
 * Attached databases, the server's side (issue 17, ADR 0031): an agent reports the whole list its
 * own config file attaches, with its role checks; each becomes (or stays) a `databases` row of kind
 * `attached` on that agent's node — `ready` when the checks passed, `failed` with the findings
 * otherwise — so that the explorer, governed execution and the audit find it by name like a hosted
 * database. An attached database the node no longer lists is detached (deleted). The report holds
 * no secret: Bulwark never has an attached database's credentials.
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
import { notify } from '../../db/notify.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { DATABASE_STATUS_CHANNEL } from './databases.jobs.ts';

type Row = { id: string; account_id: string; name: string; status: string; attached: unknown };

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
    /** Applies one node's report as a whole; answers per entry. */
    async report(nodeId: string, report: AttachedReport): Promise<AttachedReportAnswer> {
      const answer = await withTx(db, async (tx) => {
        // The node's attached rows, locked: two reports of one node apply one after the other.
        const mine = await tx.query<Row>(
          `SELECT id, account_id, name, status, attached FROM databases
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
            checked_at: new Date().toISOString(),
            server_version: e.server_version,
            findings: e.findings,
          };
          const status = e.ok ? 'ready' : 'failed';
          const reason = failureReason(e);
          const existing = byKey.get(key);
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
          // The name is a label unique in the account and on the node (databases_*_name_key).
          const taken = await tx.query(
            `SELECT 1 FROM databases WHERE deleted_at IS NULL
                AND name = $3 AND (account_id = $1 OR node_id = $2) LIMIT 1`,
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
             VALUES ($1, $2, $3, $4, $5, $6, 'attached', $7, '{}'::jsonb,
                     CASE WHEN $5 = 'ready' THEN now() END)`,
            [id, e.account_id, nodeId, e.name, status, reason, JSON.stringify(state)],
          );
          kept.add(key);
          const row = { id, account_id: e.account_id, name: e.name };
          await event(tx, nodeId, 'database.attached', row, { status, reason }, e.ok);
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
