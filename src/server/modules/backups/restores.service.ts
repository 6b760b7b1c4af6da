import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import {
  BACKUP_JOB_KINDS,
  type BackupManifest,
  type BackupRestorePayload,
} from '../../../shared/contracts/backups.ts';
import { DEFAULT_LIMITS } from '../../../shared/contracts/jobs.ts';
import { badRequest, conflict, forbidden, notFound, unavailable } from '../../../shared/errors.ts';
import { scramVerifier } from '../../../shared/scram.ts';
import type { ServerConfig } from '../../config.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import { type Caller, callerLogFields, requireAccountScope, requireLevel } from '../../http/caller.ts';
import { type PageCursor, toPage } from '../../http/pagination.ts';
import { type AuditService, auditFromCaller } from '../audit/audit.service.ts';
import { defaultAllowlist, toPayloadAllowlist } from '../databases/databases.allowlist.ts';
import { passwordContext } from '../databases/databases.credentials.ts';
import * as dbRepo from '../databases/databases.repo.ts';
import { checkDatabaseName } from '../databases/databases.service.ts';
import { enqueueJob } from '../jobs/jobs.repo.ts';
import { type CapacityConfig, reserveConnections, tenantConnections } from '../nodes/nodes.capacity.ts';
import { lockNodeState, refusal } from '../nodes/nodes.placement.ts';
import type { RequireStepUp } from '../sessions/step-up.ts';
import { BACKUP_MAX_ATTEMPTS, queueBackup } from './backups.records.ts';
import * as repo from './backups.repo.ts';
import type { BackupDefaults, BackupsService } from './backups.service.ts';
import * as settingsRepo from './backups.settings.repo.ts';
import * as restoresRepo from './restores.repo.ts';

export type RestoresConfig = Pick<ServerConfig, 'defaultAllowlist'> & CapacityConfig;

/** `<name>_restored_<6 hex>`, the name cut so the whole fits in 63 characters. */
export const defaultRestoreName = (name: string) =>
  `${name.slice(0, 63 - '_restored_'.length - 6)}_restored_${randomBytes(3).toString('hex')}`;

const isUniqueViolation = (err: unknown) => (err as { code?: unknown })?.code === '23505';

/** The manifest a restore is checked against (a completed backup's record). */
export function manifestOf(backup: repo.BackupRow): BackupManifest {
  if (backup.status !== 'completed' || !backup.sha256 || !backup.manifest)
    throw conflict(`Cannot restore a backup that is ${backup.status}`);
  return { sha256: backup.sha256, ...backup.manifest };
}

/** Queues the `backup.restore` job of a restore row (in place: once its safety backup completed). */
export async function queueRestoreJob(
  tx: Tx,
  restore: { id: string; account_id: string },
  backup: repo.BackupRow,
  payload: Omit<BackupRestorePayload, 'backup_id' | 'expected' | 'source'>,
): Promise<void> {
  // The archive names the source's roles by its physical name (a database made from a spare keeps
  // the spare's, ADR 0034): the restore maps those, not the label's.
  const physical = await tx.query<{ name: string }>(
    'SELECT coalesce(pg_name, name) AS name FROM databases WHERE id = $1',
    [backup.database_id],
  );
  const full: BackupRestorePayload = {
    ...payload,
    backup_id: backup.id,
    source: { database_id: backup.database_id, name: physical.rows[0]?.name ?? backup.database_name },
    expected: manifestOf(backup),
  };
  const job = await enqueueJob(tx, {
    nodeId: backup.node_id,
    accountId: restore.account_id,
    kind: BACKUP_JOB_KINDS.restore,
    payload: full,
    maxAttempts: BACKUP_MAX_ATTEMPTS,
  });
  await restoresRepo.setRestoreJob(tx, restore.id, job.id);
}

