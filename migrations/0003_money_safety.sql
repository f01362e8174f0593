-- Money safety (issue "Money safety"): flagged money and its refunds, late-confirmed
-- refunds, per-gateway callback numbers, and the merchant's return URL.

-- The merchant's page to send the member back to after a failure (optional on create).
ALTER TABLE payments ADD COLUMN return_url TEXT;
-- Money the gateway reported taking that the ledger did not accept as the payment (a success
-- after failure, a second charge), held in `suspense` until refunded; and the first reason
-- the payment was flagged for a person.
ALTER TABLE payments ADD COLUMN flagged_amount DECIMAL NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN flag_reason TEXT;
CREATE INDEX idx_payments_flagged ON payments (created_at DESC, id DESC) WHERE flagged_for_refund;

-- The part of a refund that returns flagged money, and whether the gateway confirmed it
-- after the ledger had recorded it as failed.
ALTER TABLE payment_refunds ADD COLUMN from_suspense DECIMAL NOT NULL DEFAULT 0;
ALTER TABLE payment_refunds ADD COLUMN late BOOLEAN NOT NULL DEFAULT false;

-- A gateway's callback_no is unique for that gateway only: two gateways may use one number.
ALTER TABLE payment_callbacks ADD COLUMN gateway TEXT NOT NULL DEFAULT '';
ALTER TABLE payment_callbacks DROP CONSTRAINT payment_callbacks_callback_no_key;
CREATE UNIQUE INDEX payment_callbacks_gateway_callback_no_key
    ON payment_callbacks (gateway, callback_no);
UPDATE payment_callbacks c SET gateway = p.payment_method FROM payments p WHERE p.id = c.payment_id;

-- Claims on callback numbers become per gateway too: the key is `{method}:{callback_no}`.
UPDATE claims c SET key = p.payment_method || ':' || c.key
    FROM payments p WHERE c.scope = 'callback' AND p.id = c.owner;

-- Idempotency answers are written only by the append transaction, complete, together with
-- the events they describe: no row stands for a request still running, so there is no lease
-- to expire and no running request to take over.
DELETE FROM idempotency WHERE status IS NULL OR response IS NULL;
ALTER TABLE idempotency ALTER COLUMN status SET NOT NULL;
ALTER TABLE idempotency ALTER COLUMN response SET NOT NULL;
ALTER TABLE idempotency DROP COLUMN lease_until;

-- The refund driver's schedule: when each refund still processing is next tried and how
-- often it was, so that backoff survives restarts and one slow gateway's refunds never sit
-- at the head of everyone's queue. Operational state of the driver, not derived from the log
-- (a missing row means "due now").
CREATE TABLE refund_schedule (
    refund_id        UUID        PRIMARY KEY,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    attempts         INTEGER     NOT NULL DEFAULT 0,
    last_error       TEXT
);
CREATE INDEX idx_refund_schedule_next ON refund_schedule (next_attempt_at);

-- The expiry driver's schedule for pending payments whose gateway order could not be closed
-- yet (a missing row means "due now").
CREATE TABLE expiry_schedule (
    payment_id       UUID        PRIMARY KEY,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    attempts         INTEGER     NOT NULL DEFAULT 0,
    last_error       TEXT
);

CREATE INDEX idx_payment_refunds_processing ON payment_refunds (created_at) WHERE status = 0;
CREATE INDEX idx_payments_pending ON payments (created_at) WHERE status = 0;

-- Totals from the log find their events by type and time instead of scanning the log.
CREATE INDEX events_type_recorded_at_idx ON events (event_type, recorded_at);

-- Client keys bound to a merchant see only that merchant's payments.
ALTER TABLE payments ADD COLUMN merchant TEXT;
CREATE INDEX idx_payments_merchant_created ON payments (merchant, created_at DESC, id DESC)
    WHERE merchant IS NOT NULL;
