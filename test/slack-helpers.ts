/**
 * Slack in the tests, without a Slack account: a local HTTP receiver playing Slack's Web API
 * (records every call, answers `ok` with a message ts), and requests signed the way Slack signs
 * them (the signing secret is the test's).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { LightMyRequestResponse } from 'fastify';
import { slackSignature } from '../src/server/modules/slack/slack.signature.ts';
import type { TestServer } from './helpers/server.ts';

export type SlackCall = { method: string; authorization: string | undefined; body: Record<string, unknown> };

export async function startSlackReceiver(): Promise<{
  url: string;
  calls: SlackCall[];
  /** The next answers: an HTTP status, or Slack's `{ok: false, error}`. */
  failNext(answers: (number | string)[]): void;
  close(): Promise<void>;
}> {
  const calls: SlackCall[] = [];
  const failures: (number | string)[] = [];
  let seq = 0;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      } catch {}
      calls.push({
        method: (req.url ?? '').replace(/^\/api\//, ''),
        authorization: req.headers.authorization,
        body,
      });
      res.setHeader('content-type', 'application/json');
      const fail = failures.shift();
      if (typeof fail === 'number') res.statusCode = fail;
      if (fail !== undefined) {
        res.end(typeof fail === 'number' ? '{}' : JSON.stringify({ ok: false, error: fail }));
        return;
      }
      res.end(
        JSON.stringify({
          ok: true,
          ts: `1700000000.${String(++seq).padStart(6, '0')}`,
          channel: body.channel,
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/api`,
    calls,
    failNext: (answers) => failures.push(...answers),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export const nowTs = () => String(Math.floor(Date.now() / 1000));

/** Posts a form to a Slack route, signed with `secret` (or with the headers given). */
export function postSigned(
  s: Pick<TestServer, 'app'>,
  path: 'interactions' | 'commands',
  form: Record<string, string>,
  o: { secret: string; ts?: string; headers?: Record<string, string>; raw?: string },
): Promise<LightMyRequestResponse> {
  const raw = o.raw ?? new URLSearchParams(form).toString();
  const ts = o.ts ?? nowTs();
  return s.app.inject({
    method: 'POST',
    url: `/v1/integrations/slack/${path}`,
    headers: o.headers ?? {
      'content-type': 'application/x-www-form-urlencoded',
      'x-slack-request-timestamp': ts,
      'x-slack-signature': slackSignature(o.secret, ts, raw),
    },
    payload: raw,
  });
}

/** A button press on a request's message, as Slack posts it. */
export function buttonPress(o: {
  team: string;
  user: string;
  userTeam?: string;
  action: string;
  value: string;
  channel?: string;
}): Record<string, string> {
  return {
    payload: JSON.stringify({
      type: 'block_actions',
      team: { id: o.team, domain: 'acme' },
      user: { id: o.user, username: 'someone', team_id: o.userTeam ?? o.team },
      channel: { id: o.channel ?? 'C0APPROVALS' },
      actions: [{ action_id: o.action, value: o.value, block_id: 'bulwark_decision', type: 'button' }],
      response_url: 'https://hooks.slack.invalid/actions/x',
    }),
  };
}

export function slashCommand(o: { team: string; user: string; text: string }): Record<string, string> {
  return {
    token: 'deprecated-verification-token',
    team_id: o.team,
    team_domain: 'acme',
    channel_id: 'C0APPROVALS',
    user_id: o.user,
    user_name: 'someone',
    command: '/bulwark',
    text: o.text,
    response_url: 'https://hooks.slack.invalid/commands/x',
  };
}
