import type { AuditEventDraft } from '../audit/audit.service.ts';

/**
 * The audit event of one sign-in attempt, whatever the method (password, OIDC): the user, when
 * known, is both actor and target, so an account's audit listing shows its members' sign-ins.
 */
export function loginAuditEvent(
  method: 'password' | 'oidc',
  client: { sourceIp: string; requestId: string },
  e: { outcome?: AuditEventDraft['outcome']; userId?: string | null; details: Record<string, unknown> },
): AuditEventDraft {
  return {
    action: 'auth.login',
    actorType: 'user',
    actorId: e.userId ?? null,
    targetType: 'user',
    targetId: e.userId ?? null,
    outcome: e.outcome ?? 'success',
    sourceIp: client.sourceIp,
    requestId: client.requestId,
    details: { method, ...e.details },
  };
}
