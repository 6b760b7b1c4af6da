-- Rolled-up samples (ADR 0017): past an hour, a database's samples are merged into 5-minute
-- maxima, past a day into 30-minute maxima, so a week of history is ~700 rows per database
-- instead of ~10,000 (the 24 h and 7 d charts draw per-bucket maxima of 288 s and 2016 s: they
-- look the same). `span_s` is the width a row stands for: 0 for a raw sample.
-- Forward-only; safe to re-run.
ALTER TABLE database_samples
  ADD COLUMN IF NOT EXISTS span_s integer NOT NULL DEFAULT 0 CHECK (span_s >= 0);
