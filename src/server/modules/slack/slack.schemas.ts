import { z } from 'zod';

/** Slack ids (team T…, channel C…/G…, user U…/W…): upper-case letters and digits. */
const slackId = z.string().regex(/^[A-Z0-9]{1,32}$/, 'must be a Slack id (upper-case letters and digits)');

export const slackSettingsSchema = z.object({
  enabled: z.boolean(),
  team_id: z.string().max(32).nullable(),
  channel_id: z.string().max(32).nullable(),
  bot_token_set: z.boolean(),
  signing_secret_set: z.boolean(),
  updated_at: z.string().max(40).nullable(),
});
export type SlackSettingsView = z.infer<typeof slackSettingsSchema>;

export const putSlackSettingsBody = z
  .object({
    enabled: z.boolean().optional(),
    team_id: slackId.nullable().optional(),
    channel_id: slackId.nullable().optional(),
    /** Write-only: sealed at rest, never shown again. */
    // The lengths are in the patterns (a generator from the document then makes valid values at once).
    bot_token: z
      .string()
      .max(512)
      .regex(/^xox[a-z]-[A-Za-z0-9-]{6,500}$/, 'must be a Slack bot token (xoxb-…)')
      .optional(),
    signing_secret: z
      .string()
      .max(128)
      .regex(/^[A-Za-z0-9]{16,128}$/, 'must be a Slack signing secret (16 to 128 letters and digits)')
      .optional(),
  })
  .strict();
export type PutSlackSettings = z.infer<typeof putSlackSettingsBody>;

export const slackLinkCodeSchema = z.object({
  code: z.string().max(64),
  expires_at: z.string().max(40),
});

export const slackLinkSchema = z.object({
  linked: z.boolean(),
  slack_user_id: z.string().max(32).nullable(),
  team_id: z.string().max(32).nullable(),
});

/** What Bulwark answers Slack: the text shown to the user (ephemeral). */
export const slackReplySchema = z.object({
  response_type: z.literal('ephemeral'),
  text: z.string().max(2000),
});

// --- Slack's payloads (read only after the signature is verified) -----------------------------

/** An interaction (a button press), the `payload` field of the form Slack posts. */
export const interactionPayload = z.object({
  type: z.string().max(64),
  team: z.object({ id: slackId }).passthrough(),
  user: z.object({ id: slackId }).passthrough(),
  channel: z.object({ id: slackId }).passthrough().optional(),
  actions: z
    .array(
      z
        .object({
          action_id: z.string().max(255),
          value: z.string().max(2000).optional(),
        })
        .passthrough(),
    )
    .max(10)
    .optional(),
});
export type InteractionPayload = z.infer<typeof interactionPayload>;

/** A slash command's form fields. */
export const commandForm = z.object({
  team_id: slackId,
  user_id: slackId,
  channel_id: slackId.optional(),
  command: z.string().max(64),
  text: z.string().max(2000).default(''),
});
export type CommandForm = z.infer<typeof commandForm>;
