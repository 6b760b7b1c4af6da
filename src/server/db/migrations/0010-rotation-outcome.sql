-- The outcome of a database's latest credentials rotation, so that a rotation that failed and
-- was repaired (the previous password put back on the node) is not mistaken for a completed one.
--   pending          requested; the agent has not reported it yet
--   restoring        the rotation failed; a repair job is re-applying the previous password
--   succeeded        the new password is live
--   failed_restored  the rotation failed; the previous password was restored and still works
--   failed           the rotation failed and the previous password could not be re-applied
--                    (an operator runs `bulwark db rotate` again)
-- NULL = never rotated. Forward-only; every statement is safe to re-run.
ALTER TABLE databases ADD COLUMN IF NOT EXISTS last_rotation_status text
  CHECK (last_rotation_status IN ('pending', 'restoring', 'succeeded', 'failed_restored', 'failed'));
ALTER TABLE databases ADD COLUMN IF NOT EXISTS last_rotation_reason text
  CHECK (char_length(last_rotation_reason) <= 1000);
-- When the rotation was requested (identifies the request a waiting CLI follows).
ALTER TABLE databases ADD COLUMN IF NOT EXISTS last_rotation_requested_at timestamptz;
-- When last_rotation_status last changed.
ALTER TABLE databases ADD COLUMN IF NOT EXISTS last_rotation_at timestamptz;
