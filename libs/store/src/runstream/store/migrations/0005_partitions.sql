-- Partitioned projectors (docs/projector.md): each partition's checkpoint keeps, besides
-- its resume point (`seq`, a sequence of the view it reads), the event-stream sequence it
-- covers (`source_seq`). For the single projector both are the same.
ALTER TABLE projection_checkpoints ADD COLUMN IF NOT EXISTS source_seq bigint;
UPDATE projection_checkpoints SET source_seq = seq WHERE source_seq IS NULL;

-- Each partition keeps its own running means (folding stays deterministic per
-- partition); readers combine them as sum(count * mean) / sum(count).
ALTER TABLE step_durations ADD COLUMN IF NOT EXISTS part integer NOT NULL DEFAULT 0;
ALTER TABLE step_durations DROP CONSTRAINT IF EXISTS step_durations_pkey;
ALTER TABLE step_durations ADD PRIMARY KEY (part, step);
