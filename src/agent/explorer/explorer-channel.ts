/**
 * The explorer channel, agent side (ADR 0009): one WebSocket opened OUTBOUND to the server with
 * the agent token (no inbound port, like the long-poll). The server sends explorer requests and
 * cancels down it; each request runs on the executor at once (not behind the node's job queue)
 * and its outcome goes back up the same connection. Every request is validated against the
 * contract, and the executor re-validates the SQL itself: the channel adds no authority.
 *
 * Governed executions (`execute` frames, protocol version 2) run on the execution executor
 * (src/agent/execution/executor.ts), which verifies their signed token before anything touches a
 * database; they have a small concurrency of their own, so that they never wait behind explorer
 * queries (nor these behind them). An agent without an executor answers them `refused`.
 *
 * Reconnects with backoff; stops for good when the server refuses the token (401/403), speaks
 * another version of the contract (426), or closes the channel because the token was revoked.
 */
import type { Logger } from 'pino';
import WebSocket from 'ws';
import type { ExecutePayload, ExecutionOutcome } from '../../shared/contracts/execution.ts';
import {
  CHANNEL_CLOSE,
  CHANNEL_MAX_REQUEST_BYTES,
  CHANNEL_PROTOCOL_VERSION,
  CHANNEL_VERSION_HEADER,
  type ChannelAgentMessage,
  channelServerMessageSchema,
  EXPLORER_CHANNEL_PATH,
  type ExplorerOutcome,
} from '../../shared/contracts/explorer-channel.ts';
import { sleep } from '../sleep.ts';
import type { ExplorerExecutor } from './explorer-executor.ts';

export type ExplorerChannelClientDeps = {
  serverUrl: string;
  token: () => string | null;
  executor: Pick<ExplorerExecutor, 'runQuery' | 'readSchema'>;
  log: Logger;
  /** A channel that saw no ping from the server for this long is dropped and reopened (default 15 s: three pings). */
  silenceMs?: number;
  /** Requests run at once on this node; more wait their turn (default 16; the server admits 4 per database). */
  maxConcurrent?: number;
  /** Governed executions (execute frames); absent: they are refused. */
  execution?: { execute(payload: ExecutePayload, signal: AbortSignal): Promise<ExecutionOutcome> };
  /** Executions run at once on this node, apart from the explorer's slots (default 4). */
  maxExecutions?: number;
};

/** A FIFO of slots: `take` resolves false when the request was cancelled before its turn. */
function createSlots(max: number) {
  const waiting: (() => void)[] = [];
  let active = 0;
  return {
    async take(signal: AbortSignal): Promise<boolean> {
      if (active < max) {
        active++;
        return true;
      }
      // A waiter cancelled before its turn leaves the line (it must not take a freed slot's wake-up).
      const woken = await new Promise<boolean>((resolve) => {
        const wake = () => {
          signal.removeEventListener('abort', leave);
          resolve(true);
        };
        const leave = () => {
          const i = waiting.indexOf(wake);
          if (i >= 0) waiting.splice(i, 1);
          resolve(false);
        };
        waiting.push(wake);
        signal.addEventListener('abort', leave, { once: true });
      });
      if (signal.aborted) {
        if (woken) waiting.shift()?.(); // the freed slot goes to the next in line
        return false;
      }
      active++;
      return true;
    },
    release() {
      active--;
      waiting.shift()?.();
    },
  };
}

export type ExplorerChannelClient = {
  /** Resolves once the channel is open (tests, benches); rejects when the client stopped for good. */
  opened(): Promise<void>;
  stop(): Promise<void>;
};

/** The channel URL: the server URL with ws(s) for http(s). */
export function channelUrl(serverUrl: string): string {
  const u = new URL(EXPLORER_CHANNEL_PATH, serverUrl);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.toString();
}

/** Statuses that end the channel for good: a refused token, or a server of another contract. */
const REFUSED_STATUSES = new Set([401, 403, 426]);

