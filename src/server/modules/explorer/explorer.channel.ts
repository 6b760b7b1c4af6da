/**
 * The explorer channel, server side (ADR 0009): each agent keeps one WebSocket open OUTBOUND to
 * this server; explorer requests for its node go down it and the outcomes come back on the same
 * connection, so a query costs two frames instead of a queued job (enqueue, NOTIFY, long-poll
 * answer, claim, result POST, hand-over table). Nothing here is stored: a request lives in memory
 * for as long as the API request that made it.
 *
 * A node whose channel is held by another replica (or by none) is served through the job queue
 * instead; the channel is a faster path, never the only one.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import type { ExecutePayload, ExecutionOutcome } from '../../../shared/contracts/execution.ts';
import {
  CHANNEL_CLOSE,
  type ChannelServerMessage,
  channelAgentMessageSchema,
  type ExplorerOutcome,
  type QueryPayload,
} from '../../../shared/contracts/explorer-channel.ts';

/** `unsent`: the channel closed before the request left (nothing ran; another path may serve it). */
export type ChannelOutcome = ExplorerOutcome | 'timeout' | 'aborted' | 'unsent' | { died: string };
/** What an explorer request ends with, whichever path (channel or job queue) served it. */
export type RequestOutcome = Exclude<ChannelOutcome, 'unsent'>;

/**
 * What a governed execution (contracts/execution.ts) ends with on the channel: the agent's outcome,
 * or no answer. `unsent`: nothing left this server (the caller may use the job queue); `timeout`
 * and `died` after sending: the outcome is unknown (the agent may have run it).
 */
export type ChannelExecutionOutcome = ExecutionOutcome | 'timeout' | 'aborted' | 'unsent' | { died: string };

/** A request waiting for its answer: explorer requests take `result` frames, executions `execution` frames. */
type Pending = { answer: 'result' | 'execution'; resolve(outcome: unknown): void };

export type ExplorerChannel = {
  readonly nodeId: string;
  /** Sends one request and waits (bounded) for its outcome; cancels it on the agent when given up. */
  request(
    kind: 'query' | 'schema',
    payload: QueryPayload | { database_id: string; name: string },
    waitMs: number,
    signal: AbortSignal,
  ): Promise<ChannelOutcome>;
  /**
   * Sends one governed execution (or dry run) and waits (bounded) for its outcome. A dry run given
   * up on is cancelled on the agent; an execution is not (it may be committing: its outcome is
   * then unknown to this wait, never guessed).
   */
  execute(payload: ExecutePayload, waitMs: number, signal: AbortSignal): Promise<ChannelExecutionOutcome>;
};

export type ExplorerChannelsDeps = {
  log: Logger;
  /** Whether the token the channel was opened with (its SHA-256) still belongs to the active node. */
  tokenCurrent(nodeId: string, tokenHash: Buffer): Promise<boolean>;
  /**
   * Ping interval; a channel that did not answer the previous ping is cut (default 5 s: a peer that
   * vanished is noticed within 10 s). The token is re-checked every third ping.
   */
  pingMs?: number;
  /** Requests in flight on one channel; past it the caller is told the node is busy (default 64). */
  maxInFlight?: number;
};

const MAX_CHANNELS_PER_NODE = 2;
/** The token behind a channel is looked up again every this many pings (15 s by default). */
const TOKEN_CHECK_EVERY = 3;

