import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { requireCaller, requireUser } from '../../http/caller.ts';
import { errorResponses } from '../../http/errors.ts';
import type { RequireStepUp } from '../sessions/step-up.ts';
import type { SlackInteractions } from './slack.interactions.ts';
import {
  putSlackSettingsBody,
  slackLinkCodeSchema,
  slackLinkSchema,
  slackReplySchema,
  slackSettingsSchema,
} from './slack.schemas.ts';
import type { SlackService } from './slack.service.ts';
import { SLACK_BODY_LIMIT } from './slack.signature.ts';

const tags = ['slack'];
const userSession = [{ userSession: [] }];
const noContent = z.null().describe('No content');

const headerOf = (v: string | string[] | undefined) => (typeof v === 'string' ? v : undefined);

/** Slack settings (owners/admins), a person's Slack link, and Slack's signed requests. */
export function slackRoutes(deps: {
  slack: SlackService;
  interactions: SlackInteractions;
  /** A new signing secret, bot token or workspace needs a recent step-up of the session. */
  stepUp: RequireStepUp;
}): FastifyPluginAsyncZod {
  const svc = deps.slack;
  return async (app) => {
    app.get(
      '/v1/integrations/slack',
      {
        config: { action: 'slack.manage' },
        schema: {
          tags,
          summary: "The account's Slack app settings (the bot token and signing secret are never shown)",
          response: { 200: slackSettingsSchema, ...errorResponses },
        },
      },
      async (req) => svc.settings(requireCaller(req)),
    );

    app.put(
      '/v1/integrations/slack',
      {
        config: { action: 'slack.manage' },
        bodyLimit: 4096,
        schema: {
          tags,
          summary:
            'Set the Slack app: workspace (team id), channel, bot token and signing secret (write-only, sealed at rest); fields left out keep their value. Audited without the secrets.',
          description:
            'People only (no API key). A new signing secret, bot token or workspace needs a recent re-authentication of the session (`POST /v1/auth/reauth`), else 403 `reauth_required`; a new signing secret or workspace unlinks every Slack identity linked to the old and the new workspace (people link again).',
          body: putSlackSettingsBody,
          response: { 200: slackSettingsSchema, ...errorResponses },
        },
      },
      async (req) => svc.putSettings(requireCaller(req), req.body, String(req.id), deps.stepUp),
    );

    app.delete(
      '/v1/integrations/slack',
      {
        config: { action: 'slack.manage' },
        schema: {
          tags,
          summary:
            "Remove the account's Slack app settings (nothing more is posted; linked people stay linked)",
          response: { 204: noContent, ...errorResponses },
        },
      },
      async (req, reply) => {
        await svc.deleteSettings(requireCaller(req), String(req.id));
        return reply.status(204).send(null);
      },
    );

    app.post(
      '/v1/me/slack-link',
      {
        config: { action: 'me.write' },
        schema: {
          tags,
          security: userSession,
          summary:
            'A single-use code (10 minutes) to link your Slack identity: send `/bulwark link <code>` in Slack',
          response: { 200: slackLinkCodeSchema, ...errorResponses },
        },
      },
      async (req) => svc.newLinkCode(requireUser(req)),
    );

    app.get(
      '/v1/me/slack-link',
      {
        config: { action: 'me.read' },
        schema: {
          tags,
          security: userSession,
          summary: 'Whether your Slack identity is linked, and to which Slack user',
          response: { 200: slackLinkSchema, ...errorResponses },
        },
      },
      async (req) => svc.link(requireUser(req)),
    );

    app.delete(
      '/v1/me/slack-link',
      {
        config: { action: 'me.write' },
        schema: {
          tags,
          security: userSession,
          summary: 'Unlink your Slack identity (audited)',
          response: { 204: noContent, ...errorResponses },
        },
      },
      async (req, reply) => {
        await svc.unlink(requireUser(req), String(req.id));
        return reply.status(204).send(null);
      },
    );

    // Slack's signed requests: the exact bytes are kept (the signature covers them), on these routes only.
    await app.register(async (signed) => {
      signed.addContentTypeParser(
        'application/x-www-form-urlencoded',
        { parseAs: 'buffer', bodyLimit: SLACK_BODY_LIMIT },
        (_req, body, done) => done(null, body),
      );
      const headers = (h: Record<string, string | string[] | undefined>) => ({
        signature: headerOf(h['x-slack-signature']),
        timestamp: headerOf(h['x-slack-request-timestamp']),
      });
      const description =
        'Called by Slack, not by API clients: application/x-www-form-urlencoded, signed with the app\'s signing secret (`X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:<ts>:<raw body>")>`, `X-Slack-Request-Timestamp` within 5 minutes); anything else is a 401. At most 64 KB.';

      signed.post(
        '/v1/integrations/slack/interactions',
        {
          config: { public: true },
          bodyLimit: SLACK_BODY_LIMIT,
          schema: {
            tags,
            summary: 'Slack interactions (Approve / Reject buttons), verified by signature',
            description,
            consumes: ['application/x-www-form-urlencoded'],
            response: { 200: slackReplySchema, ...errorResponses },
          },
        },
        async (req) => deps.interactions.interaction(req.body, headers(req.headers), req.ip, String(req.id)),
      );

      signed.post(
        '/v1/integrations/slack/commands',
        {
          config: { public: true },
          bodyLimit: SLACK_BODY_LIMIT,
          schema: {
            tags,
            summary: 'Slack slash commands (`/bulwark link <code>`), verified by signature',
            description,
            consumes: ['application/x-www-form-urlencoded'],
            response: { 200: slackReplySchema, ...errorResponses },
          },
        },
        async (req) => deps.interactions.command(req.body, headers(req.headers), String(req.id)),
      );
    });
  };
}
