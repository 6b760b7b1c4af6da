/**
 * The explorer's job contract between the server (which enqueues) and the agent (which runs),
 * as zod schemas both sides import (issue 6).
 *
 *   explorer.query   payload `queryPayloadSchema`  → rows posted to
 *                    POST /v1/agent/jobs/:id/explorer-result  body `explorerResultBodySchema`
 *   explorer.schema  payload `schemaPayloadSchema` → tables/columns posted the same way
 *
 * Rows never travel in a job row: the agent posts them to the dedicated endpoint, which hands
 * them to the waiting API request through an UNLOGGED table (deleted on read, swept after 60 s).
 * The server completes the job when it receives the result; the job's own result keeps metadata
 * only (`queryJobResultSchema`), and the agent does not call `complete` for these kinds. While a query runs the
 * agent asks `POST /v1/agent/jobs/:id/status` whether its lease still stands; when the API
 * client went away the server ends the job and the agent cancels the backend.
 */
import { z } from 'zod';
// execution.ts imports this file (its outcome carries query output): lazy references back, so
// either file may be loaded first.
import { executePayloadSchema, executionOutcomeSchema } from './execution.ts';
import { databaseNameSchema } from './jobs.ts';

export const EXPLORER_JOB_KINDS = { query: 'explorer.query', schema: 'explorer.schema' } as const;

export const EXPLORER_LIMITS = {
  defaultRows: 1_000,
  maxRows: 10_000,
  defaultBytes: 10 * 1024 * 1024,
  maxBytes: 10 * 1024 * 1024,
  defaultStatementTimeoutMs: 5_000,
  maxStatementTimeoutMs: 30_000,
  maxSqlLength: 20_000,
  /** Schema endpoint: at most this many columns are listed. */
  maxSchemaColumns: 20_000,
} as const;

/** Every explorer connection of the database is in use: the server answers 503 (retry). */
export const BUSY = {
  sqlstate: '53300',
  message: "the database's explorer connections are all in use; retry shortly",
} as const;

const ident = { database_id: z.uuid(), name: databaseNameSchema };

export const queryPayloadSchema = z.object({
  ...ident,
  /** The SQL to run; removed from the job row (replaced by `sql_redacted`) when the job finishes. */
  sql: z.string().min(1).max(EXPLORER_LIMITS.maxSqlLength),
  sql_redacted: z.string().max(EXPLORER_LIMITS.maxSqlLength * 2),
  row_limit: z.number().int().min(1).max(EXPLORER_LIMITS.maxRows),
  byte_limit: z.number().int().min(1024).max(EXPLORER_LIMITS.maxBytes),
  statement_timeout_ms: z.number().int().min(100).max(EXPLORER_LIMITS.maxStatementTimeoutMs),
});
export type QueryPayload = z.infer<typeof queryPayloadSchema>;

export const schemaPayloadSchema = z.object(ident);

const columnSchema = z.object({ name: z.string().max(128), type: z.string().max(256) });

/** A cell: text (the PostgreSQL text form), a boolean, a safe number, or null. */
const cellSchema = z.union([z.string().max(EXPLORER_LIMITS.maxBytes), z.number(), z.boolean(), z.null()]);

export const queryOutputSchema = z.object({
  columns: z.array(columnSchema).max(1_664),
  rows: z.array(z.array(cellSchema).max(1_664)).max(EXPLORER_LIMITS.maxRows),
  row_count: z.number().int().min(0),
  truncated: z.boolean(),
  /** Why the result was cut: the row cap or the byte cap. */
  truncated_by: z.enum(['rows', 'bytes']).nullable(),
  duration_ms: z.number().min(0),
});
export type QueryOutput = z.infer<typeof queryOutputSchema>;

/** A PostgreSQL error: its SQLSTATE, message and (0-based) position in the submitted SQL. */
const queryErrorSchema = z.object({
  sqlstate: z.string().regex(/^[0-9A-Z]{5}$/),
  message: z.string().max(2_000),
  position: z.number().int().min(0).nullable(),
  /** Set when the agent refused the SQL itself (it re-validates everything it runs). */
  refused: z.boolean().optional(),
  /** Set when the node failed, not the query (an unreadable request, an internal error): a 503. */
  internal: z.boolean().optional(),
});

export const schemaOutputSchema = z.object({
  tables: z
    .array(
      z.object({
        name: z.string().max(128),
        kind: z.enum(['table', 'view', 'materialized_view', 'foreign_table', 'partitioned_table']),
        columns: z
          .array(z.object({ name: z.string().max(128), type: z.string().max(256), nullable: z.boolean() }))
          .max(EXPLORER_LIMITS.maxSchemaColumns),
      }),
    )
    .max(EXPLORER_LIMITS.maxSchemaColumns),
  truncated: z.boolean(),
});
export type SchemaOutput = z.infer<typeof schemaOutputSchema>;

