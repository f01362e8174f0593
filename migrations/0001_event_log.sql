-- The event log: the single source of truth. Everything else in this database can be
-- rebuilt from it.

CREATE TABLE events (
    -- Dense, strictly increasing in commit order: assigned under the append lock (see
    -- src/store/writer.rs), so a reader following positions never skips a row.
    position     BIGINT      PRIMARY KEY CHECK (position > 0),
    event_id     UUID        NOT NULL UNIQUE,
    stream_id    UUID        NOT NULL,
    version      INTEGER     NOT NULL CHECK (version > 0),
    event_type   TEXT        NOT NULL,
    data         JSONB       NOT NULL,
    metadata     JSONB       NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL,
    -- The previous event's hash in the same stream; 64 zeros for a stream's first event.
    prev_hash    TEXT        NOT NULL,
    -- Lowercase hex SHA-256 of `canonical`.
    hash         TEXT        NOT NULL,
    -- The exact bytes that `hash` covers, stored verbatim so that re-serialising jsonb can
    -- never make an honest log look tampered.
    canonical    TEXT        NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

CREATE INDEX events_recorded_at_idx ON events (recorded_at);

-- The log is immutable: the database itself refuses to change or remove history.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_no_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

-- Write-side uniqueness that spans streams (an order's one live payment, a gateway's
-- callback_no). Rows are inserted and deleted in the same transaction as the events that
-- imply them, so they always agree with the log.
CREATE TABLE claims (
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    owner      UUID NOT NULL,
    PRIMARY KEY (scope, key)
);

-- Anti-replay nonces, per key id, kept for at least twice the timestamp window.
CREATE TABLE nonces (
    key_id      TEXT        NOT NULL,
    nonce       TEXT        NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX nonces_expires_at_idx ON nonces (expires_at);

-- Idempotency keys, per key id and route, kept 24 h. A row without a response is a request
-- still running (its lease says until when another may take over).
CREATE TABLE idempotency (
    key_id        TEXT        NOT NULL,
    route         TEXT        NOT NULL,
    idem_key      TEXT        NOT NULL,
    request_hash  TEXT        NOT NULL,
    status        SMALLINT,
    response      TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (key_id, route, idem_key)
);
CREATE INDEX idempotency_created_at_idx ON idempotency (created_at);

-- Where each follower of the log (relay, projections) has got to.
CREATE TABLE checkpoints (
    name        TEXT        PRIMARY KEY,
    position    BIGINT      NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Per-user data keys for payer data, wrapped by the master key. Deleting the key
-- (crypto-shredding) makes that user's sealed payer data unreadable forever.
CREATE TABLE user_keys (
    user_id      TEXT        PRIMARY KEY,
    wrapped_key  BYTEA,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    shredded_at  TIMESTAMPTZ
);
