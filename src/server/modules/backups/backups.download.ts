/**
 * Backup downloads (ADR 0023). `POST …/backups/:id/download-link` signs a link valid 10 minutes
 * for that one backup, that account and that caller; the GET of the link (the same caller,
 * authenticated as on any route) streams the plain `pg_dump -Fc` archive: the backup's agent
 * sends the archive as stored (encrypted) through a single-use stream (`backups.relay.ts`), and
 * this process decrypts and decompresses it on the fly. The server never reads the agent's files.
 *
 * The signature is HMAC-SHA256 under an install secret (`backup-download-key`, shared by the
 * replicas, sealed by the master keyring) over the version, backup id, account id, caller and
 * expiry; it is compared in constant time. The agent opens `<backup dir>/<storage key>` built
 * from the two uuids of the job's payload; nothing the client sends reaches a path.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { PassThrough, type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createZstdDecompress } from 'node:zlib';
import type { Logger } from 'pino';
import { ArchiveError, createArchiveDecryptor } from '../../../shared/backup-archive.ts';
import { BACKUP_JOB_KINDS, backupKeyContext } from '../../../shared/contracts/backups.ts';
import { AppError, conflict, forbidden, unavailable } from '../../../shared/errors.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import type { Db, Tx } from '../../db/pool.ts';
import { type Caller, callerActor } from '../../http/caller.ts';
import { enqueueJob, type JobRow } from '../jobs/jobs.repo.ts';
import type { RequireStepUp } from '../sessions/step-up.ts';
import type { DownloadRelay, Incoming } from './backups.relay.ts';
import * as repo from './backups.repo.ts';

export const DOWNLOAD_LINK_TTL_S = 600;
const VERSION = 'v1';

export type LinkClaims = { backupId: string; accountId: string; caller: string; expires: number };

/** Who a link is for: the key or the user (never their session: a refreshed sign-in keeps its links). */
export const callerTag = (c: Caller): string => {
  const a = callerActor(c);
  return `${a.type}:${a.id}`;
};

function mac(key: Buffer, c: LinkClaims): Buffer {
  return createHmac('sha256', key)
    .update(`bulwark-backup-download:${VERSION}\n${c.backupId}\n${c.accountId}\n${c.caller}\n${c.expires}`)
    .digest();
}

/** The signature (base64url) of a link's claims. */
export function signLink(key: Buffer, c: LinkClaims): string {
  return `${VERSION}.${mac(key, c).toString('base64url')}`;
}

/**
 * True when `sig` is the signature of these claims and they have not expired. The presented
 * signature is decoded to exactly 32 bytes (anything else fails) and compared in constant time.
 */
export function verifyLink(
  key: Buffer,
  c: LinkClaims,
  sig: string,
  nowS = Math.floor(Date.now() / 1000),
): boolean {
  if (!Number.isSafeInteger(c.expires) || c.expires < nowS || c.expires > nowS + DOWNLOAD_LINK_TTL_S)
    return false;
  const [v, body, extra] = sig.split('.');
  if (v !== VERSION || body === undefined || extra !== undefined || !/^[A-Za-z0-9_-]{43}$/.test(body))
    return false;
  const given = Buffer.from(body, 'base64url');
  if (given.length !== 32) return false;
  return timingSafeEqual(given, mac(key, c));
}

/** Fails a stream that carries more than `max` bytes (the archive's recorded size). */
function byteLimit(max: number, counted: { bytes: number }): Transform {
  return new Transform({
    transform(chunk: Buffer, _e, cb) {
      counted.bytes += chunk.length;
      if (counted.bytes > max) cb(new Error('the agent sent more than the archive holds'));
      else cb(null, chunk);
    },
  });
}

/** How long a transfer may go without a byte from its agent, and how long it may last in all (ms). */
export type DownloadDeadlines = { idleMs?: number; maxMs?: number };

