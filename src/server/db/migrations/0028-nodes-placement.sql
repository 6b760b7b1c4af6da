-- More than one node (issue 17): where a node's PgBouncer is reached (its agent reports it at
-- enrollment and on every heartbeat; connection info names it), a cordon (no new databases are
-- placed there), health (marked unhealthy once its heartbeat is older than the server's threshold,
-- cleared on recovery; each change an audit event and an event_outbox alert) and decommission.
-- Expired enrollments are swept by the server (audited): an index on their expiry.
-- Forward-only; every statement is safe to re-run.
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS pooler_host text
  CHECK (char_length(pooler_host) BETWEEN 1 AND 255);
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS pooler_port integer
  CHECK (pooler_port BETWEEN 1 AND 65535);
-- NULL: not cordoned. Set by a platform admin; new databases avoid the node (explicit ones: 409).
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS cordoned_at timestamptz;
-- NULL: healthy (or never judged). Set by the server's health sweep when the heartbeat is stale.
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS unhealthy_since timestamptz;
-- Set with status 'disabled' when a node without databases is decommissioned (its token is gone).
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS decommissioned_at timestamptz;
CREATE INDEX IF NOT EXISTS node_enrollments_expires_idx ON node_enrollments (expires_at);
