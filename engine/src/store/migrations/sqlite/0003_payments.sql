-- Payments through gateway plugins, the callbacks they received, refunds.

CREATE TABLE payments (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    gateway         TEXT NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('new', 'pending', 'paid', 'failed', 'canceled', 'expired')),
    gateway_ref     TEXT,
    -- An unpaid order this payment is for (its money lands on the balance
    -- first, then pays the order).
    service_id      TEXT REFERENCES services (id),
    description     TEXT NOT NULL,
    refunded_amount BIGINT NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
    checkout        TEXT, -- JSON: what the payer is shown
    last_error      TEXT,
    -- "{api key id}:{Idempotency-Key}" of the request that created it.
    request_key     TEXT NOT NULL UNIQUE,
    request_hash    TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    paid_at         BIGINT,
    UNIQUE (gateway, gateway_ref)
);
CREATE INDEX payments_by_account ON payments (account_id, id);
CREATE INDEX payments_by_status ON payments (status, created_at);

-- Every gateway event applied, once: a repeated delivery finds its row.
CREATE TABLE payment_events (
    gateway     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    payment_id  TEXT REFERENCES payments (id),
    status      TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (gateway, event_id)
);

CREATE TABLE refunds (
    id          TEXT PRIMARY KEY,
    payment_id  TEXT NOT NULL REFERENCES payments (id),
    amount      BIGINT NOT NULL CHECK (amount > 0),
    status      TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    gateway_ref TEXT,
    reason      TEXT NOT NULL,
    forced      BOOLEAN NOT NULL,
    last_error  TEXT,
    -- "{api key id}:{Idempotency-Key}" of the request that asked for it.
    request_key TEXT UNIQUE,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX refunds_by_payment ON refunds (payment_id, id);