export const DOWNLOAD_IDLE_MS = 30_000;
export const DOWNLOAD_MAX_MS = 30 * 60_000;

/**
 * Cuts a transfer that stalls (no byte from the agent for `idleMs`: a client that stopped reading
 * holds every buffer full, so the agent can send nothing) or lasts longer than `maxMs` in all: the
 * download's output is destroyed with the reason, which fails the pipeline, so the client's
 * connection is destroyed and the agent's upload answered 409 (`ended`). Returns the function that stops watching.
 */
function watchTransfer(
  out: Readable,
  counted: { bytes: number; plain: number },
  d: DownloadDeadlines,
): () => void {
  const idleMs = d.idleMs ?? DOWNLOAD_IDLE_MS;
  const maxMs = d.maxMs ?? DOWNLOAD_MAX_MS;
  const started = Date.now();
  let seen = -1;
  let movedAt = started;
  // The last stream of the pipeline: destroying it fails the whole pipeline, whatever stage it is
  // stuck at (the agent may have sent everything already, into buffers nobody drains).
  const cut = (why: string) => out.destroy(new Error(why));
  const tick = setInterval(
    () => {
      const now = Date.now();
      const moved = counted.bytes + counted.plain;
      if (moved !== seen) {
        seen = moved;
        movedAt = now;
      }
      if (now - started >= maxMs)
        cut(`the download lasted longer than ${Math.round(maxMs / 1000)} s and was cut`);
      else if (now - movedAt >= idleMs)
        cut(
          `no byte moved for ${Math.round(idleMs / 1000)} s (the client stopped reading); the download was cut`,
        );
    },
    Math.max(50, Math.min(1_000, Math.floor(idleMs / 4))),
  );
  tick.unref();
  return () => clearInterval(tick);
}

/**
 * The plain archive from the archive's bytes as stored: authenticated decryption (each chunk
 * emitted only after its tag verified, the final marker required) → zstd → out. Resolves once
 * the first plain byte is ready (so a damaged archive's first chunk is still a clean error
 * answer), and calls `ended` once when the whole pipeline ended (`null`: whole and authentic).
 */
export async function openPlainArchive(
  source: Readable,
  dataKey: Buffer,
  ids: { backupId: string; databaseId: string },
  sizeBytes: number,
  log: Logger,
  ended: (err: Error | null, bytes: number) => void = () => {},
  deadlines: DownloadDeadlines = {},
): Promise<Readable> {
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  const counted = { bytes: 0, plain: 0 };
  const stopWatch = watchTransfer(out, counted, deadlines);
  let first!: () => void;
  let firstFailed!: (e: Error) => void;
  const firstByte = new Promise<void>((res, rej) => {
    first = res;
    firstFailed = rej;
  });
  let seen = false;
  const gate = new Transform({
    transform(chunk: Buffer, _e, cb) {
      if (!seen) {
        seen = true;
        first();
      }
      counted.plain += chunk.length;
      cb(null, chunk);
    },
  });
  pipeline(
    source,
    byteLimit(sizeBytes, counted),
    createArchiveDecryptor(dataKey, ids),
    createZstdDecompress({ chunkSize: 1024 * 1024 }),
    gate,
    out,
  ).then(
    () => {
      stopWatch();
      // Whole and authentic (the final chunk verified); a size unlike the record is only odd.
      if (counted.bytes !== sizeBytes)
        log.warn(
          { backup_id: ids.backupId, bytes: counted.bytes, recorded: sizeBytes },
          'archive size differs',
        );
      ended(null, counted.bytes);
    },
    (err: unknown) => {
      stopWatch();
      log.warn(
        { backup_id: ids.backupId, bytes: counted.bytes, err: { message: (err as Error)?.message } },
        'backup download stopped',
      );
      firstFailed(err as Error);
      out.destroy(err as Error);
      ended(err as Error, counted.bytes);
    },
  );
  try {
    await firstByte;
  } catch (err) {
    if (err instanceof ArchiveError)
      throw conflict(
        "This backup's archive failed its authenticity check; nothing was sent (run a restore drill to confirm)",
      );
    throw new AppError('unavailable', 'The archive could not be read from its agent; try again');
  }
  return out;
}

