-- The stream position of a message's one terminal event: a message's stream ends there,
-- so a client whose cursor is past it is told the story is over.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS settled_seq bigint;
