/**
 * The chainer: one per cluster (a session advisory lock on a dedicated connection elects it; other
 * replicas stand by and retry). Woken when this process records an event (it then polls every few
 * ms until writes stop: the writer's commit follows its `record`), by a NOTIFY that other
 * replicas send after recording (debounced, outside any transaction), and by a slow poll in case
 * a notification is lost. It assigns seq/prev_hash/hash/canonical to committed pending
 * rows in id order, in batches, advancing audit_head once per batch. It also signs periodic
 * checkpoints and prunes past the retention period (leaving a signed anchor).
 *
 * Crash safety: pending rows are plain committed rows; whatever is pending when a chainer dies is
 * chained by the next one (at its start, or on the poll).
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { listen, notify } from '../../db/notify.ts';
import type { Db, Queryable } from '../../db/pool.ts';
import type { Checkpointer } from './audit.checkpoints.ts';
import * as repo from './audit.repo.ts';
import { AUDIT_CHANNEL, type AuditService } from './audit.service.ts';
import { canonicalEncode, chainHash } from './audit-chain.ts';

// Any constant works; it only elects one chainer per control database.
const CHAINER_LOCK = 7_236_451_005;
const DEFAULT_BATCH = 2_000;
const GATHER_MIN = 64;

type TxClient = Queryable & { query: pg.ClientBase['query'] };

async function inTx<T>(client: TxClient, fn: () => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  try {
    const out = await fn();
    await client.query('COMMIT');
    return out;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/**
 * Writes the queries `fn` issues in one go when the client runs in pg's pipeline mode (the leader
 * connection does): they leave in one write instead of one round trip each. On an ordinary client
 * pg queues them and they run one after the other, as before.
 */
function corked<T>(client: TxClient, fn: () => T): T {
  const stream = (client as unknown as { connection?: { stream?: { cork?(): void; uncork?(): void } } })
    .connection?.stream;
  stream?.cork?.();
  try {
    return fn();
  } finally {
    stream?.uncork?.();
  }
}

/** Observed later (Promise.all), never an unhandled rejection meanwhile. */
const quiet = <T>(p: Promise<T>): Promise<T> => {
  p.catch(() => {});
  return p;
};

/**
 * Chains up to `limit` pending rows in one transaction on `client` (a dedicated connection, not
 * a pooled one mid-transaction). Returns how many rows were chained. Safe to run concurrently
 * from several processes: the head row lock serialises them.
 *
 * On a pipelined client this is two round trips (BEGIN, commit mode, head lock and pending rows;
 * then the chained rows, the new head and COMMIT) instead of seven: a pass competes less with
 * the requests running beside it. A failed statement aborts the transaction, so those queued
 * after it fail too and the COMMIT behind them only ends it: nothing is chained, as before.
 */
export async function chainBatch(client: TxClient, limit = DEFAULT_BATCH): Promise<number> {
  const opened = corked(client, () => [
    quiet(client.query('BEGIN')),
    // The chainer's commit need not wait for its WAL flush: the events are already durable (their
    // writers committed synchronously); a chaining lost in a crash is redone at the next start.
    // A checkpoint commits synchronously, which flushes every chaining before it, so nothing
    // signed can be lost.
    quiet(client.query('SET LOCAL synchronous_commit = off')),
    quiet(repo.lockHead(client)),
    quiet(repo.lockPending(client, limit)),
  ]);
  try {
    const [, , headP, pendingP] = opened;
    await Promise.all(opened);
    const head = await (headP as ReturnType<typeof repo.lockHead>);
    const pending = await (pendingP as ReturnType<typeof repo.lockPending>);
    if (pending.length === 0) {
      await client.query('COMMIT');
      return 0;
    }
    let seq = head.seq;
    let prev = head.hash;
    const out: { id: number; seq: number; canonical: string; prev: Buffer; hash: Buffer }[] = [];
    for (const row of pending) {
      seq += 1;
      const canonical = canonicalEncode(seq, repo.rowToEvent(row));
      const hash = chainHash(prev, canonical);
      out.push({ id: row.id, seq, canonical, prev, hash });
      prev = hash;
    }
    const last = { seq, hash: prev };
    await Promise.all(
      corked(client, () => [
        quiet(repo.writeChained(client, out)),
        quiet(repo.advanceHead(client, last)),
        quiet(client.query('COMMIT') as Promise<unknown>),
      ]),
    );
    return out.length;
  } catch (err) {
    await Promise.allSettled(opened);
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/** Chains until nothing is pending. */
export async function chainAll(client: TxClient, limit = DEFAULT_BATCH): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await chainBatch(client, limit);
    total += n;
    if (n < limit) return total;
  }
}

