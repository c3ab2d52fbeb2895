-- The IANA time zone a service counts its billing periods in, fixed when
-- it is ordered (from `[billing] time_zone`).
ALTER TABLE services ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'UTC';
