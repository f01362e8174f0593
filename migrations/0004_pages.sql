-- The people's pages (issue 12): staff console sessions and the sign-in throttle. Both are
-- request bookkeeping shared by every node, like nonces; neither is derived from the log.

-- A staff member signed in to the console. The browser holds a random token in an HttpOnly
-- cookie; only its SHA-256 is kept here, so a copy of this table signs nobody in. Signing out
-- deletes the row, so it ends the session on every node at once.
CREATE TABLE console_sessions (
    -- Lowercase hex SHA-256 of the cookie's token.
    token_hash    TEXT        PRIMARY KEY,
    key_id        TEXT        NOT NULL,
    -- The key's role at sign-in; every request also checks the key still has it.
    role          TEXT        NOT NULL,
    -- Sent back by the page in X-CSRF-Token on every state-changing request.
    csrf_token    TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    -- Slides forward on every request: the idle timeout counts from here.
    last_seen_at  TIMESTAMPTZ NOT NULL,
    -- The absolute end, whatever the activity.
    expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_key_id_idx ON console_sessions (key_id, created_at);
CREATE INDEX console_sessions_expires_at_idx ON console_sessions (expires_at);

-- Failed console sign-ins, counted per key id and per client address over a sliding window
-- to refuse guessing; kept only as long as the window.
CREATE TABLE console_signin_failures (
    id         BIGSERIAL   PRIMARY KEY,
    key_id     TEXT        NOT NULL,
    client_ip  TEXT,
    failed_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_signin_failures_key_idx ON console_signin_failures (key_id, failed_at);
CREATE INDEX console_signin_failures_ip_idx ON console_signin_failures (client_ip, failed_at);
CREATE INDEX console_signin_failures_at_idx ON console_signin_failures (failed_at);
