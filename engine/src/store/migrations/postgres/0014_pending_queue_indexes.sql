-- The webhook events and the e-mail a deliverer or mailer may claim, in the
-- order they claim them (first due first), as operations_pending is for
-- the runner. The claims went through the (status, next_attempt_at)
-- indexes, read every pending row and sorted them by id to take a batch:
-- their cost grew with the backlog, so a burst of orders (or a mail server
-- down for a day) made every claim slower just when there was most to do.
-- Nothing else reads those two indexes.
DROP INDEX outbox_due;
CREATE INDEX outbox_pending ON outbox (next_attempt_at, id) WHERE status = 'pending';
DROP INDEX notifications_due;
CREATE INDEX notifications_pending ON notifications (next_attempt_at, id) WHERE status = 'pending';
