-- SQL explorer (issue 6): the hand-over of query results from the agent to the waiting API
-- request. UNLOGGED: never written to the WAL, emptied by a crash, not replicated — results
-- are not stored. A row lives from the agent's POST until the waiting request reads it
-- (deleted on read); rows nobody read (the request gave up) are swept after 60 s.
-- No foreign key to jobs on purpose: a permanent table's row must not pin ephemeral data.
-- Forward-only; safe to re-run.

CREATE UNLOGGED TABLE IF NOT EXISTS explorer_results (
  job_id      bigint PRIMARY KEY,
  body        bytea NOT NULL,
  expires_at  timestamptz NOT NULL DEFAULT now() + interval '60 seconds'
);

CREATE INDEX IF NOT EXISTS explorer_results_expires_idx ON explorer_results (expires_at);
