-- Taxes by customer country (and product type), and invoices numbered
-- without gaps per prefix and year.

ALTER TABLE accounts ADD COLUMN country TEXT;

CREATE TABLE tax_rules (
    id           TEXT PRIMARY KEY,
    country      TEXT NOT NULL,
    -- '' applies to every product type without a rule of its own.
    product_type TEXT NOT NULL DEFAULT '',
    name         TEXT NOT NULL,
    -- Basis points: 1900 = 19 %.
    rate_bp      BIGINT NOT NULL CHECK (rate_bp > 0 AND rate_bp <= 10000),
    -- Prices include the tax, or it is added on top.
    inclusive    BOOLEAN NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (country, product_type)
);

CREATE TABLE invoice_counters (
    prefix TEXT NOT NULL,
    year   BIGINT NOT NULL,
    last   BIGINT NOT NULL,
    PRIMARY KEY (prefix, year)
);

CREATE TABLE invoices (
    id             TEXT PRIMARY KEY,
    number         TEXT NOT NULL UNIQUE,
    prefix         TEXT NOT NULL,
    year           BIGINT NOT NULL,
    seq            BIGINT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('invoice', 'receipt', 'credit_note')),
    account_id     TEXT NOT NULL REFERENCES accounts (id),
    currency       TEXT NOT NULL,
    net            BIGINT NOT NULL,
    tax            BIGINT NOT NULL,
    total          BIGINT NOT NULL,
    lines          TEXT NOT NULL, -- JSON
    tax_lines      TEXT NOT NULL, -- JSON
    -- The ledger transaction the document is for: one document each.
    transaction_id TEXT NOT NULL UNIQUE REFERENCES ledger_transactions (id),
    payment_id     TEXT,
    created_at     BIGINT NOT NULL,
    UNIQUE (prefix, year, seq)
);
CREATE INDEX invoices_by_account ON invoices (account_id, id);
