/**
 * Reserved databases (issue 16, ADR 0037): a create with the default settings that finds one ready
 * on a node takes it in its own transaction, so no agent round trip is on its path.
 *
 * A reserve is an ordinary hosted database made by an ordinary `database.create` job (from the
 * node's warm pool when it has a spare), whose row has no account: every tenant query names an
 * account, so no tenant, key or session can list, reveal, change or guess one, and its jobs and
 * audit events belong to no account either. Its owner's password exists only sealed in its row,
 * as for any database; it is first opened for the account that takes it.
 *
 * Taking one (`takeReserve`, in the create's transaction): the oldest ready reserve with exactly
 * the create's allowlist and limits on an eligible node (any label: its name on the node is its
 * own, ADR 0038), locked with SKIP
 * LOCKED (two creates never take the same one; a create that finds none makes one as before), then
 * the node's placement lock and checks (never onto a node cordoned or decommissioned meanwhile),
 * then the row gets the account and the label. The physical name, the node's PgBouncer entry, the
 * steward's password (derived from the id) and the sealed password stay as they are: nothing on
 * the node changes.
 *
 * The keeper tops each node up to its target (`reservedDatabases`, at most the node's warm pool
 * size as its agent reports it) after each take and every `intervalMs`, one transaction per
 * reserve under the node's lock (replicas never over-fill), only while the node's connection
 * budget has room for the reserve and one more database (a reserve never takes the last room a
 * tenant's create with other settings would need; failed reserves count until they are gone, so
 * a node whose creates fail gets at most its target per minute); and gives back (deletes) failed reserves and those of nodes that may
 * no longer hold them (cordoned, disabled, warm pool off), beyond the target, or made with default
 * settings that changed since.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { DEFAULT_LIMITS, JOB_KINDS } from '../../../shared/contracts/jobs.ts';
import { scramVerifierAsync } from '../../../shared/scram.ts';
import type { ServerConfig } from '../../config.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { enqueueJob } from '../jobs/jobs.repo.ts';
import { roomFor, tenantConnections } from '../nodes/nodes.capacity.ts';
import { lockNodeState, refusal } from '../nodes/nodes.placement.ts';
import { defaultAllowlist } from './databases.allowlist.ts';
import { passwordContext } from './databases.credentials.ts';
import { queueCreate } from './databases.jobs.ts';
import * as repo from './databases.repo.ts';
import * as reserves from './databases.reserves.repo.ts';

/**
 * Takes a ready reserve for a create (see above), in the create's transaction: its id and node, or
 * null (none fits: the create makes its database as before).
 */
export async function takeReserve(
  tx: Tx,
  input: {
    accountId: string;
    label: string;
    nodeRef: string | null;
    allowlist: repo.StoredAllowlistEntry[];
    limits: repo.StoredLimits;
  },
): Promise<{ id: string; node_id: string; node_name: string } | null> {
  const picked = await reserves.lockReserveFor(tx, input);
  if (!picked) return null;
  // The placement lock and checks, as for any create (a cordon or decommission committed meanwhile).
  const node = await lockNodeState(tx, picked.node_id);
  if (!node || refusal(node)) return null;
  if (!(await reserves.handOver(tx, picked.id, { accountId: input.accountId, label: input.label })))
    return null;
  return { id: picked.id, node_id: node.id, node_name: node.name };
}

export type ReserveKeeper = {
  /** Starts the periodic passes (the first one at once). */
  start(): void;
  /** Tops up and gives back soon (debounced): after a take. */
  kick(): void;
  /** One pass now (tests): how many reserves it started and gave back. */
  runOnce(): Promise<{ made: number; retired: number }>;
  stop(): Promise<void>;
};

const KICK_DELAY_MS = 250;

