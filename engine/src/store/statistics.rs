//! Fresh planner statistics for the queue tables on PostgreSQL.
//!
//! A queue table changes faster than autovacuum analyses it (a minute or
//! more apart): a burst of orders queues thousands of operations within
//! seconds, while the planner's column statistics still describe the table
//! as the last `ANALYZE` saw it — on a new database, with no operation
//! queued. From that picture the claim's cheapest-looking plan reads every
//! pending row through `operations_due` and sorts them (tens to hundreds
//! of milliseconds for 22,000 queued operations on an idle database,
//! seconds under the load that queued them; docs/BENCHMARKS.md, seventh
//! round) instead of walking the pending index and stopping at its batch
//! (well under a millisecond). A claim slower than [`SLOW_CLAIM`] may be
//! that: the table is analysed then, at most once per [`REFRESH_EVERY`]
//! per worker, and the next claim is planned from what the table holds.
//! A claim slow for another reason (a loaded machine, a backlog of
//! operations none of which is due) costs at most one `ANALYZE` of the
//! table per worker in that while. Nothing about the plan is forced: a
//! planner told what is there picks the index walk by itself. SQLite is
//! steered by a hint instead ([`super::indexed_by`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Backend, Conn, Store};
use crate::error::Result;

/// A claim that takes longer than this may have been planned from
/// statistics that no longer describe its table (a good plan takes well
/// under a millisecond).
pub const SLOW_CLAIM: Duration = Duration::from_millis(20);

/// The shortest time between two refreshes of one table by one worker,
/// so a claim slow for another reason (a loaded machine) costs at most one
/// `ANALYZE` in this while.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// Watches the claims on one queue table and refreshes its statistics when
/// a claim was slow.
#[derive(Debug)]
pub struct ClaimStatistics {
    table: &'static str,
    last_refresh: Mutex<Option<Instant>>,
}

impl ClaimStatistics {
    /// For claims on `table` (a name from the schema, never user input).
    pub const fn new(table: &'static str) -> Self {
        ClaimStatistics {
            table,
            last_refresh: Mutex::new(None),
        }
    }

    /// Whether a claim that took `took`, ending at `now`, calls for a
    /// refresh; if it does, the refresh is counted as done at `now`.
    fn refresh_due(&self, took: Duration, now: Instant) -> bool {
        if took < SLOW_CLAIM {
            return false;
        }
        let mut last = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < REFRESH_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Runs `claim` (the claim statement on this table) in a transaction of
    /// its own, commits it, and then refreshes the table's statistics if
    /// the statement was slow ([`Self::after_claim`]).
    pub async fn claim<T>(
        &self,
        store: &Store,
        claim: impl AsyncFnOnce(Conn<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut tx = store.begin().await?;
        let started = Instant::now();
        let claimed = claim(tx.conn()).await?;
        let took = started.elapsed();
        tx.commit().await?;
        self.after_claim(store, took).await;
        Ok(claimed)
    }

    /// Called after every claim on the table, with how long its
    /// statement took. Analyses the table (on PostgreSQL) when the claim
    /// was slow and no refresh ran lately; returns whether it did. A
    /// refresh that fails is logged: the claims go on as they were.
    pub async fn after_claim(&self, store: &Store, took: Duration) -> bool {
        if store.backend() != Backend::Postgres || !self.refresh_due(took, Instant::now()) {
            return false;
        }
        let table = self.table;
        match store.analyze(table).await {
            Ok(()) => {
                tracing::info!(
                    table,
                    claim_ms = took.as_millis() as u64,
                    "a queue claim was slow; the table's planner statistics were refreshed"
                );
                metrics::counter!("bursar_queue_statistics_refreshed_total", "table" => table)
                    .increment(1);
                true
            }
            Err(e) => {
                tracing::warn!(table, error = %e, "refreshing a queue table's planner statistics failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_slow_claim_refreshes_and_at_most_once_a_while() {
        let s = ClaimStatistics::new("operations");
        let t0 = Instant::now();
        let fast = SLOW_CLAIM - Duration::from_millis(1);
        assert!(
            !s.refresh_due(fast, t0),
            "a fast claim leaves the statistics alone"
        );
        assert!(
            s.refresh_due(SLOW_CLAIM, t0),
            "the first slow claim refreshes"
        );
        let soon = t0 + REFRESH_EVERY - Duration::from_secs(1);
        assert!(
            !s.refresh_due(Duration::from_secs(5), soon),
            "not again so soon"
        );
        let later = t0 + REFRESH_EVERY;
        assert!(
            !s.refresh_due(fast, later),
            "a fast claim, later, still not"
        );
        assert!(s.refresh_due(SLOW_CLAIM, later), "a slow one, later, again");
    }
}