/** Restores: into a new database (the default) or in place after a safety backup. */
export function createRestoresService(deps: {
  db: Db;
  box: SecretBox | null;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  config: RestoresConfig;
  defaults: BackupDefaults;
  backups: Pick<BackupsService, 'findDatabase'>;
  /** In place replaces the database's data: owners and admins (admin keys), re-authenticated. */
  stepUp?: RequireStepUp;
}) {
  const { db, log, config } = deps;

  const requireBox = (): SecretBox => {
    if (!deps.box) throw unavailable('Restores are unavailable: the server has no master key configured');
    return deps.box;
  };

  const audit = (tx: Tx, caller: Caller, action: string, id: string, details: Record<string, unknown>) =>
    deps.audit.record(tx, auditFromCaller(caller, { action, targetType: 'restore', targetId: id, details }));

  /**
   * The target of a restore into a new database: a database record like any other (sealed owner
   * password, the default allowlist and limits, its connections reserved), on the backup's node
   * (its file is there). The `backup.restore` job creates it on the node exactly as a create
   * would, then restores into it; the hook marks it ready (or failed).
   */
  async function newTarget(tx: Tx, caller: Caller, backup: repo.BackupRow, name: string, box: SecretBox) {
    const id = randomUUID();
    const password = randomBytes(32).toString('base64url');
    const allowlist = defaultAllowlist(config);
    const limits = { ...DEFAULT_LIMITS };
    if (await dbRepo.findByName(tx, caller.accountId, name))
      throw conflict(`Database "${name}" already exists`);
    // The backup's node (its archive is there), if placement would take a new database there:
    // active, uncordoned, healthy (checked under its row lock, as a create's placement).
    const node = await lockNodeState(tx, backup.node_id);
    const why = node ? refusal(node) : 'its node is gone';
    if (!node || why)
      throw unavailable(`The backup's node cannot take a new database now (${why}): restore later`);
    // Its name on the node is generated, as a create's (ADR 0039).
    const physical = dbRepo.generatedPhysicalName();
    await reserveConnections(tx, {
      nodeId: node.id,
      requested: tenantConnections(limits),
      committed: dbRepo.committedConnections,
      config,
      log,
      accountId: caller.accountId,
    });
    await dbRepo.insertDatabase(tx, {
      id,
      accountId: caller.accountId,
      nodeId: node.id,
      name,
      pgName: physical,
      passwordSealed: box.seal(password, passwordContext(id)),
      allowlist,
      limits,
    });
    await deps.audit.record(
      tx,
      auditFromCaller(caller, {
        action: 'database.created',
        targetType: 'database',
        targetId: id,
        details: { name, node: node.name, restored_from: backup.id },
      }),
    );
    return {
      id,
      create: {
        database_id: id,
        name,
        verifier: scramVerifier(password),
        allowlist: toPayloadAllowlist(allowlist),
        limits,
      },
    };
  }

  return {
    async restore(
      caller: Caller,
      name: string,
      body: { backup_id: string; target?: 'new' | 'in_place' | undefined; new_name?: string | undefined },
    ): Promise<restoresRepo.RestoreRow> {
      requireLevel(caller, 'write');
      const box = requireBox();
      const target = body.target ?? 'new';
      const input = { backup_id: body.backup_id, target, new_name: body.new_name };
      if (target === 'new') {
        // A new database in the account: as for a create, a database-scoped caller cannot.
        requireAccountScope(caller);
        input.new_name ??= defaultRestoreName(name);
        checkDatabaseName(input.new_name);
      } else {
        if (body.new_name !== undefined) throw badRequest('new_name is only for target "new"');
        // Replacing a database's data is destructive: what a DROP needs (ADR 0023).
        if (caller.kind === 'user') {
          if (caller.role !== 'owner' && caller.role !== 'admin')
            throw forbidden('An in-place restore needs an owner or admin of the account');
          if (!deps.stepUp) throw forbidden('Signed-in users cannot restore in place on this server');
          await deps.stepUp(
            { userId: caller.userId, sessionId: caller.sessionId },
            'restore a database in place',
          );
        } else requireLevel(caller, 'admin');
      }
      const restoreId = randomUUID();
      let sourceId = '';
      try {
        await withTx(db, async (tx) => {
          const source = await deps.backups.findDatabase(caller, name, tx);
          sourceId = source.id;
          const backup = await repo.findBackup(tx, caller.accountId, source.id, input.backup_id);
          if (!backup) throw notFound('Backup');
          manifestOf(backup);
          if (await restoresRepo.restoreInFlight(tx, source.id))
            throw conflict('A restore of this database is already in progress');
          if (input.target === 'new') {
            const target = await newTarget(tx, caller, backup, input.new_name!, box);
            await restoresRepo.insertRestore(tx, {
              id: restoreId,
              accountId: caller.accountId,
              backupId: backup.id,
              sourceDatabaseId: source.id,
              targetDatabaseId: target.id,
              target: 'new',
              safetyBackupId: null,
              scheduledFor: null,
            });
            await queueRestoreJob(tx, { id: restoreId, account_id: caller.accountId }, backup, {
              database_id: target.id,
              name: input.new_name!,
              mode: 'new',
              create: target.create,
            });
          } else {
            if (source.status !== 'ready')
              throw conflict(`Cannot restore in place while the database is ${source.status}`);
            if (backup.node_id !== source.node_id)
              throw conflict("The backup is not on the database's node: restore it into a new database");
            const settings = await settingsRepo.effectiveSettings(tx, source.id, deps.defaults);
            // The safety backup first; its completion queues the restore (backups.jobs.ts).
            const safetyId = (await queueBackup(tx, box, source, {
              trigger: 'safety',
              retentionDays: settings.retention_days,
            }))!;
            await restoresRepo.insertRestore(tx, {
              id: restoreId,
              accountId: caller.accountId,
              backupId: backup.id,
              sourceDatabaseId: source.id,
              targetDatabaseId: source.id,
              target: 'in_place',
              safetyBackupId: safetyId,
              scheduledFor: null,
            });
            await deps.audit.record(
              tx,
              auditFromCaller(caller, {
                action: 'backup.created',
                targetType: 'backup',
                targetId: safetyId,
                details: { database: source.name, trigger: 'safety', restore_id: restoreId },
              }),
            );
          }
          await audit(tx, caller, 'restore.started', restoreId, {
            database: source.name,
            backup_id: backup.id,
            target: input.target,
            ...(input.new_name ? { new_name: input.new_name } : {}),
          });
        });
      } catch (err) {
        if (isUniqueViolation(err))
          throw conflict(`The database name "${input.new_name}" is taken; choose another`);
        throw err;
      }
      log.info(
        { database: name, restore_id: restoreId, target: input.target, ...callerLogFields(caller) },
        'restore queued',
      );
      return (await restoresRepo.findRestore(db, caller.accountId, sourceId, restoreId))!;
    },

    async list(caller: Caller, name: string, opts: { after: PageCursor | null; limit: number }) {
      requireLevel(caller, 'read');
      const source = await deps.backups.findDatabase(caller, name);
      const rows = await restoresRepo.listRestores(db, caller.accountId, source.id, opts);
      return toPage(
        rows,
        opts.limit,
        (r) => ({ ts: Number(r.created_us), id: r.id }),
        (r) => r,
      );
    },

    async get(caller: Caller, name: string, id: string): Promise<restoresRepo.RestoreRow> {
      requireLevel(caller, 'read');
      const source = await deps.backups.findDatabase(caller, name);
      const row = await restoresRepo.findRestore(db, caller.accountId, source.id, id);
      if (!row) throw notFound('Restore');
      return row;
    },
  };
}

export type RestoresService = ReturnType<typeof createRestoresService>;
