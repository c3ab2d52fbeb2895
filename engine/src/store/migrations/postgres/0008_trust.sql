-- Trust: staff roles and managed, expiring, audited API keys; exact
-- credits for unused time; payments that expire and are reconciled fairly;
-- what a processing module keeps per customer.

-- API keys: staff roles besides admin, the key BURSAR_ADMIN_KEY manages,
-- when each was last used and when it expires.
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_role_check;
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('admin', 'support', 'accountant', 'customer'));
ALTER TABLE api_keys ADD CONSTRAINT api_keys_account_check
    CHECK ((role = 'customer') = (account_id IS NOT NULL));
ALTER TABLE api_keys ADD COLUMN managed BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
UPDATE api_keys SET managed = TRUE WHERE name = 'BURSAR_ADMIN_KEY';

-- What was charged for the paid range from `range_from` to `paid_until`:
-- its gross and the tax in it, as invoiced. A credit for unused time gives
-- back a part of exactly these, whatever the account's tax rule is now.
ALTER TABLE services RENAME COLUMN range_price TO range_gross;
ALTER TABLE services ADD COLUMN range_tax BIGINT NOT NULL DEFAULT 0;
ALTER TABLE services ADD COLUMN range_from BIGINT;
UPDATE services SET range_from = period_start;
-- The setup fee (price) of the order, so its invoice can itemise it.
ALTER TABLE services ADD COLUMN setup_fee BIGINT NOT NULL DEFAULT 0;

-- Payments left open expire; reconciliation asks about the least recently
-- checked first, per gateway.
ALTER TABLE payments ADD COLUMN expires_at BIGINT;
ALTER TABLE payments ADD COLUMN checked_at BIGINT;
CREATE INDEX payments_open_by_gateway ON payments (gateway, status, checked_at);

-- What a processing module instance keeps about a customer (e.g. the
-- remote user id it created at `open`), passed back on every call for the
-- customer's services as `account.KEY` params.
CREATE TABLE account_module_params (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    module     TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, module, key)
);

-- When a module last brought a service's remote side back to its state
-- (a `sync`): the next is due an interval later.
ALTER TABLE services ADD COLUMN synced_at BIGINT;

-- Where the payer returns: kept so that a payment whose creation was
-- interrupted can be handed to its gateway again exactly as asked.
ALTER TABLE payments ADD COLUMN return_url TEXT;
