-- Catalog, services with their event log, and the operations queue.

CREATE TABLE plans (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    product_type TEXT NOT NULL,
    module       TEXT NOT NULL,
    spec         TEXT NOT NULL, -- the PlanSpec as JSON
    status       TEXT NOT NULL CHECK (status IN ('active', 'archived')),
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE services (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    plan_id         TEXT NOT NULL REFERENCES plans (id),
    status          TEXT NOT NULL,
    suspend_reason  TEXT,
    period          TEXT NOT NULL,
    currency        TEXT NOT NULL,
    recurring_price BIGINT NOT NULL,
    amount_due      BIGINT NOT NULL DEFAULT 0,
    addons          TEXT NOT NULL,
    params          TEXT NOT NULL DEFAULT '{}',
    secret_params   TEXT NOT NULL DEFAULT '{}',
    auto_renew      BOOLEAN NOT NULL,
    anchor_at       BIGINT,
    paid_units      BIGINT NOT NULL DEFAULT 0,
    period_start    BIGINT,
    paid_until      BIGINT,
    range_price     BIGINT NOT NULL DEFAULT 0,
    range_periods   BIGINT NOT NULL DEFAULT 0,
    suspended_at    BIGINT,
    closed_at       BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX services_account ON services (account_id, id);
CREATE INDEX services_status ON services (status, paid_until);
CREATE INDEX services_plan ON services (plan_id);

CREATE TABLE service_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_id  TEXT NOT NULL REFERENCES services (id),
    action      TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status   TEXT NOT NULL,
    reason      TEXT,
    actor       TEXT NOT NULL,
    detail      TEXT,
    at          BIGINT NOT NULL
);
CREATE INDEX service_events_service ON service_events (service_id, id);
CREATE TRIGGER service_events_immutable BEFORE UPDATE OR DELETE ON service_events
    FOR EACH ROW EXECUTE FUNCTION bursar_append_only();

CREATE TABLE operations (
    id          TEXT PRIMARY KEY,
    service_id  TEXT NOT NULL REFERENCES services (id),
    kind        TEXT NOT NULL,
    module      TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    next_run_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    claim_token TEXT,
    remote_ref  TEXT,
    progress    TEXT,
    last_error  TEXT,
    error_kind  TEXT,
    payload     TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX operations_due ON operations (status, next_run_at);
CREATE INDEX operations_service ON operations (service_id, id);
