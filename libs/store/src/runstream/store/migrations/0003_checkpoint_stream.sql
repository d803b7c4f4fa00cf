-- The checkpoint is a position in one particular stream: record which one (its name and
-- creation time), so a projector never folds a recreated stream as if it were the old one.
ALTER TABLE projection_checkpoints ADD COLUMN IF NOT EXISTS stream text;
ALTER TABLE projection_checkpoints ADD COLUMN IF NOT EXISTS stream_created text;
