/**
 * Attached databases between agent and server (issue 17, ADR 0031): the agent reports the whole
 * list of databases its own config file attaches, with the result of its role checks; the server
 * answers which ones it registered (a `databases` row of kind `attached` on the agent's node, an id
 * for the explorer and governed execution) and which it refused (a name taken in the account, an
 * unknown account). An attached database this node reported before and no longer lists is
 * detached. Nothing in either message is a secret: no host credentials, no password file path.
 */
import { z } from 'zod';
import { NAME_PATTERN } from '../identifiers.ts';

export const ATTACHED_REPORT_PATH = '/v1/agent/attached';

/** At most this many entries per report (the config file's own bound). */
export const MAX_ATTACHED = 100;

export const attachedFindingSchema = z.object({
  role: z.enum(['reader', 'migrator']),
  severity: z.enum(['refuse', 'warn']),
  kind: z.string().min(1).max(64),
  object: z.string().max(200),
  detail: z.string().max(1000),
});
export type AttachedFindingReport = z.infer<typeof attachedFindingSchema>;

export const attachedReportEntrySchema = z.object({
  /** The name Bulwark shows, unique among the account's live databases. */
  name: z.string().min(1).max(63).regex(NAME_PATTERN),
  account_id: z.uuid(),
  /** The role checks passed (attached-check.ts); false: shown as `failed`, never queried. */
  ok: z.boolean(),
  /** The PostgreSQL server's version as the reader saw it (null: no login). */
  server_version: z.string().max(256).nullable(),
  findings: z.array(attachedFindingSchema).max(200),
});
export type AttachedReportEntry = z.infer<typeof attachedReportEntrySchema>;

export const attachedReportSchema = z.object({
  databases: z.array(attachedReportEntrySchema).max(MAX_ATTACHED),
});
export type AttachedReport = z.infer<typeof attachedReportSchema>;

export const attachedReportAnswerSchema = z.object({
  databases: z
    .array(
      z.object({
        name: z.string().max(63),
        account_id: z.uuid(),
        /** Registered: its database id (explorer and execution payloads name it); refused: null. */
        database_id: z.uuid().nullable(),
        status: z.enum(['attached', 'refused']),
        /** Why it was refused (null when attached). */
        reason: z.string().max(500).nullable(),
      }),
    )
    .max(MAX_ATTACHED),
});
export type AttachedReportAnswer = z.infer<typeof attachedReportAnswerSchema>;
