-- Read models (CQRS query side), built only by the projections in projections/.
-- The seed schema is kept (names, status codes, indexes) and extended; ids are UUIDs taken
-- from the events so that a rebuild from the log reproduces them exactly.

CREATE TABLE payments (
    id                 UUID PRIMARY KEY,
    order_id           TEXT          NOT NULL,
    payment_no         VARCHAR(50)   NOT NULL UNIQUE,
    payment_method     VARCHAR(20)   NOT NULL,
    amount             DECIMAL       NOT NULL,
    status             INT           NOT NULL DEFAULT 0,
    payment_time       TIMESTAMPTZ,
    refund_time        TIMESTAMPTZ,
    created_at         TIMESTAMPTZ   NOT NULL,
    updated_at         TIMESTAMPTZ   NOT NULL,
    -- Extensions the API needs.
    currency           CHAR(3)       NOT NULL,
    user_id            TEXT          NOT NULL,
    refunded_amount    DECIMAL       NOT NULL DEFAULT 0,
    payment_url        TEXT          NOT NULL,
    gateway_trade_no   TEXT,
    failure_reason     TEXT,
    flagged_for_refund BOOLEAN       NOT NULL DEFAULT false,
    payer_name         TEXT,
    payer_account      TEXT,
    -- Stream version and log position of the last event applied (idempotent re-application).
    last_version       INT           NOT NULL,
    last_position      BIGINT        NOT NULL
);
CREATE INDEX idx_payments_order_id ON payments (order_id);
CREATE INDEX idx_payments_payment_method ON payments (payment_method);
CREATE INDEX idx_payments_status ON payments (status);
CREATE INDEX idx_payments_created_at ON payments (created_at);
CREATE INDEX idx_payments_user_created ON payments (user_id, created_at DESC, id DESC);
CREATE INDEX idx_payments_created_id ON payments (created_at DESC, id DESC);

CREATE TABLE payment_callbacks (
    id                UUID PRIMARY KEY,
    payment_id        UUID          NOT NULL,
    callback_no       VARCHAR(100)  NOT NULL UNIQUE,
    status            INT           NOT NULL,
    created_at        TIMESTAMPTZ   NOT NULL,
    updated_at        TIMESTAMPTZ   NOT NULL,
    outcome           TEXT          NOT NULL,
    amount            DECIMAL       NOT NULL,
    gateway_trade_no  TEXT          NOT NULL,
    refund_no         TEXT,
    reason            TEXT,
    flagged_for_refund BOOLEAN      NOT NULL DEFAULT false,
    position          BIGINT        NOT NULL
);
CREATE INDEX idx_payment_callbacks_payment_id ON payment_callbacks (payment_id);
CREATE INDEX idx_payment_callbacks_status ON payment_callbacks (status);
CREATE INDEX idx_payment_callbacks_created_at ON payment_callbacks (created_at);

CREATE TABLE payment_refunds (
    id           UUID PRIMARY KEY,
    payment_id   UUID          NOT NULL,
    refund_no    VARCHAR(50)   NOT NULL UNIQUE,
    amount       DECIMAL       NOT NULL,
    reason       VARCHAR(255),
    status       INT           NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ   NOT NULL,
    updated_at   TIMESTAMPTZ   NOT NULL,
    currency     CHAR(3)       NOT NULL,
    failure_reason TEXT,
    last_position BIGINT       NOT NULL
);
CREATE INDEX idx_payment_refunds_payment_id ON payment_refunds (payment_id);
CREATE INDEX idx_payment_refunds_status ON payment_refunds (status);
CREATE INDEX idx_payment_refunds_created_at ON payment_refunds (created_at);

-- Double-entry postings: every paid and refunded event posts lines that sum to zero per
-- currency (debits positive, credits negative). See README "Chart of accounts".
CREATE TABLE ledger_entries (
    event_id     UUID          NOT NULL,
    line         SMALLINT      NOT NULL,
    position     BIGINT        NOT NULL,
    payment_id   UUID          NOT NULL,
    account      TEXT          NOT NULL,
    currency     CHAR(3)       NOT NULL,
    amount       DECIMAL       NOT NULL,
    entry_type   TEXT          NOT NULL,
    recorded_at  TIMESTAMPTZ   NOT NULL,
    PRIMARY KEY (event_id, line)
);
CREATE INDEX idx_ledger_entries_currency_time ON ledger_entries (currency, recorded_at);
CREATE INDEX idx_ledger_entries_payment ON ledger_entries (payment_id);
