const LABELS: Record<string, string> = {
  provisioning: 'Provisioning',
  ready: 'Ready',
  failed: 'Failed',
  deleting: 'Deleting',
  deleted: 'Deleted',
  active: 'Active',
  suspended: 'Suspended',
  revoked: 'Revoked',
  expired: 'Expired',
  disabled: 'Disabled',
  success: 'Success',
  failure: 'Failure',
  denied: 'Denied',
};

/** A status as a word (never colour alone), tinted by a class. */
export function StatusBadge({ status }: { status: string }) {
  return <span className={`badge badge-${status}`}>{LABELS[status] ?? status}</span>;
}
