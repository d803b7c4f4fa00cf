-- True when the projector had to cut a log text to LOG_TEXT_MAX_BYTES: its publisher
-- broke the contract (an old or foreign one; ours truncate before publishing). The text
-- itself carries the visible marker either way.
ALTER TABLE message_logs ADD COLUMN IF NOT EXISTS truncated boolean NOT NULL DEFAULT false;
