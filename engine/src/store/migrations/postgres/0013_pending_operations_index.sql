-- The operations the runner may claim, in the order it claims them. The
-- claim went through operations_due and read every unfinished operation
-- (and sorted them) to take the first sixteen: its cost grew with the
-- backlog, so a backlog (a module down for hours, a burst of orders) made
-- every claim slower just when the runner had the most to do.
CREATE INDEX operations_pending ON operations (next_run_at, id)
    WHERE status IN ('queued', 'waiting', 'running');
