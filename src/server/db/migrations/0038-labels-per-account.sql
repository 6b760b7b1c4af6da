-- Labels are unique per account only (issue 16, ADR 0038): two accounts' databases may carry the same
-- label on one node, so that no create's answer tells one account that another uses a name there.
-- Names on the node stay unique (databases_node_physical_key, migration 0036): a create whose label
-- is some database's name on the node gets a generated one. Forward-only; safe to re-run.
DROP INDEX IF EXISTS databases_node_name_key;