export function createExplorerChannels(deps: ExplorerChannelsDeps) {
  const { log } = deps;
  const pingMs = deps.pingMs ?? 5_000;
  const maxInFlight = deps.maxInFlight ?? 64;
  /** Open channels per node, newest last (an agent that reconnects may overlap its old one). */
  const byNode = new Map<string, ExplorerChannel[]>();

  const attach = (nodeId: string, tokenHash: Buffer, socket: WebSocket): ExplorerChannel => {
    const pending = new Map<string, Pending>();
    let alive = true;
    let pings = 0;
    let closed = false;

    const send = (msg: ChannelServerMessage): boolean => {
      if (closed || socket.readyState !== socket.OPEN) return false;
      socket.send(JSON.stringify(msg));
      return true;
    };

    const channel: ExplorerChannel = {
      nodeId,
      request(kind, payload, waitMs, signal) {
        if (signal.aborted) return Promise.resolve('aborted'); // nothing sent, nothing to cancel
        if (pending.size >= maxInFlight) return Promise.resolve({ died: 'busy' });
        const id = randomUUID();
        return new Promise<ChannelOutcome>((resolve) => {
          let settled = false;
          const finish = (outcome: ChannelOutcome) => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            signal.removeEventListener('abort', onAbort);
            pending.delete(id);
            // A request given up on the server is cancelled on the agent (its backend too).
            if (outcome === 'timeout' || outcome === 'aborted') send({ type: 'cancel', id });
            resolve(outcome);
          };
          const onAbort = () => finish('aborted');
          const timer = setTimeout(() => finish('timeout'), waitMs);
          signal.addEventListener('abort', onAbort, { once: true });
          pending.set(id, { answer: 'result', resolve: (o) => finish(o as ChannelOutcome) });
          const sent =
            kind === 'query'
              ? send({ type: 'query', id, payload: payload as QueryPayload })
              : send({ type: 'schema', id, payload });
          // Never sent: nothing ran, so the caller may take another path (the job queue).
          if (!sent) finish('unsent');
        });
      },
      execute(payload, waitMs, signal) {
        if (signal.aborted) return Promise.resolve('aborted');
        if (pending.size >= maxInFlight) return Promise.resolve('unsent');
        const id = randomUUID();
        return new Promise<ChannelExecutionOutcome>((resolve) => {
          let settled = false;
          const finish = (outcome: ChannelExecutionOutcome) => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            signal.removeEventListener('abort', onAbort);
            pending.delete(id);
            const givenUp = outcome === 'timeout' || outcome === 'aborted';
            if (givenUp && payload.mode === 'dry_run') send({ type: 'cancel', id });
            resolve(outcome);
          };
          const onAbort = () => finish('aborted');
          const timer = setTimeout(() => finish('timeout'), waitMs);
          signal.addEventListener('abort', onAbort, { once: true });
          pending.set(id, { answer: 'execution', resolve: (o) => finish(o as ChannelExecutionOutcome) });
          if (!send({ type: 'execute', id, payload })) finish('unsent');
        });
      },
    };

    const detach = (why: string) => {
      if (closed) return;
      closed = true;
      clearInterval(pinger);
      const list = (byNode.get(nodeId) ?? []).filter((c) => c !== channel);
      if (list.length) byNode.set(nodeId, list);
      else byNode.delete(nodeId);
      for (const p of [...pending.values()]) p.resolve({ died: why });
      pending.clear();
    };

    socket.on('message', (data, isBinary) => {
      let msg: unknown;
      try {
        msg = isBinary ? undefined : JSON.parse(data.toString());
      } catch {}
      const parsed = channelAgentMessageSchema.safeParse(msg);
      if (!parsed.success) {
        // The agent speaks this contract exactly; anything else ends the channel (the queue remains).
        log.warn({ node: nodeId }, 'explorer channel: malformed message from the agent; closing');
        socket.close(CHANNEL_CLOSE.protocol, 'malformed message');
        detach('the node channel broke the protocol');
        return;
      }
      // An answer to a request given up on already (timeout, client gone) is dropped.
      const waiting = pending.get(parsed.data.id);
      if (!waiting) return;
      if (waiting.answer !== parsed.data.type) {
        // An execution answered as a query (or the reverse) breaks the contract: end the channel.
        log.warn({ node: nodeId }, 'explorer channel: an answer of the wrong type from the agent; closing');
        socket.close(CHANNEL_CLOSE.protocol, 'wrong answer type');
        detach('the node channel broke the protocol');
        return;
      }
      waiting.resolve(parsed.data.outcome);
    });
    socket.on('pong', () => {
      alive = true;
    });
    socket.on('close', () => detach('the node channel closed'));
    socket.on('error', (err) => {
      log.warn({ node: nodeId, err: { message: err.message } }, 'explorer channel error');
      detach('the node channel failed');
    });

    // Liveness and authority: a channel that stopped answering pings, or whose agent token was
    // replaced or whose node was disabled since it opened, is cut (the agent reconnects and
    // authenticates again, or is refused).
    const pinger = setInterval(() => {
      if (!alive) {
        log.warn({ node: nodeId }, 'explorer channel did not answer a ping; cutting it');
        socket.terminate();
        detach('the node channel stopped answering');
        return;
      }
      alive = false;
      socket.ping();
      if (++pings % TOKEN_CHECK_EVERY !== 0) return;
      deps
        .tokenCurrent(nodeId, tokenHash)
        .then((ok) => {
          if (ok || closed) return;
          log.warn({ node: nodeId }, 'explorer channel token is no longer current; closing');
          socket.close(CHANNEL_CLOSE.tokenRevoked, 'agent token no longer valid');
          detach('the node token was revoked');
        })
        .catch(() => {}); // the control DB is away: keep the channel, check again next time
    }, pingMs);
    pinger.unref();

    const list = byNode.get(nodeId) ?? [];
    list.push(channel);
    byNode.set(nodeId, list);
    closers.set(channel, (code, why) => {
      socket.close(code, why);
      detach(why);
    });
    // An agent holds one channel; a reconnect may briefly overlap the old one. Past two, the
    // oldest goes (its pings and token checks are not free, and it would never be picked).
    for (let open = list; open.length > MAX_CHANNELS_PER_NODE; open = byNode.get(nodeId) ?? []) {
      const close = open[0] && closers.get(open[0]);
      if (!close) break;
      close(CHANNEL_CLOSE.replaced, 'replaced by a newer channel');
    }
    log.info({ node: nodeId }, 'explorer channel open');
    return channel;
  };
  const closers = new WeakMap<ExplorerChannel, (code: number, why: string) => void>();

  return {
    attach,
    /** The newest open channel of a node on this replica, if any. */
    pick(nodeId: string): ExplorerChannel | null {
      const list = byNode.get(nodeId);
      return list?.[list.length - 1] ?? null;
    },
    /** Closes a node's channels on this replica at once (its token was replaced). */
    closeNode(nodeId: string): void {
      for (const c of [...(byNode.get(nodeId) ?? [])])
        closers.get(c)?.(CHANNEL_CLOSE.tokenRevoked, 'agent token no longer valid');
    },
    /** Open channels on this replica (tests). */
    count(): number {
      let n = 0;
      for (const l of byNode.values()) n += l.length;
      return n;
    },
  };
}

export type ExplorerChannels = ReturnType<typeof createExplorerChannels>;