/**
 * Retention: deletes the chained prefix older than `cutoff`, leaving a signed anchor at the last
 * deleted event so verification starts from it. Returns the number of events deleted.
 */
export async function pruneBefore(
  client: TxClient,
  checkpointer: Pick<Checkpointer, 'anchor' | 'shipAnchor'>,
  cutoff: Date,
  maxRowsPerTx = 50_000,
): Promise<number> {
  let total = 0;
  for (;;) {
    const done = await inTx(client, async () => {
      await repo.lockHead(client);
      const last = await repo.prunableHead(client, cutoff, maxRowsPerTx);
      if (!last) return null;
      const anchor = await checkpointer.anchor(client, last.seq, last.hash);
      const n = await repo.deleteThrough(client, last.seq);
      await repo.deleteCheckpointsThrough(client, last.seq);
      return { n, anchor };
    });
    if (!done) return total;
    await checkpointer.shipAnchor(done.anchor);
    total += done.n;
    if (done.n < maxRowsPerTx) return total;
  }
}

export type ChainerDeps = {
  databaseUrl: string;
  /** Used by a standby to NOTIFY the chainer (outside any writer transaction). */
  db: Db;
  log: Logger;
  /** This process's audit writer: its writes wake the chainer. */
  audit: Pick<AuditService, 'onRecorded'>;
  checkpointer: Checkpointer;
  checkpointIntervalMs: number;
  retentionDays: number;
  batchSize?: number;
  /** How often a standby retries the leader lock. */
  standbyRetryMs?: number;
  /** Safety poll for pending rows (a lost NOTIFY, a crash). */
  pollMs?: number;
  /** After a local write, poll this often… */
  activePollMs?: number;
  /** …until this long after the last one. */
  activeWindowMs?: number;
  /**
   * An event that is already committed (group-committed `recordNow`) is chained by one pass this
   * long after the first of them, not by polling: a burst of events shares the pass, and the pass
   * does not compete for CPU with the request that wrote the event (default 50 ms).
   */
  committedDelayMs?: number;
  pruneIntervalMs?: number;
};

export type AuditChainer = {
  isLeader(): boolean;
  /** Leader only: chains everything pending now (tests, shutdown). Returns rows chained. */
  flush(): Promise<number>;
  /** Chains what is pending when this replica is the leader (before an on-demand checkpoint). */
  chainPending(): Promise<void>;
  /**
   * Called after this replica chained events (they are committed and have their seq): readers of
   * the chain in seq order (the webhook dispatcher) look now. Returns an unsubscribe function.
   */
  onChained(fn: () => void): () => void;
  close(): Promise<void>;
};

