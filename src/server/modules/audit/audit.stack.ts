import type { Logger } from 'pino';
import type { ServerConfig } from '../../config.ts';
import type { Db } from '../../db/pool.ts';
import { type AuditChainer, createAuditChainer } from './audit.chainer.ts';
import { createCheckpointer } from './audit.checkpoints.ts';
import type { AuditService } from './audit.service.ts';
import { type AuditAdminService, createAuditAdminService } from './audit-admin.service.ts';

export type AuditStack = { admin: AuditAdminService; chainer: AuditChainer; close(): Promise<void> };

/** The audit log's moving parts for one server process (built in main.ts). */
export function createAuditStack(deps: {
  config: Pick<
    ServerConfig,
    | 'databaseUrl'
    | 'dataDir'
    | 'auditCheckpointFile'
    | 'auditCheckpointIntervalSeconds'
    | 'auditRetentionDays'
  >;
  db: Db;
  log: Logger;
  /** The process's audit writer (its writes wake the chainer; on-demand checkpoints are recorded with it). */
  audit: AuditService;
}): AuditStack {
  const { config, db, log, audit } = deps;
  const checkpointer = createCheckpointer({
    db,
    log,
    dataDir: config.dataDir,
    checkpointFile: config.auditCheckpointFile,
  });
  const chainer = createAuditChainer({
    databaseUrl: config.databaseUrl,
    db,
    log,
    audit,
    checkpointer,
    checkpointIntervalMs: config.auditCheckpointIntervalSeconds * 1000,
    retentionDays: config.auditRetentionDays,
  });
  const admin = createAuditAdminService({ db, log, audit, chainer, checkpointer });
  return { admin, chainer, close: () => chainer.close() };
}
