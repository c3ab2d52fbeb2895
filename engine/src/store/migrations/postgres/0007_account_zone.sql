-- A customer's own billing time zone (IANA name); services ordered for it
-- count their periods there. NULL: the deployment's `[billing] time_zone`.
ALTER TABLE accounts ADD COLUMN time_zone TEXT;
