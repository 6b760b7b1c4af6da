/**
 * `Idempotency-Key` on POSTs that create things. The first request with a key runs and its
 * response (status + body) is recorded for 24 h per account; a retry with the same key and
 * the same request gets that response again (header `Idempotent-Replayed: true`) instead of
 * creating a second object. The same key with a different request is a 409; a retry while
 * the first is still running is a 409 too.
 *
 * Secrets are never recorded: pass `stored` to strip them (the API key of `POST /v1/keys`
 * is shown on the first response only; a replay carries its id and metadata).
 *
 *   return withIdempotency(req, reply, () => service.create(...), { status: 201, stored: (b) => ... });
 */
import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { badRequest, conflict } from '../../shared/errors.ts';
import type { Db } from '../db/pool.ts';
import { callerActor } from './caller.ts';
import * as repo from './idempotency.repo.ts';

export const IDEMPOTENCY_TTL_MS = 24 * 3_600_000;
/** An in-progress record older than this is taken as abandoned: longer than the longest wait a request may make (`POST /v1/databases` `wait_ms`, 60 s). */
const STALE_MS = 120_000;
const KEY_PATTERN = /^[\x21-\x7e]{1,255}$/;

export type WithIdempotency = <T>(
  req: FastifyRequest,
  reply: FastifyReply,
  fn: () => Promise<T>,
  opts?: { status?: number; stored?: (body: T) => unknown },
) => Promise<T>;

export function createIdempotency(deps: { db: Db; ttlMs?: number }): WithIdempotency {
  const ttlMs = deps.ttlMs ?? IDEMPOTENCY_TTL_MS;
  // Expired records are swept opportunistically (at most every 10 minutes, off the request path).
  let lastSweep = Date.now();
  const maybeSweep = () => {
    if (Date.now() - lastSweep < 600_000) return;
    lastSweep = Date.now();
    void repo.deleteExpiredIdempotencyKeys(deps.db).catch(() => {});
  };
  return async function withIdempotency(req, reply, fn, opts = {}) {
    const status = opts.status ?? 200;
    const header = req.headers['idempotency-key'];
    const caller = req.caller;
    if (header === undefined || !caller) {
      const body = await fn();
      reply.status(status);
      return body;
    }
    if (typeof header !== 'string' || !KEY_PATTERN.test(header)) {
      throw badRequest('Idempotency-Key must be 1–255 printable ASCII characters');
    }
    const requestHash = createHash('sha256')
      .update(
        JSON.stringify([
          req.method,
          req.routeOptions.url,
          req.params ?? null,
          req.body ?? null,
          callerActor(caller).id,
        ]),
      )
      .digest();
    maybeSweep();
    const ref = { accountId: caller.accountId, key: header };
    const existing = await repo.claimIdempotencyKey(deps.db, {
      ...ref,
      requestHash,
      ttlMs,
      staleMs: STALE_MS,
    });
    if (existing) {
      if (!existing.request_hash.equals(requestHash)) {
        throw conflict('This Idempotency-Key was used for a different request');
      }
      if (existing.response_status === null) {
        throw conflict('A request with this Idempotency-Key is still in progress');
      }
      reply.header('idempotent-replayed', 'true');
      reply.status(existing.response_status);
      return existing.response_body as never;
    }
    let body: Awaited<ReturnType<typeof fn>>;
    try {
      body = await fn();
    } catch (err) {
      await repo.releaseIdempotencyKey(deps.db, ref).catch(() => {});
      throw err;
    }
    const stored = opts.stored ? opts.stored(body) : body;
    await repo.completeIdempotencyKey(deps.db, { ...ref, status, body: stored });
    reply.status(status);
    return body;
  };
}
