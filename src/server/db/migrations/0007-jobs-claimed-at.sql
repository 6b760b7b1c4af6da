-- When the current attempt was claimed: the agent's wake-up latency (claimed_at - created_at
-- for a first attempt) and how long a job has been running are visible per job.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS claimed_at timestamptz;