export function createBackupDownloads(deps: {
  db: Db;
  box: SecretBox | null;
  log: Logger;
  linkKey: () => Promise<Buffer>;
  /** Where downloads meet the agents that send their archives (one per server process). */
  relay: DownloadRelay;
  /** How long a download waits for its agent to start sending (default 30 s). */
  connectTimeoutMs?: number;
  /** Cut a transfer with no byte moved for `idleMs` (default 30 s) or longer than `maxMs` (default 30 min). */
  deadlines?: DownloadDeadlines;
  /** Downloads open at once for one account in this process (default 2); past it: 429. */
  perAccount?: number;
  /**
   * A download is the whole database in the clear, like revealing its password: a signed-in user
   * needs the re-authentication window (a stolen session cannot walk away with the data).
   */
  stepUp?: RequireStepUp;
}) {
  const { db, log, relay } = deps;
  const connectTimeoutMs = deps.connectTimeoutMs ?? 30_000;
  const perAccount = deps.perAccount ?? 2;
  /** Open downloads per account, and the links whose download is still open (this process). */
  const openByAccount = new Map<string, number>();
  const openLinks = new Set<string>();

  /**
   * Takes a place for a download (429 past the account's cap, 409 for a link whose previous
   * download is still open); the returned function gives it back (idempotent).
   */
  const admit = (accountId: string, link: string | undefined): (() => void) => {
    const linkKey = link === undefined ? undefined : createHash('sha256').update(link).digest('hex');
    if (linkKey !== undefined && openLinks.has(linkKey))
      throw conflict('A download through this link is still running; wait for it to end');
    const n = openByAccount.get(accountId) ?? 0;
    if (n >= perAccount)
      throw new AppError(
        'rate_limited',
        `This account already has ${perAccount} backup downloads running; wait for one to end`,
      );
    openByAccount.set(accountId, n + 1);
    if (linkKey !== undefined) openLinks.add(linkKey);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (openByAccount.get(accountId) ?? 1) - 1;
      if (left > 0) openByAccount.set(accountId, left);
      else openByAccount.delete(accountId);
      if (linkKey !== undefined) openLinks.delete(linkKey);
    };
  };

  /** A download job that will not run (or finish) any more: dead, its token gone from the row. */
  const endJob = async (jobId: number, reason: string) => {
    await db
      .query(
        `UPDATE jobs SET status = 'dead', last_error = $2, lease_expires_at = NULL,
                finished_at = now(), updated_at = now(), payload = payload - 'stream_token'
          WHERE id = $1 AND status IN ('queued', 'running')`,
        [jobId, reason.slice(0, 1000)],
      )
      .catch((err: Error) =>
        log.warn({ job: jobId, err: { message: err.message } }, 'download job not ended'),
      );
  };

  /**
   * Has the agent of `nodeId` send the archive stored under (databaseId, backupId) as stored: a
   * `backup.download` job carrying a fresh single-use stream token, and the wait (bounded by the
   * connect timeout and `signal`) for that agent to connect. The caller reads `incoming.source`
   * and calls `incoming.finish` once; on a failure after this resolved it ends the job
   * (`endJob`). Downloads use it, and a move between nodes without a shared store (ADR 0031).
   */
  async function sendFromNode(
    archive: { nodeId: string; accountId: string; backupId: string; databaseId: string },
    signal: AbortSignal,
  ): Promise<{ incoming: Incoming; jobId: number }> {
    const slot = relay.open();
    let jobId: number | null = null;
    try {
      const job = await enqueueJob(db, {
        nodeId: archive.nodeId,
        accountId: archive.accountId,
        kind: BACKUP_JOB_KINDS.download,
        payload: { backup_id: archive.backupId, database_id: archive.databaseId, stream_token: slot.token },
        // The receiver waits for this one run; a retry after it gave up would send to nobody.
        maxAttempts: 1,
      });
      jobId = job.id;
      slot.bindJob(job.id);
      return { incoming: await slot.connected(connectTimeoutMs, signal), jobId: job.id };
    } catch (err) {
      slot.close();
      if (jobId !== null) await endJob(jobId, `archive transfer ended: ${(err as Error).message}`);
      throw err;
    }
  }

  return {
    async sign(caller: Caller, backupId: string, nowS = Math.floor(Date.now() / 1000)) {
      if (caller.kind === 'user') {
        if (!deps.stepUp) throw forbidden('Signed-in users cannot download backups on this server');
        await deps.stepUp({ userId: caller.userId, sessionId: caller.sessionId }, 'download a backup');
      }
      const claims = {
        backupId,
        accountId: caller.accountId,
        caller: callerTag(caller),
        expires: nowS + DOWNLOAD_LINK_TTL_S,
      };
      return { expires: claims.expires, sig: signLink(await deps.linkKey(), claims) };
    },

    async verify(caller: Caller, backupId: string, expires: number, sig: string): Promise<boolean> {
      const claims = { backupId, accountId: caller.accountId, caller: callerTag(caller), expires };
      return verifyLink(await deps.linkKey(), claims, sig);
    },

    /**
     * Opens the plain archive of a completed backup (already found in the caller's account): a
     * `backup.download` job asks the backup's agent to send the stored (encrypted) archive here,
     * and this process decrypts it as it forwards it. Resolves with the first authentic plain
     * bytes ready; `signal` is the client's (gone: the agent's transfer ends too). `link` (the
     * link's signature) is open once at a time; an account has at most `perAccount` open.
     */
    async open(backup: repo.BackupRow, signal: AbortSignal, link?: string): Promise<Readable> {
      if (!deps.box) throw unavailable('The server has no master key configured');
      const sealed = await repo.findWrappedKey(db, backup.id);
      if (!sealed || sealed.account_id !== backup.account_id)
        throw new AppError('not_found', 'Backup not found');
      const key = Buffer.from(deps.box.open(sealed.wrapped_key, backupKeyContext(backup.id)), 'base64url');
      const release = admit(backup.account_id, link);
      let sent: { incoming: Incoming; jobId: number } | null = null;
      try {
        sent = await sendFromNode(
          {
            nodeId: backup.node_id,
            accountId: backup.account_id,
            backupId: backup.id,
            databaseId: backup.database_id,
          },
          signal,
        );
        const { incoming } = sent;
        return await openPlainArchive(
          incoming.source,
          key,
          { backupId: backup.id, databaseId: backup.database_id },
          Number(backup.size_bytes ?? 0),
          log,
          (err, bytes) => {
            release();
            incoming.finish(err, bytes);
          },
          deps.deadlines,
        );
      } catch (err) {
        release();
        if (sent) await endJob(sent.jobId, `download ended: ${(err as Error).message}`);
        throw err;
      }
    },

    sendFromNode,

    /**
     * Registered for `backup.download`: a job that finished without its archive going through (the
     * agent failed it: the archive is not on that node…) ends its waiting download at once, and
     * its stream token leaves the row.
     */
    async onJobFinished(tx: Tx, job: JobRow): Promise<void> {
      await tx.query(`UPDATE jobs SET payload = payload - 'stream_token' WHERE id = $1`, [job.id]);
      // Finished without its archive going through this server (a slot still waiting): end the wait.
      relay.fail(job.id, (job.last_error ?? 'the job ended without sending the archive').slice(0, 300));
    },

    relay,

    endJob,

    /** Downloads open now in this process (tests, metrics). */
    openCount: () => [...openByAccount.values()].reduce((a, b) => a + b, 0),
  };
}

export type BackupDownloads = ReturnType<typeof createBackupDownloads>;
