-- The web console: the people who log in (a customer to one account, staff
-- with a role), their sessions, and failed logins for throttling.

CREATE TABLE logins (
    id            TEXT PRIMARY KEY,
    -- Lower-cased; unique per realm (a customer and a staff user may share one).
    email         TEXT NOT NULL,
    realm         TEXT NOT NULL CHECK (realm IN ('customer', 'staff')),
    role          TEXT NOT NULL CHECK (role IN ('admin', 'support', 'accountant', 'customer')),
    account_id    TEXT REFERENCES accounts (id),
    name          TEXT NOT NULL,
    -- argon2id, PHC string.
    password_hash TEXT NOT NULL,
    -- The TOTP secret, sealed with the service secrets key; NULL when off.
    totp_secret   TEXT,
    created_at    BIGINT NOT NULL,
    disabled_at   BIGINT,
    UNIQUE (realm, email),
    CHECK ((realm = 'customer') = (role = 'customer')),
    CHECK ((role = 'customer') = (account_id IS NOT NULL))
);
CREATE INDEX logins_account ON logins (account_id);

-- A session is known by the SHA-256 of its cookie; the cookie itself is
-- never stored.
CREATE TABLE console_sessions (
    id_hash    TEXT PRIMARY KEY,
    login_id   TEXT NOT NULL REFERENCES logins (id),
    csrf       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at   BIGINT
);
CREATE INDEX console_sessions_login ON console_sessions (login_id);

-- Failed logins, by e-mail and by address (`email:…`, `addr:…`), kept for
-- the throttling window.
CREATE TABLE login_failures (
    subject TEXT NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX login_failures_subject ON login_failures (subject, at);

-- Password reset links (e-mailed, or issued by staff), by the SHA-256 of
-- their token; each works once, until it expires.
CREATE TABLE password_resets (
    token_hash TEXT PRIMARY KEY,
    login_id   TEXT NOT NULL REFERENCES logins (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
