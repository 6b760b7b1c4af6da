-- Every foreign key has an index (a delete of the referenced row must not scan the table):
-- database_moves' account and its source and target nodes.
CREATE INDEX IF NOT EXISTS database_moves_account_idx ON database_moves (account_id);
CREATE INDEX IF NOT EXISTS database_moves_source_node_idx ON database_moves (source_node_id);
CREATE INDEX IF NOT EXISTS database_moves_target_node_idx ON database_moves (target_node_id);
