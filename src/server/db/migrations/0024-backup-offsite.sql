-- Off-site copies of backups (issue 15): the object key the agent reported (ids only, never a
-- database name) and when a drill last read the off-site copy whole and verified it.
ALTER TABLE backups ADD COLUMN IF NOT EXISTS offsite_key text CHECK (char_length(offsite_key) <= 1100);
ALTER TABLE backups ADD COLUMN IF NOT EXISTS offsite_verified_at timestamptz;
