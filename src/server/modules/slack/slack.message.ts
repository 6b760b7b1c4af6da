/**
 * The Slack message of a governed request (Block Kit): the SQL redacted (literals → `?`, the raw
 * SQL never leaves), its class, findings, requester, database, the approvals it needs, and the
 * Approve / Reject buttons, whose values carry the request id only. Once decided, the same
 * message without buttons and with the outcome.
 */
import { redactSql } from '../../../shared/sql/explorer-validator.ts';
import type { RequestRow } from '../requests/requests.repo.ts';

export const APPROVE_ACTION = 'bulwark_approve';
export const REJECT_ACTION = 'bulwark_reject';

const SECTION_MAX = 2900;

/** Slack mrkdwn: &, < and > are escaped; nothing a user typed becomes a link or a mention. */
export function escapeMrkdwn(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

const clip = (text: string, max: number) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

type Finding = { code?: unknown; severity?: unknown; message?: unknown };

/** What the message says about the request (text fallback and blocks). */
export function requestMessage(row: RequestRow): { text: string; blocks: unknown[] } {
  const what =
    row.kind === 'sql'
      ? `\`\`\`${clip(escapeMrkdwn(redactSql(row.sql ?? '')).replace(/```/g, "'''"), SECTION_MAX - 8)}\`\`\``
      : `Time-boxed *${row.access_role ?? row.capability}* access for ${row.access_duration_s ?? 0} s`;
  const findings = (row.findings as Finding[])
    .slice(0, 10)
    .map(
      (f) =>
        `• ${escapeMrkdwn(String(f.severity ?? ''))} ${escapeMrkdwn(String(f.code ?? ''))}: ${escapeMrkdwn(String(f.message ?? ''))}`,
    )
    .join('\n');
  const needs =
    row.policy.admin_approvals_required > 0
      ? `${row.policy.approvals_required} approval(s), ${row.policy.admin_approvals_required} by an owner or admin`
      : `${row.policy.approvals_required} approval(s)`;
  const summary = `Request on *${escapeMrkdwn(row.database)}* by *${escapeMrkdwn(row.requester_name)}* — ${escapeMrkdwn(row.class)}, needs ${needs}`;
  const blocks: unknown[] = [
    { type: 'section', text: { type: 'mrkdwn', text: clip(summary, SECTION_MAX) } },
    { type: 'section', text: { type: 'mrkdwn', text: what } },
    {
      type: 'context',
      elements: [{ type: 'mrkdwn', text: clip(`Reason: ${escapeMrkdwn(row.reason)}`, SECTION_MAX) }],
    },
  ];
  if (findings)
    blocks.push({
      type: 'section',
      text: { type: 'mrkdwn', text: clip(`Findings:\n${findings}`, SECTION_MAX) },
    });
  if (row.status === 'pending') {
    blocks.push({
      type: 'actions',
      block_id: 'bulwark_decision',
      elements: [
        {
          type: 'button',
          action_id: APPROVE_ACTION,
          style: 'primary',
          text: { type: 'plain_text', text: 'Approve' },
          value: row.id,
        },
        {
          type: 'button',
          action_id: REJECT_ACTION,
          style: 'danger',
          text: { type: 'plain_text', text: 'Reject' },
          value: row.id,
        },
      ],
    });
  } else {
    const by = row.status === 'rejected' && row.rejection ? ` by ${escapeMrkdwn(row.rejection.name)}` : '';
    blocks.push({ type: 'context', elements: [{ type: 'mrkdwn', text: `*${row.status}*${by}` }] });
  }
  return { text: `Bulwark: request on ${row.database} (${row.class}) is ${row.status}`, blocks };
}