export function createReserveKeeper(deps: {
  db: Db;
  box: SecretBox | null;
  config: ServerConfig;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  intervalMs?: number;
}): ReserveKeeper {
  const { db, config, log } = deps;
  const target = config.reservedDatabases;
  let stopped = false;
  let running: Promise<unknown> = Promise.resolve();
  let kickTimer: NodeJS.Timeout | null = null;

  /** One reserve on the node, or false when it may not have one now (refused, full, enough). */
  const makeOne = async (box: SecretBox, nodeId: string): Promise<boolean> => {
    const id = randomUUID();
    const password = randomBytes(32).toString('base64url');
    const verifier = await scramVerifierAsync(password);
    const label = `rsv_${randomBytes(10).toString('hex')}`;
    const allowlist = defaultAllowlist(config);
    const limits = { ...DEFAULT_LIMITS };
    return withTx(db, async (tx) => {
      const node = await lockNodeState(tx, nodeId);
      if (!node || refusal(node)) return false;
      // Counted again under the node's lock: replicas never make more than the target.
      if ((await reserves.reserveShortfall(tx, target, nodeId)).length === 0) return false;
      // Room for this reserve and one more database: reserves never take a node's last room. A
      // full node is no refusal to log (the keeper looks again every pass).
      const room = await roomFor(tx, {
        nodeId,
        requested: 2 * tenantConnections(limits),
        committed: repo.committedConnections,
        config,
      });
      if (!room?.fits) return false;
      await queueCreate(tx, {
        id,
        accountId: null,
        nodeId,
        label,
        passwordSealed: box.seal(password, passwordContext(id)),
        verifier,
        allowlist,
        limits,
      });
      await deps.audit.record(tx, {
        action: 'database.reserve_created',
        actorType: 'system',
        accountId: null,
        targetType: 'database',
        targetId: id,
        details: { name: label, node: node.name },
      });
      return true;
    });
  };

  const retire = async (): Promise<number> =>
    withTx(db, async (tx) => {
      const rows = await reserves.lockRetirable(tx, target, 50, {
        allowlist: defaultAllowlist(config),
        limits: { ...DEFAULT_LIMITS },
      });
      for (const row of rows) {
        await repo.markDeleting(tx, row.id);
        await enqueueJob(tx, {
          nodeId: row.node_id,
          accountId: null,
          kind: JOB_KINDS.delete,
          payload: { database_id: row.id, name: row.name },
        });
        await deps.audit.record(tx, {
          action: 'database.reserve_retired',
          actorType: 'system',
          accountId: null,
          targetType: 'database',
          targetId: row.id,
          details: { name: row.name },
        });
      }
      return rows.length;
    });

  const pass = async (): Promise<{ made: number; retired: number }> => {
    const retired = await retire();
    let made = 0;
    const box = deps.box;
    if (box && target > 0) {
      for (const short of await reserves.reserveShortfall(db, target)) {
        for (let i = 0; i < short.missing && !stopped; i++) {
          if (!(await makeOne(box, short.node_id))) break;
          made++;
        }
      }
    }
    if (made || retired) log.info({ made, retired }, 'reserved databases topped up');
    return { made, retired };
  };

  const run = (): Promise<{ made: number; retired: number }> => {
    const next = running.then(() => (stopped ? { made: 0, retired: 0 } : pass()));
    running = next.catch((err: Error) => {
      log.warn({ err: { message: err.message } }, 'reserved databases: a pass failed; will retry');
    });
    return next;
  };

  let interval: NodeJS.Timeout | null = null;

  return {
    start() {
      if (interval || stopped) return;
      // Also with the setting at 0: reserves made before it was turned off are given back.
      interval = setInterval(() => void run().catch(() => {}), deps.intervalMs ?? 10_000);
      interval.unref();
      void run().catch(() => {});
    },
    kick() {
      if (stopped || target <= 0 || kickTimer) return;
      kickTimer = setTimeout(() => {
        kickTimer = null;
        void run().catch(() => {});
      }, KICK_DELAY_MS);
      kickTimer.unref();
    },
    runOnce: run,
    async stop() {
      stopped = true;
      if (interval) clearInterval(interval);
      if (kickTimer) clearTimeout(kickTimer);
      await running;
    },
  };
}