export function createAuditChainer(deps: ChainerDeps): AuditChainer {
  const { log } = deps;
  const batch = deps.batchSize ?? DEFAULT_BATCH;
  let closed = false;
  let leader: pg.Client | null = null;
  let lost: (() => void) | null = null;
  let queue: Promise<unknown> = Promise.resolve();
  let running = false;
  let activeUntil = 0;
  let notifyTimer: NodeJS.Timeout | undefined;
  let committedTimer: NodeJS.Timeout | undefined;
  /** A wake-up that arrived while a pass was running: run one more before stopping. */
  let rerun = false;
  const timers: NodeJS.Timeout[] = [];
  let sleepTimer: NodeJS.Timeout | undefined;
  let wakeSleep: (() => void) | null = null;
  const chainedListeners = new Set<() => void>();
  const chained = (n: number) => {
    if (n > 0) for (const fn of chainedListeners) fn();
    return n;
  };

  /** Serialises all work on the leader connection (one transaction at a time). */
  const exclusive = <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const run = queue.then(() => {
      if (!leader) throw new Error('not the audit chainer');
      return fn(leader);
    });
    queue = run.catch(() => {});
    return run;
  };

  /** Chains until nothing is pending and no local write happened within the active window. */
  const kick = () => {
    if (!leader || closed) return;
    if (running) {
      rerun = true;
      return;
    }
    running = true;
    void (async () => {
      try {
        while (leader && !closed) {
          rerun = false;
          const n = chained(await exclusive((c) => chainAll(c, batch)));
          // Under a steady trickle, let a few more commits gather: fewer, larger batches.
          if (n >= GATHER_MIN) continue;
          const left = activeUntil - Date.now();
          if (left <= 0 && !rerun) break;
          if (n > 0 || left <= 0) {
            await new Promise((r) => setTimeout(r, deps.activePollMs ?? 3));
            continue;
          }
          await new Promise((r) => setTimeout(r, Math.min(left, deps.activePollMs ?? 3)));
        }
      } catch (err) {
        if (!closed) {
          log.error({ err: { message: (err as Error).message } }, 'audit chainer: batch failed; will retry');
        }
      } finally {
        running = false;
      }
    })();
  };

  const unsubscribe = deps.audit.onRecorded((committed) => {
    if (committed && leader) {
      // Already durable: one pass shortly, shared by every event committed meanwhile.
      if (committedTimer) return;
      committedTimer = setTimeout(() => {
        committedTimer = undefined;
        kick();
      }, deps.committedDelayMs ?? 50);
      committedTimer.unref();
      return;
    }
    activeUntil = Date.now() + (deps.activeWindowMs ?? 250);
    if (leader) {
      kick();
      return;
    }
    // Not the chainer: tell it (after the writer's commit, most likely), at most every 5 ms.
    notifyTimer ??= setTimeout(() => {
      notifyTimer = undefined;
      notify(deps.db, AUDIT_CHANNEL, '').catch(() => {});
    }, 5);
  });

  const prune = () =>
    exclusive((c) =>
      pruneBefore(c, deps.checkpointer, new Date(Date.now() - deps.retentionDays * 86_400_000)),
    ).then(
      (n) => n > 0 && log.info({ pruned: n }, 'audit retention: pruned events, anchor signed'),
      (err: Error) => log.error({ err: { message: err.message } }, 'audit retention failed'),
    );

  const checkpoint = async (onlyIfAdvanced: boolean) => {
    if (leader) await exclusive((c) => chainAll(c, batch));
    return deps.checkpointer.checkpoint({ onlyIfAdvanced });
  };

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      wakeSleep = resolve;
      sleepTimer = setTimeout(resolve, ms);
    });

  const becomeLeader = async (): Promise<boolean> => {
    const c = new pg.Client({
      connectionString: deps.databaseUrl,
      application_name: 'bulwark-audit-chainer',
      // chainBatch writes its statements together (two round trips a pass, not seven).
      pipeline: true,
    } as pg.ClientConfig);
    let ended = false;
    const gone = new Promise<void>((resolve) => {
      lost = resolve;
    });
    c.on('error', (err) => {
      log.warn({ err: { message: err.message } }, 'audit chainer connection lost');
      ended = true;
      lost?.();
    });
    c.on('notification', (msg) => {
      if (msg.channel !== AUDIT_CHANNEL) return;
      activeUntil = Math.max(activeUntil, Date.now() + 50);
      kick();
    });
    try {
      await c.connect();
      if (!(await repo.tryLeaderLock(c, CHAINER_LOCK))) {
        await c.end();
        return false;
      }
      await listen(c, AUDIT_CHANNEL);
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'audit chainer could not connect');
      await c.end().catch(() => {});
      return false;
    }
    leader = c;
    log.info('audit chainer: leader');
    kick(); // whatever a previous chainer left pending
    void prune();
    if (!ended) await gone;
    leader = null;
    await c.end().catch(() => {});
    return true;
  };

  const loop = async () => {
    while (!closed) {
      const wasLeader = await becomeLeader();
      if (closed) break;
      await sleep(wasLeader ? 200 : (deps.standbyRetryMs ?? 5_000));
    }
  };
  void loop();

  timers.push(setInterval(kick, deps.pollMs ?? 1_000));
  timers.push(
    setInterval(() => {
      if (!leader) return;
      checkpoint(true).catch((err: Error) =>
        log.error({ err: { message: err.message } }, 'audit checkpoint failed'),
      );
    }, deps.checkpointIntervalMs),
  );
  timers.push(setInterval(() => leader && void prune(), deps.pruneIntervalMs ?? 3_600_000));
  for (const t of timers) t.unref();

  return {
    isLeader: () => leader !== null,
    flush: () => exclusive((c) => chainAll(c, batch)).then(chained),
    async chainPending() {
      if (leader) chained(await exclusive((c) => chainAll(c, batch)));
    },
    onChained(fn) {
      chainedListeners.add(fn);
      return () => chainedListeners.delete(fn);
    },
    async close() {
      closed = true;
      unsubscribe();
      clearTimeout(notifyTimer);
      clearTimeout(committedTimer);
      for (const t of timers) clearInterval(t);
      clearTimeout(sleepTimer);
      wakeSleep?.();
      await queue;
      lost?.();
      // becomeLeader ends the client once `lost` fires; wait for it to be released.
      for (let i = 0; i < 100 && leader; i++) await new Promise((r) => setTimeout(r, 5));
    },
  };
}
