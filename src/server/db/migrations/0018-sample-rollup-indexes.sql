-- The roll-up passes (migration 0016) look for samples older than a cut-off and narrower than the
-- span they merge into; on the plain `at` index they would walk past every row already rolled up
-- (most of a week's history) on each pass. These partial indexes hold only the rows still to merge.
-- Forward-only; safe to re-run.
CREATE INDEX IF NOT EXISTS database_samples_raw_at_idx ON database_samples (at) WHERE span_s < 300;
CREATE INDEX IF NOT EXISTS database_samples_unrolled_at_idx ON database_samples (at) WHERE span_s < 1800;
