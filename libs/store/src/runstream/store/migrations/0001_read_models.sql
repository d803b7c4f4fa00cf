-- Read models folded from the RUNSTREAM stream (DESIGN §3). Written only by the projector.
-- No foreign keys: a stream trimmed by age may hold events whose parent aggregate has
-- expired, and the projector must still fold them.

CREATE TABLE sessions (
    session_id        text PRIMARY KEY,
    owner             text NOT NULL,
    title             text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL,
    status            text NOT NULL DEFAULT 'idle' CHECK (status IN ('idle', 'analyzing')),
    active_message_id text,
    last_activity_at  timestamptz,
    last_settled_at   timestamptz,
    last_read_at      timestamptz,
    has_notification  boolean NOT NULL DEFAULT false,
    last_seq          bigint NOT NULL
);
CREATE INDEX sessions_owner_activity_idx ON sessions (owner, last_activity_at DESC);

CREATE TABLE messages (
    message_id       text PRIMARY KEY,
    session_id       text NOT NULL,
    role             text NOT NULL CHECK (role IN ('user', 'assistant')),
    owner            text NOT NULL DEFAULT '',
    -- assistant: the user message it answers; user: the assistant message that answers it
    user_message_id  text,
    reply_message_id text,
    question         text NOT NULL DEFAULT '',
    content          text,
    status           text NOT NULL CHECK (
        status IN ('pending', 'running', 'completed', 'failed', 'cancelled', 'expired')
    ),
    attempt          integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL,
    -- stream order of creation: seq * 2 for the user message, seq * 2 + 1 for its answer
    sort_key         bigint NOT NULL,
    started_at       timestamptz,
    settled_at       timestamptz,
    summary          text,
    error            jsonb,
    result           jsonb,
    script           jsonb,
    retry_of         text,
    dataset_id       text,
    last_seq         bigint NOT NULL
);
CREATE INDEX messages_session_created_idx ON messages (session_id, created_at);
CREATE INDEX messages_session_sort_idx ON messages (session_id, sort_key);

CREATE TABLE message_logs (
    message_id text NOT NULL,
    seq        bigint NOT NULL,
    event_id   text NOT NULL UNIQUE,
    session_id text NOT NULL,
    at         timestamptz NOT NULL,
    level      text NOT NULL,
    text       text NOT NULL,
    step       text,
    PRIMARY KEY (message_id, seq)
);

CREATE TABLE message_steps (
    message_id   text NOT NULL,
    step         text NOT NULL,
    session_id   text NOT NULL,
    idx          integer NOT NULL DEFAULT 0,
    total        integer NOT NULL DEFAULT 0,
    status       text NOT NULL CHECK (
        status IN ('pending', 'running', 'completed', 'failed', 'cancelled')
    ),
    progress     double precision NOT NULL DEFAULT 0,
    detail       text NOT NULL DEFAULT '',
    attempt      integer NOT NULL DEFAULT 1,
    started_at   timestamptz,
    ended_at     timestamptz,
    duration_ms  bigint,
    error        text,
    error_code   text,
    eta_ms       bigint,
    -- whether this (message, step) already fed step_durations (exactly once)
    mean_counted boolean NOT NULL DEFAULT false,
    last_seq     bigint NOT NULL,
    PRIMARY KEY (message_id, step)
);

CREATE TABLE step_durations (
    step    text PRIMARY KEY,
    count   bigint NOT NULL,
    mean_ms double precision NOT NULL
);

CREATE TABLE session_locks (
    session_id  text PRIMARY KEY,
    message_id  text NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

CREATE TABLE datasets (
    dataset_id  text PRIMARY KEY,
    session_id  text NOT NULL,
    name        text NOT NULL,
    format      text NOT NULL,
    object_name text NOT NULL,
    table_name  text NOT NULL DEFAULT 'data',
    size_bytes  bigint NOT NULL,
    row_count   bigint NOT NULL,
    columns     jsonb NOT NULL,
    sample_rows jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    last_seq    bigint NOT NULL
);
CREATE INDEX datasets_session_idx ON datasets (session_id, created_at);

CREATE TABLE chart_tasks (
    task_id          text PRIMARY KEY,
    message_id       text NOT NULL,
    session_id       text NOT NULL,
    owner            text NOT NULL DEFAULT '',
    status           text NOT NULL CHECK (
        status IN ('pending', 'running', 'completed', 'failed', 'cancelled')
    ),
    progress         double precision NOT NULL DEFAULT 0,
    current_step     text,
    step_progress    double precision NOT NULL DEFAULT 0,
    eta_ms           bigint,
    adjustment_query text,
    force_create     boolean NOT NULL DEFAULT false,
    auto             boolean NOT NULL DEFAULT false,
    cancel_requested boolean NOT NULL DEFAULT false,
    error            text,
    error_code       text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    last_seq         bigint NOT NULL
);
CREATE INDEX chart_tasks_message_idx ON chart_tasks (message_id, created_at);

CREATE TABLE charts (
    chart_id    text PRIMARY KEY,
    task_id     text NOT NULL,
    message_id  text NOT NULL,
    session_id  text NOT NULL,
    kind        text NOT NULL,
    title       text NOT NULL DEFAULT '',
    spec        jsonb,
    svg         text,
    duration_ms bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL,
    seq         bigint NOT NULL
);
CREATE INDEX charts_message_idx ON charts (message_id, seq);

CREATE TABLE dead_letters (
    seq        bigint PRIMARY KEY,  -- stream sequence of the analysis_settled that reported it
    message_id text NOT NULL,
    session_id text NOT NULL,
    consumer   text NOT NULL,
    stream_seq bigint NOT NULL,
    deliveries integer NOT NULL,
    subject    text NOT NULL,
    reason     text NOT NULL,
    at         timestamptz NOT NULL
);
CREATE INDEX dead_letters_at_idx ON dead_letters (at DESC);

CREATE TABLE projection_checkpoints (
    name text PRIMARY KEY,
    seq  bigint NOT NULL
);

CREATE TABLE poison_events (
    seq     bigint PRIMARY KEY,
    subject text NOT NULL,
    data    bytea NOT NULL,
    error   text NOT NULL,
    -- the only wall-clock column: when the projector met the event
    at      timestamptz NOT NULL DEFAULT now()
);
