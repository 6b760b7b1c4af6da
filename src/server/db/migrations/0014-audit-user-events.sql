-- Events about a person that belong to no one account (sign-in, failed sign-in, session issued,
-- logout, refresh reuse, a platform admin's suspension) are shown to each account the person is a
-- member of: these indexes find them by user, newest first. Forward-only; safe to re-run.
CREATE INDEX IF NOT EXISTS audit_events_user_actor_idx ON audit_events (actor_id, id)
  WHERE account_id IS NULL AND actor_type = 'user';
CREATE INDEX IF NOT EXISTS audit_events_user_target_idx ON audit_events (target_id, id)
  WHERE account_id IS NULL AND target_type = 'user';