export function startExplorerChannel(deps: ExplorerChannelClientDeps): ExplorerChannelClient {
  const { log } = deps;
  const silenceMs = deps.silenceMs ?? 15_000;
  const maxConcurrent = deps.maxConcurrent ?? 16;
  const stopping = new AbortController();
  const running = new Map<string, AbortController>();
  const work = new Set<Promise<void>>();
  let socket: WebSocket | null = null;
  let openWaiters: { resolve(): void; reject(err: Error): void }[] = [];
  let isOpen = false;
  let refused: Error | null = null;

  const slots = createSlots(maxConcurrent);
  const executionSlots = createSlots(deps.maxExecutions ?? 4);

  /** Sends one answer; throws only when the answer itself cannot be serialised (the caller fails the request). */
  const answer = (ws: WebSocket, msg: ChannelAgentMessage) => {
    // The request outlives no channel: a result for a closed channel is dropped (the server
    // already answered its client with an error).
    if (ws.readyState !== ws.OPEN) return;
    const frame = JSON.stringify(msg);
    ws.send(frame, (err) => {
      if (err) log.debug({ err: { message: err.message } }, 'explorer channel: an answer was not sent');
    });
  };

  /** The node (not the query) failed: the server answers 503. Never throws. */
  const failed = (ws: WebSocket, id: string, sqlstate: string, message: string) => {
    try {
      answer(ws, {
        type: 'result',
        id,
        outcome: {
          kind: 'error',
          error: { sqlstate, message, position: null, internal: true },
          duration_ms: 0,
        },
      });
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'explorer channel: could not answer');
    }
  };

  /** Runs one request; never rejects: whatever the request does fails that request only. */
  const run = async (ws: WebSocket, id: string, job: (signal: AbortSignal) => Promise<ExplorerOutcome>) => {
    const controller = new AbortController();
    running.set(id, controller);
    const signal = AbortSignal.any([controller.signal, stopping.signal]);
    try {
      if (!(await slots.take(signal))) return;
      try {
        const outcome = await job(signal);
        if (!signal.aborted) answer(ws, { type: 'result', id, outcome });
      } finally {
        slots.release();
      }
    } catch (err) {
      log.warn(
        { err: { message: err instanceof Error ? err.message : String(err) } },
        'explorer request failed',
      );
      failed(ws, id, 'XX000', 'the node could not run the query');
    } finally {
      running.delete(id);
    }
  };

  /**
   * Runs one execution on its own slots; never rejects. Its outcome is answered even when it was
   * cancelled (a cancelled execution reports what happened: rolled back, or refused before it ran).
   */
  const runExecution = async (ws: WebSocket, id: string, payload: ExecutePayload) => {
    const controller = new AbortController();
    running.set(id, controller);
    const signal = AbortSignal.any([controller.signal, stopping.signal]);
    try {
      let outcome: ExecutionOutcome;
      if (!deps.execution) {
        outcome = {
          kind: 'refused',
          refusal: { reason: 'config', message: 'this agent does not run governed SQL' },
        };
      } else if (!(await executionSlots.take(signal))) {
        outcome = {
          kind: 'refused',
          refusal: { reason: 'cancelled', message: 'the execution was cancelled before it started' },
        };
      } else {
        try {
          outcome = await deps.execution.execute(payload, signal);
        } finally {
          executionSlots.release();
        }
      }
      answer(ws, { type: 'execution', id, outcome });
    } catch (err) {
      log.warn({ err: { message: err instanceof Error ? err.message : String(err) } }, 'execution failed');
    } finally {
      running.delete(id);
    }
  };

  const onMessage = (ws: WebSocket, data: WebSocket.RawData, isBinary: boolean) => {
    let raw: unknown;
    try {
      raw = isBinary ? undefined : JSON.parse(data.toString());
    } catch {}
    const parsed = channelServerMessageSchema.safeParse(raw);
    if (!parsed.success) {
      log.warn('explorer channel: malformed request from the server; refused');
      // Answer a request we can name, so its caller fails at once instead of timing out.
      const id = (raw as { id?: unknown } | undefined)?.id;
      if (typeof id === 'string' && /^[0-9a-f-]{36}$/i.test(id)) {
        failed(ws, id, '08P01', 'the node could not read this request');
      }
      return;
    }
    const msg = parsed.data;
    if (msg.type === 'cancel') {
      running.get(msg.id)?.abort();
      return;
    }
    if (running.has(msg.id)) return; // an id runs once
    if (msg.type === 'execute') {
      const e = runExecution(ws, msg.id, msg.payload)
        .catch(() => {})
        .finally(() => work.delete(e));
      work.add(e);
      return;
    }
    const job =
      msg.type === 'query'
        ? (signal: AbortSignal) => deps.executor.runQuery(msg.payload, signal)
        : async (): Promise<ExplorerOutcome> => ({
            kind: 'schema',
            output: await deps.executor.readSchema(msg.payload),
          });
    const p = run(ws, msg.id, job)
      .catch(() => {})
      .finally(() => work.delete(p));
    work.add(p);
  };

  const connect = () =>
    new Promise<void>((resolve) => {
      const token = deps.token();
      const ws = new WebSocket(channelUrl(deps.serverUrl), {
        headers: {
          [CHANNEL_VERSION_HEADER]: CHANNEL_PROTOCOL_VERSION,
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
        maxPayload: CHANNEL_MAX_REQUEST_BYTES,
        perMessageDeflate: false,
        handshakeTimeout: 10_000,
        followRedirects: false,
      });
      socket = ws;
      let silence: NodeJS.Timeout | undefined;
      const heard = () => {
        clearTimeout(silence);
        silence = setTimeout(() => {
          log.warn('explorer channel: no ping from the server; reconnecting');
          ws.terminate();
        }, silenceMs);
      };
      ws.on('open', () => {
        isOpen = true;
        heard();
        for (const w of openWaiters) w.resolve();
        openWaiters = [];
        log.info('explorer channel open');
      });
      ws.on('ping', heard);
      ws.on('message', (data, isBinary) => {
        // A request that makes the handler throw fails alone; the channel and the agent stay up.
        try {
          onMessage(ws, data, isBinary);
        } catch (err) {
          log.warn({ err: { message: (err as Error).message } }, 'explorer channel: a request failed');
        }
      });
      ws.on('unexpected-response', (_req, res) => {
        if (REFUSED_STATUSES.has(res.statusCode ?? 0)) {
          refused = new Error(`the server refused the explorer channel (${res.statusCode})`);
        }
        res.resume();
        ws.terminate();
      });
      ws.on('error', (err) => {
        log.debug({ err: { message: err.message } }, 'explorer channel error');
      });
      ws.on('close', (code) => {
        clearTimeout(silence);
        isOpen = false;
        socket = null;
        if (code === CHANNEL_CLOSE.tokenRevoked)
          refused = new Error('the server revoked the explorer channel');
        // Requests of this connection cannot be answered any more: stop their work.
        for (const c of running.values()) c.abort();
        resolve();
      });
    });

  const loop = async () => {
    let backoff = 100;
    while (!stopping.signal.aborted && !refused) {
      const started = Date.now();
      await connect();
      if (stopping.signal.aborted || refused) break;
      // A channel that stayed up a while reconnects at once; a failing one backs off (to 30 s, with
      // jitter so that a node fleet does not reconnect in step after a server restart).
      backoff = Date.now() - started > 10_000 ? 100 : Math.min(backoff * 2, 30_000);
      await sleep(backoff * (0.8 + Math.random() * 0.4), stopping.signal);
    }
    if (refused) log.error({ err: { message: refused.message } }, 'explorer channel stopped');
    const why = refused ?? new Error('the explorer channel stopped');
    for (const w of openWaiters) w.reject(why);
    openWaiters = [];
  };
  const done = loop();

  return {
    opened() {
      if (isOpen) return Promise.resolve();
      if (refused || stopping.signal.aborted)
        return Promise.reject(refused ?? new Error('the explorer channel stopped'));
      return new Promise((resolve, reject) => openWaiters.push({ resolve, reject }));
    },
    async stop() {
      stopping.abort();
      socket?.close(1001, 'agent stopping');
      await Promise.all([...work]);
      socket?.terminate();
      await done;
    },
  };
}
