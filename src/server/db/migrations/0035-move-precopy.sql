-- Moves copy first and freeze after (ADR 0031, amended): the source is dumped and restored on the
-- target while it still serves; then its writes stop (`freezing`) and the source's change
-- fingerprint is taken again. Unchanged since the copy: the switch, at once. Changed: the target's
-- copy is dropped and the frozen source is copied again (`copies` = 2). Forward-only; safe to re-run.
ALTER TABLE database_moves ADD COLUMN IF NOT EXISTS precopy_fingerprint text
  CHECK (precopy_fingerprint IS NULL OR precopy_fingerprint ~ '^[0-9a-f]{64}$');
ALTER TABLE database_moves ADD COLUMN IF NOT EXISTS copies smallint NOT NULL DEFAULT 1
  CHECK (copies BETWEEN 1 AND 2);

ALTER TABLE database_moves DROP CONSTRAINT IF EXISTS database_moves_status_check;
ALTER TABLE database_moves ADD CONSTRAINT database_moves_status_check
  CHECK (status IN ('copying', 'restoring', 'freezing', 'switched', 'failed'));

-- One move at a time per database: `freezing` is in flight too.
DROP INDEX IF EXISTS database_moves_active_key;
CREATE UNIQUE INDEX IF NOT EXISTS database_moves_active_key ON database_moves (database_id)
  WHERE status IN ('copying', 'restoring', 'freezing');
