/**
 * The meeting point of a download and the agent that sends its archive (ADR 0023). A download
 * opens a slot with a fresh single-use stream token and waits, bounded, for the agent holding the
 * backup to connect with it (`POST /v1/agent/jobs/:id/archive`); the agent's request body then
 * becomes the download's source, and the agent's request is answered only when the download ended
 * (whole, or not). Slots live in this process: the agent must reach the replica that queued its
 * job (ADR 0023, "several replicas").
 *
 * Slots are found by the token's SHA-256 (a map lookup on a hash of 32 random bytes says nothing
 * about the token); the job id the slot was made for is checked too, and a slot is taken once.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Readable } from 'node:stream';
import { AppError } from '../../../shared/errors.ts';

/** What the agent's connection hands the download, and how the download answers it. */
export type Incoming = {
  source: Readable;
  /** Called once when the download ended: `null` when the archive went through whole. */
  finish(err: Error | null, bytes: number): void;
};

type Slot = {
  hash: Buffer;
  jobId: number | null;
  taken: boolean;
  resolve(i: Incoming): void;
  reject(err: Error): void;
};

export type RelaySlot = {
  token: string;
  /** Binds the slot to the job that carries its token (before the agent can connect). */
  bindJob(jobId: number): void;
  /** The agent's connection; rejects on timeout, on `signal`, or when `fail` ends the slot. */
  connected(timeoutMs: number, signal: AbortSignal): Promise<Incoming>;
  /** Ends a slot nobody took (idempotent). */
  close(): void;
};

const hashOf = (token: string) => createHash('sha256').update(token).digest();

export function createDownloadRelay() {
  const slots = new Map<string, Slot>();

  return {
    open(): RelaySlot {
      const token = randomBytes(32).toString('base64url');
      const hash = hashOf(token);
      const key = hash.toString('hex');
      let resolve!: (i: Incoming) => void;
      let reject!: (e: Error) => void;
      const arrived = new Promise<Incoming>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      arrived.catch(() => {});
      const slot: Slot = { hash, jobId: null, taken: false, resolve, reject };
      slots.set(key, slot);
      const close = () => {
        if (slots.get(key) === slot) slots.delete(key);
      };
      return {
        token,
        bindJob(jobId) {
          slot.jobId = jobId;
        },
        async connected(timeoutMs, signal) {
          let timer: NodeJS.Timeout | undefined;
          const onAbort = () => slot.reject(new AppError('cancelled', 'The client went away'));
          try {
            if (signal.aborted) onAbort();
            signal.addEventListener('abort', onAbort, { once: true });
            timer = setTimeout(
              () =>
                slot.reject(
                  new AppError(
                    'unavailable',
                    `The agent holding this backup did not start sending it within ${Math.round(timeoutMs / 1000)} s; try again`,
                  ),
                ),
              timeoutMs,
            );
            return await arrived;
          } finally {
            clearTimeout(timer);
            signal.removeEventListener('abort', onAbort);
            close();
          }
        },
        close,
      };
    },

    /**
     * The agent side: the slot this token opens for this job, taken (single use); null for a wrong,
     * used, expired or foreign token. Compares the hashes in constant time after the lookup.
     */
    take(token: string, jobId: number, source: Readable): Promise<number> | null {
      const hash = hashOf(token);
      const slot = slots.get(hash.toString('hex'));
      if (!slot || slot.taken || slot.jobId !== jobId || !timingSafeEqual(slot.hash, hash)) return null;
      slot.taken = true;
      slots.delete(hash.toString('hex'));
      return new Promise<number>((resolve, reject) => {
        let done = false;
        slot.resolve({
          source,
          finish(err, bytes) {
            if (done) return;
            done = true;
            if (err) reject(err);
            else resolve(bytes);
          },
        });
      });
    },

    /** The job of a slot ended without connecting (the agent failed it): the download learns at once. */
    fail(jobId: number, reason: string) {
      for (const [key, slot] of slots)
        if (slot.jobId === jobId && !slot.taken) {
          slots.delete(key);
          slot.reject(new AppError('unavailable', `The agent could not send this backup: ${reason}`));
        }
    },

    /** Open slots (tests, metrics). */
    size: () => slots.size,
  };
}

export type DownloadRelay = ReturnType<typeof createDownloadRelay>;
