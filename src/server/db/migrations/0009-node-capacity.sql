-- Node connection capacity: what the agent reports about its cluster (heartbeat). The server
-- derives the node's tenant connection budget from it (max_connections minus the slots
-- PostgreSQL keeps for superusers and the platform's reserve) and refuses a database or a
-- limits change that would commit more tenant connections than that. NULL = not reported yet.
-- Forward-only; every statement is safe to re-run.
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS max_connections integer
  CHECK (max_connections BETWEEN 1 AND 262143);
-- superuser_reserved_connections + reserved_connections (PostgreSQL 16+): slots no tenant gets.
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS reserved_connections integer
  CHECK (reserved_connections BETWEEN 0 AND 262143);
-- A cut of a database's connection limits does not end the sessions opened under the old limit
-- (PostgreSQL checks CONNECTION LIMIT at login only): the old total stays committed on the node
-- until a credentials rotation queued after the cut has terminated the owner's sessions (or the
-- database is deleted). NULL = nothing held beyond the limits.
ALTER TABLE databases ADD COLUMN IF NOT EXISTS connections_held integer
  CHECK (connections_held >= 0);
-- The database.limits job of the cut that set connections_held (a rotation after it releases it).
ALTER TABLE databases ADD COLUMN IF NOT EXISTS connections_held_job bigint;
