-- Reserved databases (issue 16, ADR 0037): the control plane keeps a few databases per node made
-- and ready ahead of any request, owned by no account (account_id NULL: no tenant query, which
-- always names an account, can match one). A create takes one in its own transaction: the row
-- gets the account, the label and its timestamps; id, node, physical name and sealed password stay.
-- Forward-only; every statement is safe to re-run.
ALTER TABLE databases ALTER COLUMN account_id DROP NOT NULL;
ALTER TABLE databases DROP CONSTRAINT IF EXISTS databases_reserved_check;
ALTER TABLE databases ADD CONSTRAINT databases_reserved_check
  CHECK (account_id IS NOT NULL OR kind = 'hosted');
CREATE INDEX IF NOT EXISTS databases_reserved_idx ON databases (node_id, ready_at)
  WHERE account_id IS NULL AND deleted_at IS NULL;
