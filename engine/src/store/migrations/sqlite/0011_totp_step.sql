-- The last TOTP time step a login used: a code is accepted once, so one
-- seen over a shoulder or in a proxy log cannot be used again.
ALTER TABLE logins ADD COLUMN totp_last_step BIGINT;
