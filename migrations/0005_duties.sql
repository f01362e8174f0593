-- Leases on the background duties (relay, projector, refund driver, expiry driver): at most
-- one node holds each, and every takeover raises its fencing token. See store/src/leases.rs.
CREATE TABLE duty_leases (
    duty        TEXT        PRIMARY KEY,
    holder      TEXT        NOT NULL,
    token       BIGINT      NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
