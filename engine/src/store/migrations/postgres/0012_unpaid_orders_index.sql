-- An account's unpaid orders, found without reading its other services:
-- every order counts them (the per-account quota) and every payment pays
-- them. Through services_account both read every service the account ever
-- had, so an account with many services made each order slower.
CREATE INDEX services_unpaid ON services (account_id, id) WHERE status = 'ordered';
