-- The task history archive (docs/storage.md): one row per finished attempt.
-- Primary key: namespace, task id, attempt, finishing time. The attempt alone is not enough:
-- `schedctl requeue` resets a dead task's attempts to 0, so one task can finish twice with the
-- same attempt number (at different times). A stream entry read twice (an archiver that crashed
-- after its insert, before XACK) has the same finishing time, so the second insert is a no-op.
CREATE TABLE task_history (
    namespace    TEXT        NOT NULL,
    task_id      TEXT        NOT NULL,
    attempt      INTEGER     NOT NULL,
    finished_at  TIMESTAMPTZ NOT NULL,
    queue        TEXT        NOT NULL,
    shard        INTEGER     NOT NULL,
    stream_id    TEXT        NOT NULL,
    name         TEXT        NOT NULL,
    state        TEXT        NOT NULL,
    enqueued_at  TIMESTAMPTZ,
    started_at   TIMESTAMPTZ,
    worker       TEXT,
    error        TEXT,
    result       BYTEA,
    args         BYTEA       NOT NULL,
    archived_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (namespace, task_id, attempt, finished_at)
);
CREATE INDEX task_history_finished ON task_history (namespace, finished_at);
CREATE INDEX task_history_name ON task_history (namespace, name, finished_at);
CREATE INDEX task_history_queue ON task_history (namespace, queue, finished_at);
CREATE INDEX task_history_state ON task_history (namespace, state, finished_at);
