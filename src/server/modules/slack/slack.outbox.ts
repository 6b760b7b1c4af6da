/**
 * The Slack outbox worker: messages queued in the transaction that changed a request
 * (slack_messages, migration 0031) are sent after commit — never inside the API request — through
 * Slack's Web API (`chat.postMessage`, `chat.update`, `chat.postEphemeral`) at the operator's base
 * URL. Each batch is leased (another replica skips it), sent with a timeout, and retried with
 * exponential backoff and jitter; after MAX_ATTEMPTS, or on an error retrying cannot fix (a
 * revoked token, an unknown channel), the message is `dead`. Wakes on NOTIFY bulwark_slack and
 * polls every few seconds as a fallback.
 */
import type { Logger } from 'pino';
import type { PgListener } from '../../db/pg-listener.ts';
import type { Db } from '../../db/pool.ts';
import { findRequest } from '../requests/requests.repo.ts';
import { requestMessage } from './slack.message.ts';
import * as repo from './slack.repo.ts';

export const MAX_ATTEMPTS = 8;
const BATCH = 20;
const LEASE_S = 60;
const SEND_TIMEOUT_MS = 5_000;
const POLL_MS = 5_000;
/** Slack errors no retry can fix. */
const FINAL_ERRORS = new Set([
  'invalid_auth',
  'not_authed',
  'account_inactive',
  'token_revoked',
  'channel_not_found',
  'not_in_channel',
  'is_archived',
  'missing_scope',
  'message_not_found',
  'cant_update_message',
  'user_not_in_channel',
]);

export type SlackApi = {
  /** Opens the account's bot token (null: Slack is off or not configured for it). */
  botToken(accountId: string): Promise<string | null>;
};

class SlackCallError extends Error {
  readonly final: boolean;
  readonly retryAfterS: number | null;
  constructor(message: string, final: boolean, retryAfterS: number | null = null) {
    super(message);
    this.final = final;
    this.retryAfterS = retryAfterS;
  }
}

/** Seconds before attempt n+1: 2^n (1 s, 2 s, 4 s … capped at 10 min), ±20 % jitter. */
export function backoffS(attempts: number): number {
  const base = Math.min(600, 2 ** Math.max(0, attempts - 1));
  return base * (0.8 + Math.random() * 0.4);
}

export function createSlackOutbox(deps: {
  db: Db;
  log: Logger;
  listener: PgListener;
  apiUrl: string;
  api: SlackApi;
  pollMs?: number;
}) {
  const { db, log } = deps;
  const base = deps.apiUrl.replace(/\/+$/, '');
  let stopped = false;
  // Stopping aborts the calls in flight (shutdown never waits on Slack).
  const stopping = new AbortController();
  let running: Promise<void> | null = null;
  let again = false;
  let timer: NodeJS.Timeout | undefined;

  async function call(
    token: string,
    method: string,
    body: Record<string, unknown>,
  ): Promise<{ ts?: string }> {
    let res: Response;
    try {
      res = await fetch(`${base}/${method}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json; charset=utf-8' },
        body: JSON.stringify(body),
        redirect: 'error',
        signal: AbortSignal.any([stopping.signal, AbortSignal.timeout(SEND_TIMEOUT_MS)]),
      });
    } catch (err) {
      throw new SlackCallError(`${method}: ${(err as Error).name}`, false);
    }
    const text = (await res.text()).slice(0, 64 * 1024);
    if (res.status === 429) {
      const after = Number(res.headers.get('retry-after'));
      throw new SlackCallError(
        `${method}: rate limited`,
        false,
        Number.isFinite(after) ? Math.min(after, 600) : null,
      );
    }
    if (res.status >= 500) throw new SlackCallError(`${method}: HTTP ${res.status}`, false);
    let parsed: { ok?: unknown; error?: unknown; ts?: unknown };
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {
      throw new SlackCallError(
        `${method}: HTTP ${res.status}, not JSON`,
        res.status >= 400 && res.status < 500,
      );
    }
    if (parsed.ok !== true) {
      const error = typeof parsed.error === 'string' ? parsed.error.slice(0, 100) : `HTTP ${res.status}`;
      throw new SlackCallError(`${method}: ${error}`, FINAL_ERRORS.has(error));
    }
    return typeof parsed.ts === 'string' ? { ts: parsed.ts } : {};
  }

  /** Sends one message; returns the posted message's ts (a post). */
  async function send(m: repo.SlackMessageRow): Promise<string | null> {
    const token = await deps.api.botToken(m.account_id);
    if (!token) throw new SlackCallError('Slack is disabled or has no bot token for this account', true);
    if (m.kind === 'ephemeral') {
      await call(token, 'chat.postEphemeral', {
        channel: m.channel_id,
        user: m.slack_user_id,
        text: m.text ?? '',
      });
      return null;
    }
    const row = m.request_id ? await findRequest(db, { accountId: m.account_id, id: m.request_id }) : null;
    if (!row) throw new SlackCallError('the request is gone', true);
    const msg = requestMessage(row);
    if (m.kind === 'post') {
      const { ts } = await call(token, 'chat.postMessage', { channel: m.channel_id, ...msg });
      return ts && /^[0-9]{1,20}\.[0-9]{1,20}$/.test(ts) ? ts : null;
    }
    const posted = await repo.postedMessage(db, row.id);
    if (!posted) return null; // nothing was posted (or its post is dead): nothing to update
    await call(token, 'chat.update', { channel: posted.channel_id, ts: posted.message_ts, ...msg });
    return null;
  }

  async function drain(): Promise<void> {
    for (let round = 0; round < 50 && !stopped; round++) {
      const due = await repo.leaseDue(db, BATCH, LEASE_S);
      if (due.length === 0) return;
      for (const m of due) {
        if (stopped) return;
        try {
          await repo.markSent(db, m.id, await send(m));
        } catch (err) {
          const e = err instanceof SlackCallError ? err : new SlackCallError('internal error', false);
          if (!(err instanceof SlackCallError))
            log.error({ err, slack_message: m.id }, 'slack message failed');
          const dead = e.final || m.attempts >= MAX_ATTEMPTS;
          await repo.markFailed(db, m.id, e.message, dead ? null : (e.retryAfterS ?? backoffS(m.attempts)));
          log.warn(
            { slack_message: m.id, kind: m.kind, attempts: m.attempts, dead, error: e.message },
            'slack message not sent',
          );
        }
      }
    }
  }

  /** Runs a drain now (or once more after the one in flight). */
  function poke(): void {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = (async () => {
      do {
        again = false;
        try {
          await drain();
        } catch (err) {
          log.error({ err }, 'slack outbox drain failed');
        }
      } while (again && !stopped);
    })().finally(() => {
      running = null;
    });
  }

  deps.listener.on(repo.SLACK_CHANNEL, () => poke());
  deps.listener.onConnect(() => poke());

  return {
    poke,
    start() {
      const tick = () => {
        poke();
        timer = setTimeout(tick, deps.pollMs ?? POLL_MS);
        timer.unref();
      };
      tick();
    },
    /** Waits for the drain in flight (tests: every due message handled). */
    async idle(): Promise<void> {
      while (running) await running;
    },
    async stop(): Promise<void> {
      stopped = true;
      stopping.abort();
      clearTimeout(timer);
      while (running) await running;
    },
  };
}

export type SlackOutbox = ReturnType<typeof createSlackOutbox>;
