-- Moving a database between nodes, and draining a node (issue 17, ADR 0031). A move is a
-- dump at the source under a write freeze and a restore at the target (the backup pipeline),
-- then the switch of `databases.node_id`. Forward-only; every statement is safe to re-run.

-- A database being moved is `moving`: nothing else changes it (rotation, allowlist, limits,
-- delete refuse) until the move switched it or gave it back to its source.
ALTER TABLE databases DROP CONSTRAINT IF EXISTS databases_status_check;
ALTER TABLE databases ADD CONSTRAINT databases_status_check
  CHECK (status IN ('provisioning', 'ready', 'failed', 'deleting', 'deleted', 'moving'));

CREATE TABLE IF NOT EXISTS node_drains (
  id            uuid PRIMARY KEY,
  node_id       uuid NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
  status        text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
  error         text CHECK (char_length(error) <= 1000),
  created_at    timestamptz NOT NULL DEFAULT now(),
  finished_at   timestamptz,
  CHECK ((status = 'running') = (finished_at IS NULL))
);
-- One drain at a time per node.
CREATE UNIQUE INDEX IF NOT EXISTS node_drains_running_key ON node_drains (node_id) WHERE status = 'running';

CREATE TABLE IF NOT EXISTS database_moves (
  id              uuid PRIMARY KEY,
  account_id      uuid NOT NULL REFERENCES accounts (id) ON DELETE RESTRICT,
  database_id     uuid NOT NULL REFERENCES databases (id) ON DELETE RESTRICT,
  source_node_id  uuid NOT NULL REFERENCES nodes (id) ON DELETE RESTRICT,
  target_node_id  uuid NOT NULL REFERENCES nodes (id) ON DELETE RESTRICT,
  drain_id        uuid REFERENCES node_drains (id) ON DELETE SET NULL,
  -- copying: the source freezes and dumps; restoring: the target restores and proves a login;
  -- switched: the database is on the target (the source copy is dropped by a cleanup job);
  -- failed: the source serves again and the target's copy is dropped.
  status          text NOT NULL DEFAULT 'copying'
                  CHECK (status IN ('copying', 'restoring', 'switched', 'failed')),
  -- The archive's own data key, sealed with the server's secret box (context `move-key:<id>`).
  wrapped_key     text NOT NULL CHECK (char_length(wrapped_key) <= 512),
  -- What the dump held (the target's restore is checked against it).
  manifest        jsonb CHECK (manifest IS NULL OR jsonb_typeof(manifest) = 'object'),
  size_bytes      bigint CHECK (size_bytes >= 0),
  error           text CHECK (char_length(error) <= 1000),
  frozen_at       timestamptz,
  -- From the freeze at the source to the switch (writes were refused all that time).
  freeze_ms       bigint CHECK (freeze_ms >= 0),
  duration_ms     bigint CHECK (duration_ms >= 0),
  created_at      timestamptz NOT NULL DEFAULT now(),
  finished_at     timestamptz,
  CHECK ((status IN ('switched', 'failed')) = (finished_at IS NOT NULL)),
  CHECK (source_node_id <> target_node_id)
);
-- One move at a time per database.
CREATE UNIQUE INDEX IF NOT EXISTS database_moves_active_key ON database_moves (database_id)
  WHERE status IN ('copying', 'restoring');
CREATE INDEX IF NOT EXISTS database_moves_database_idx ON database_moves (database_id, created_at DESC);
CREATE INDEX IF NOT EXISTS database_moves_drain_idx ON database_moves (drain_id) WHERE drain_id IS NOT NULL;
