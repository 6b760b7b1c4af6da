/**
 * Slack's request signing (https://api.slack.com/authentication/verifying-requests-from-slack):
 * `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:<timestamp>:<raw body>")>` with
 * `X-Slack-Request-Timestamp` (unix seconds). Checked over the exact bytes received, in constant
 * time, and only within 5 minutes of now in either direction (a replayed request is stale).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SLACK_MAX_SKEW_S = 300;
/** Slack's payloads are small; anything larger is refused before it is read whole. */
export const SLACK_BODY_LIMIT = 64 * 1024;

const SIGNATURE = /^v0=([0-9a-f]{64})$/;
const TIMESTAMP = /^[0-9]{1,12}$/;

/** The signature Slack would send for this body (tests sign with it too). */
export function slackSignature(signingSecret: string, timestamp: string, rawBody: Buffer | string): string {
  const mac = createHmac('sha256', signingSecret);
  mac.update(`v0:${timestamp}:`);
  mac.update(rawBody);
  return `v0=${mac.digest('hex')}`;
}

export type SignatureHeaders = { signature: string | undefined; timestamp: string | undefined };

/** True when the headers are well formed, the timestamp is fresh and the signature matches. */
export function verifySlackSignature(
  signingSecret: string,
  headers: SignatureHeaders,
  rawBody: Buffer,
  nowMs: number = Date.now(),
): boolean {
  const { signature, timestamp } = headers;
  if (typeof signature !== 'string' || typeof timestamp !== 'string') return false;
  if (!TIMESTAMP.test(timestamp)) return false;
  if (Math.abs(nowMs / 1000 - Number(timestamp)) > SLACK_MAX_SKEW_S) return false;
  const given = SIGNATURE.exec(signature);
  if (!given) return false;
  const expected = Buffer.from(slackSignature(signingSecret, timestamp, rawBody).slice(3), 'hex');
  return timingSafeEqual(expected, Buffer.from(given[1]!, 'hex'));
}