export const explorerResultBodySchema = z.object({
  attempt: z.number().int().min(1).max(1000),
  outcome: z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('rows'), output: queryOutputSchema }),
    z.object({ kind: z.literal('error'), error: queryErrorSchema, duration_ms: z.number().min(0) }),
    z.object({ kind: z.literal('schema'), output: schemaOutputSchema }),
  ]),
});

export type ExplorerOutcome = z.infer<typeof explorerResultBodySchema>['outcome'];

/**
 * The explorer channel (ADR 0009): one WebSocket the agent opens OUTBOUND to
 * `GET /v1/agent/explorer/channel`, authenticated with its agent token. The server sends
 * requests and cancels; the agent answers each request id once. Nothing here is stored.
 */
export const EXPLORER_CHANNEL_PATH = '/v1/agent/explorer/channel';

/**
 * The frame contract's version, sent by the agent at the upgrade (`x-bulwark-channel-version`).
 * The server refuses another version (426), so a mismatched pair falls back to the job queue
 * instead of dropping each other's frames.
 */
export const CHANNEL_PROTOCOL_VERSION = '2';
export const CHANNEL_VERSION_HEADER = 'x-bulwark-channel-version';

/** Close codes (4000–4999 are the application's). */
export const CHANNEL_CLOSE = {
  /** The token no longer opens an active node: the agent stops reopening the channel. */
  tokenRevoked: 4001,
  /** A frame broke the contract. */
  protocol: 4002,
  /** A newer channel of the same node replaced this one. */
  replaced: 4003,
} as const;

/**
 * What the server may send: a query, a schema read, a governed execution (version 2: contracts/
 * execution.ts), or the cancel of a request still running.
 */
export const channelServerMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('query'), id: z.uuid(), payload: queryPayloadSchema }).strict(),
  z
    .object({ type: z.literal('execute'), id: z.uuid(), payload: z.lazy(() => executePayloadSchema) })
    .strict(),
  z.object({ type: z.literal('schema'), id: z.uuid(), payload: schemaPayloadSchema }).strict(),
  z.object({ type: z.literal('cancel'), id: z.uuid() }).strict(),
]);
export type ChannelServerMessage = z.infer<typeof channelServerMessageSchema>;

/** What the agent may send: the outcome of one request (an explorer request, or an execution). */
export const channelAgentMessageSchema = z.discriminatedUnion('type', [
  z
    .object({ type: z.literal('result'), id: z.uuid(), outcome: explorerResultBodySchema.shape.outcome })
    .strict(),
  z
    .object({ type: z.literal('execution'), id: z.uuid(), outcome: z.lazy(() => executionOutcomeSchema) })
    .strict(),
]);
export type ChannelAgentMessage = z.infer<typeof channelAgentMessageSchema>;

/** The largest result the server accepts (HTTP body or channel frame): rows up to the byte cap, JSON-escaped (~6x), plus framing. */
export const EXPLORER_RESULT_MAX_BYTES = EXPLORER_LIMITS.maxBytes * 6 + 1024 * 1024;
/** Requests carry at most 200k characters of SQL (an execution; up to 4 bytes each, escaped) plus fields. */
export const CHANNEL_MAX_REQUEST_BYTES = 2 * 1024 * 1024;

/** What the job row keeps: metadata, never rows. */
const queryJobResultSchema = z.object({
  outcome: z.enum(['rows', 'error', 'schema']),
  row_count: z.number().int().min(0),
  truncated: z.boolean(),
  duration_ms: z.number().min(0),
  sqlstate: z.string().nullable(),
});
type QueryJobResult = z.infer<typeof queryJobResultSchema>;

/** The job row's metadata for an outcome (computed by the server from what it received). */
export function jobResultOf(outcome: ExplorerOutcome): QueryJobResult {
  switch (outcome.kind) {
    case 'rows':
      return {
        outcome: 'rows',
        row_count: outcome.output.row_count,
        truncated: outcome.output.truncated,
        duration_ms: outcome.output.duration_ms,
        sqlstate: null,
      };
    case 'error':
      return {
        outcome: 'error',
        row_count: 0,
        truncated: false,
        duration_ms: outcome.duration_ms,
        sqlstate: outcome.error.sqlstate,
      };
    case 'schema':
      return {
        outcome: 'schema',
        row_count: outcome.output.tables.length,
        truncated: outcome.output.truncated,
        duration_ms: 0,
        sqlstate: null,
      };
  }
}
