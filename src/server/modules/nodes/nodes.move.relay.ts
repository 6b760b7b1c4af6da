/**
 * A move between nodes that share no backup store (ADR 0031, "nodes on different hosts"): the
 * target's `database.move_in` fetches the archive from this server, which asks the source's agent
 * to send it as stored (a `backup.download` job, the same single-use stream token and relay as a
 * download, ADR 0023) and forwards the bytes unchanged — still encrypted and authenticated under
 * the move's own data key, which this server never applies here. The target stores the archive in
 * its own store and restores it exactly as before; its authenticity check is what proves the
 * relayed bytes (a truncated or altered transfer is refused before anything is made).
 *
 * Only the agent holding the lease of a move's `move_in` (its target, at that attempt) while the
 * move is `restoring` can ask; the source node is the move's, never a caller's choice.
 */
import { PassThrough, Transform } from 'node:stream';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { BACKUP_JOB_KINDS } from '../../../shared/contracts/backups.ts';
import { MOVE_JOB_KINDS, moveInPayloadSchema } from '../../../shared/contracts/moves.ts';
import { AppError, conflict, notFound } from '../../../shared/errors.ts';
import type { Db } from '../../db/pool.ts';
import { requireAgent } from '../../http/auth.ts';
import { errorResponses } from '../../http/errors.ts';
import type { BackupDownloads } from '../backups/backups.download.ts';
import { findLeasedJob } from '../jobs/jobs.repo.ts';
import { findMove } from './nodes.move.repo.ts';

/** No byte moved for this long: the relay is cut (both agents' requests end). */
const RELAY_IDLE_MS = 60_000;

export function moveRelayRoutes(deps: {
  db: Db;
  downloads: Pick<BackupDownloads, 'sendFromNode'>;
  idleMs?: number;
}): FastifyPluginAsyncZod {
  const idleMs = deps.idleMs ?? RELAY_IDLE_MS;
  /** Moves whose archive is being relayed by this process: one transfer per move at a time. */
  const open = new Set<string>();
  return async (app) => {
    app.get(
      '/v1/agent/jobs/:id/move-archive',
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          security: [{ agentToken: [] }],
          summary: "A move's archive, relayed from its source node to the target holding move_in",
          description:
            'For the agent holding the lease of a `database.move_in` job while its move is `restoring`: the ' +
            "server asks the source's agent to send the archive as stored (a `backup.download` job) and streams " +
            'the bytes through unchanged (`application/octet-stream`, still encrypted under the move key). 404 ' +
            'without the lease, 503 when the source does not start sending within 30 s; a transfer idle for 60 s is cut.',
          params: z.object({ id: z.coerce.number().int().min(1).max(Number.MAX_SAFE_INTEGER) }),
          querystring: z.object({ attempt: z.coerce.number().int().min(1).max(1000) }),
          response: {
            200: {
              description: "The move's archive as stored (encrypted under the move key)",
              content: { 'application/octet-stream': { schema: z.string().max(2 ** 30) } },
            },
            ...errorResponses,
          },
        },
      },
      async (req, reply) => {
        const agent = requireAgent(req);
        const job = await findLeasedJob(deps.db, req.params.id, agent.nodeId, req.query.attempt);
        if (!job || job.kind !== MOVE_JOB_KINDS.in) throw notFound('Job lease');
        const p = moveInPayloadSchema.safeParse(job.payload);
        if (!p.success) throw notFound('Job lease');
        const move = await findMove(deps.db, p.data.move_id);
        if (
          !move ||
          move.target_node_id !== agent.nodeId ||
          move.database_id !== p.data.database_id ||
          move.status !== 'restoring'
        )
          throw notFound('Move');
        // One transfer per move: the move_in holder cannot have the source read and send its
        // archive many times at once (here, or through another replica: a transfer job in flight).
        const inFlight = await deps.db.query(
          `SELECT 1 FROM jobs WHERE kind = $1 AND payload->>'backup_id' = $2
              AND status IN ('queued', 'running') LIMIT 1`,
          [BACKUP_JOB_KINDS.download, move.id],
        );
        if (open.has(move.id) || (inFlight.rowCount ?? 0) > 0)
          throw conflict('The archive of this move is already being sent; wait for that transfer to end');
        // What the source recorded when it dumped: the relay forwards no more than that.
        const limit = move.size_bytes === null ? null : Number(move.size_bytes);
        open.add(move.id);
        reply.raw.once('close', () => open.delete(move.id));
        // The target's request going away ends the wait (and the transfer).
        const gone = new AbortController();
        reply.raw.once('close', () => {
          if (!reply.raw.writableFinished) gone.abort();
        });
        const { incoming } = await deps.downloads.sendFromNode(
          {
            nodeId: move.source_node_id,
            accountId: move.account_id,
            backupId: move.id,
            databaseId: move.database_id,
          },
          gone.signal,
        );
        req.log.info({ move_id: move.id, source: move.source_node }, 'move archive relay started');
        let bytes = 0;
        let settled = false;
        let idle: NodeJS.Timeout | undefined;
        const out = new PassThrough();
        const end = (err: Error | null) => {
          if (settled) return;
          settled = true;
          clearTimeout(idle);
          incoming.finish(err, bytes);
          if (err) {
            incoming.source.destroy();
            out.destroy(err);
          }
          req.log.info({ move_id: move.id, bytes, err: err?.message }, 'move archive relay ended');
        };
        const touch = () => {
          clearTimeout(idle);
          idle = setTimeout(
            () => end(new AppError('unavailable', `no byte moved for ${idleMs / 1000} s`)),
            idleMs,
          );
        };
        touch();
        const counter = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            bytes += chunk.length;
            if (limit !== null && bytes > limit) {
              cb(new AppError('conflict', `the source sent more than the ${limit} bytes it recorded`));
              return;
            }
            touch();
            cb(null, chunk);
          },
        });
        incoming.source.once('error', (err) => end(err));
        counter.once('error', (err) => end(err));
        incoming.source.pipe(counter).pipe(out);
        // Whole only when the target read every byte; a target that left is a failed relay.
        out.once('end', () => end(null));
        reply.raw.once('close', () => {
          if (!reply.raw.writableFinished) end(new AppError('cancelled', 'the target went away'));
        });
        reply.header('content-type', 'application/octet-stream');
        reply.header('cache-control', 'no-store');
        return reply.send(out as unknown as string);
      },
    );
  };
}
