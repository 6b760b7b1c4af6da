-- Attached databases (issue 17, ADR 0031): existing PostgreSQL databases an agent's own config file
-- lists. They are rows of `databases` with kind 'attached' on the reporting agent's node, so that
-- the explorer, governed execution and the audit address them like hosted ones; Bulwark holds no
-- password for them (the agent's host does) and never creates, drops, rotates, backs up or moves
-- them. `attached` holds the agent's last role check: {checked_at, server_version, findings}.
-- Forward-only; every statement is safe to re-run.

ALTER TABLE databases ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'hosted';
ALTER TABLE databases DROP CONSTRAINT IF EXISTS databases_kind_check;
ALTER TABLE databases ADD CONSTRAINT databases_kind_check CHECK (kind IN ('hosted', 'attached'));
ALTER TABLE databases ADD COLUMN IF NOT EXISTS attached jsonb;
ALTER TABLE databases DROP CONSTRAINT IF EXISTS databases_attached_check;
ALTER TABLE databases ADD CONSTRAINT databases_attached_check
  CHECK ((kind = 'attached') = (attached IS NOT NULL) AND (attached IS NULL OR jsonb_typeof(attached) = 'object'));

-- A hosted database that is not deleted has a sealed password; an attached one never has one.
DO $$
DECLARE c text;
BEGIN
  FOR c IN SELECT conname FROM pg_constraint
            WHERE conrelid = 'databases'::regclass AND contype = 'c'
              AND pg_get_constraintdef(oid) LIKE '%password_sealed IS NOT NULL%'
              AND conname <> 'databases_password_check'
  LOOP
    EXECUTE format('ALTER TABLE databases DROP CONSTRAINT %I', c);
  END LOOP;
END $$;
ALTER TABLE databases DROP CONSTRAINT IF EXISTS databases_password_check;
ALTER TABLE databases ADD CONSTRAINT databases_password_check
  CHECK (CASE kind WHEN 'attached' THEN password_sealed IS NULL AND pending_password_sealed IS NULL
                   ELSE status = 'deleted' OR password_sealed IS NOT NULL END);

-- The attached databases of a node (the report replaces them as a whole).
CREATE INDEX IF NOT EXISTS databases_node_attached_idx ON databases (node_id)
  WHERE kind = 'attached' AND deleted_at IS NULL;
