-- Governed requests (issue 14): the person behind a request. For a user it is that user; for an API
-- key it is the signed-in user who created the key, or (a key created by a key) the user at the top
-- of its created_by chain; NULL when no person stands behind it (an operator key). Approvals by
-- that person never count: a member cannot approve what their own key asked for. Additive;
-- re-running is harmless; the foreign key has its index.

ALTER TABLE governed_requests
  ADD COLUMN IF NOT EXISTS requester_person_id uuid REFERENCES users (id) ON DELETE SET NULL;
CREATE INDEX IF NOT EXISTS governed_requests_requester_person_idx ON governed_requests (requester_person_id);

-- Requests made before this column: a user's is the user; a key's is found up its chain (bounded).
UPDATE governed_requests SET requester_person_id = requester_user_id
 WHERE requester_person_id IS NULL AND requester_user_id IS NOT NULL;
UPDATE governed_requests g SET requester_person_id = (
    WITH RECURSIVE up (id, parent, person, depth) AS (
      SELECT k.id, k.created_by_key_id, k.created_by_user_id, 0 FROM api_keys k WHERE k.id = g.requester_key_id
      UNION ALL
      SELECT p.id, p.created_by_key_id, p.created_by_user_id, up.depth + 1
        FROM up JOIN api_keys p ON p.id = up.parent
       WHERE up.person IS NULL AND up.depth < 32
    ) SELECT person FROM up WHERE person IS NOT NULL ORDER BY depth LIMIT 1)
 WHERE g.requester_person_id IS NULL AND g.requester_key_id IS NOT NULL;
