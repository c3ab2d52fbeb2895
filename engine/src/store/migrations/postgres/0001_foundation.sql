-- Customers, API keys, the double-entry ledger and stored idempotent responses.
-- Timestamps are microseconds since the Unix epoch.

CREATE TABLE accounts (
    id           TEXT PRIMARY KEY,
    email        TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    currency     TEXT NOT NULL,
    credit_limit BIGINT NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    status       TEXT NOT NULL CHECK (status IN ('active', 'blocked', 'closed')),
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    key_hash   TEXT NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'customer')),
    account_id TEXT REFERENCES accounts (id),
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    CHECK ((role = 'admin') = (account_id IS NULL))
);
CREATE INDEX api_keys_account ON api_keys (account_id);

CREATE TABLE ledger_accounts (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    account_id  TEXT REFERENCES accounts (id),
    currency    TEXT NOT NULL,
    -- Cached sum of this account's entries, updated in the same transaction.
    balance     BIGINT NOT NULL DEFAULT 0,
    -- Lowest balance a debit may leave (minus the credit limit); NULL = no floor.
    min_balance BIGINT,
    created_at  BIGINT NOT NULL
);

CREATE TABLE ledger_transactions (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    description     TEXT NOT NULL,
    account_id      TEXT REFERENCES accounts (id),
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX ledger_transactions_account ON ledger_transactions (account_id);

CREATE TABLE ledger_entries (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id    TEXT NOT NULL REFERENCES ledger_transactions (id),
    ledger_account_id TEXT NOT NULL REFERENCES ledger_accounts (id),
    amount            BIGINT NOT NULL CHECK (amount <> 0),
    currency          TEXT NOT NULL,
    created_at        BIGINT NOT NULL
);
CREATE INDEX ledger_entries_account ON ledger_entries (ledger_account_id, id);
CREATE INDEX ledger_entries_transaction ON ledger_entries (transaction_id);

-- The ledger is append-only: corrections are new transactions.
CREATE FUNCTION bursar_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: the table is append-only', TG_OP, TG_TABLE_NAME;
END $$;
CREATE TRIGGER ledger_entries_immutable BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION bursar_append_only();
CREATE TRIGGER ledger_transactions_immutable BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION bursar_append_only();

CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       BIGINT NOT NULL,
    body         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
