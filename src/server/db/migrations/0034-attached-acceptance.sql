-- Attached databases wait for their account (issue 17, ADR 0031): a node's agent can offer a
-- database to an account, but nothing is explored or executed on it until an admin of that
-- account accepts it (`attached_accepted_at`); a rejected one is remembered (`attached_rejected_at`
-- on the deleted row), so that node cannot offer that name to that account again.
-- Forward-only; every statement is safe to re-run.

ALTER TABLE databases ADD COLUMN IF NOT EXISTS attached_accepted_at timestamptz;
ALTER TABLE databases ADD COLUMN IF NOT EXISTS attached_accepted_by text
  CHECK (char_length(attached_accepted_by) <= 200);
ALTER TABLE databases ADD COLUMN IF NOT EXISTS attached_rejected_at timestamptz;
ALTER TABLE databases DROP CONSTRAINT IF EXISTS databases_attached_accept_check;
ALTER TABLE databases ADD CONSTRAINT databases_attached_accept_check
  CHECK (kind = 'attached' OR (attached_accepted_at IS NULL AND attached_rejected_at IS NULL));

-- Attached databases registered before acceptance existed were accepted by nobody: they wait too.
UPDATE databases SET status = 'provisioning', failure_reason = NULL, updated_at = now()
 WHERE kind = 'attached' AND attached_accepted_at IS NULL AND deleted_at IS NULL
   AND status IN ('ready', 'failed');

CREATE INDEX IF NOT EXISTS databases_attached_rejected_idx ON databases (account_id, name, node_id)
  WHERE kind = 'attached' AND attached_rejected_at IS NOT NULL;
