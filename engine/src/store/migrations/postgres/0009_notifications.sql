-- E-mail notifications: written in the transaction of the change they
-- tell about, rendered and sent at least once by the mailer. The
-- notification id is the mail's Message-ID, so a mail sent again after a
-- crash is the same message to the customer's client.

CREATE TABLE notifications (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    -- Once per key (a reminder per service and period); NULL: no such rule.
    dedup_key       TEXT UNIQUE,
    data            TEXT NOT NULL, -- JSON: what the templates are told
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'skipped', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    recipient       TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX notifications_due ON notifications (status, next_attempt_at);

-- The language an account's mail is written in, the optional mail it
-- turned off (comma-separated kinds), and when it was last told its
-- balance fell below the threshold (cleared when it is back above).
ALTER TABLE accounts ADD COLUMN language TEXT NOT NULL DEFAULT 'en';
ALTER TABLE accounts ADD COLUMN email_opt_out TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN balance_low_at BIGINT;

-- What retention prunes every automation pass, found without reading every
-- row.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
CREATE INDEX outbox_delivered ON outbox (status, delivered_at);
CREATE INDEX notifications_finished ON notifications (status, created_at);
