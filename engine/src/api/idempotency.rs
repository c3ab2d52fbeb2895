//! Idempotent POSTs. The response to a request carrying an
//! `Idempotency-Key` is stored in the same database transaction as the work,
//! so either both happen or neither. A replay of the same request returns
//! the stored status and body (with `Idempotent-Replayed: true`); the same
//! key with a different request is a 409. Keys are scoped to the API key
//! that sent them. Only successful responses are stored: a request that
//! failed (say, for insufficient funds) may be retried with the same key.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::api::AppState;
use crate::api::error::{Problem, ProblemKind};
use crate::api::extract::{IdempotencyKey, Principal};
use crate::api::views::ServiceView;
use crate::error::Error;
use crate::lifecycle::order_batch::{self, BatchOrder};
use crate::sql;
use crate::store::idempotency::{self, Seen, Stored, StoredResponse};
use crate::store::{Conn, Store, Tx};

pub const REPLAYED: &str = "idempotent-replayed";

/// What a unit of work answers.
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    /// What to store for replays instead of `body` (a secret shown once is
    /// not kept).
    pub stored_body: Option<Value>,
}

impl Reply {
    /// `body` is one of the API's own response types (see `api::views`),
    /// never a domain struct.
    pub fn new(
        status: StatusCode,
        body: impl serde::Serialize + utoipa::ToSchema,
    ) -> Result<Reply, Problem> {
        Ok(Reply {
            status,
            body: serde_json::to_value(body).map_err(|_| Problem::internal())?,
            stored_body: None,
        })
    }
}

/// A request's identity for idempotency: who sent it, its key, its hash.
pub struct Idempotency<'a> {
    pub principal: &'a Principal,
    pub key: &'a IdempotencyKey,
    pub request_hash: &'a str,
}

impl Idempotency<'_> {
    /// A stable key for a ledger transaction this request posts, derived
    /// from the Idempotency-Key, or a fresh one when the request has none.
    pub fn ledger_key(&self, purpose: &str) -> String {
        match &self.key.0 {
            Some(k) => format!("{purpose}:{}:{k}", self.principal.key_id),
            None => format!("{purpose}:{}", crate::ids::new_id("req")),
        }
    }

    /// Runs `work` in one database transaction together with storing its
    /// response under the key.
    pub async fn run<F>(&self, state: &AppState, work: F) -> Result<Response, Problem>
    where
        F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<Reply, Problem>>,
    {
        run_alone(&state.store, &self.request(state), work).await
    }

    /// Like [`run`](Self::run), but the work joins the requests committed
    /// together (see [`GroupCommit`]): one transaction and one flush to
    /// disk for every request waiting at that moment.
    ///
    /// An order (`order`: the same order `work` places) is placed together
    /// with the other orders of its group, with multi-row statements (see
    /// [`crate::lifecycle::order_batch`]); `work` places it alone if the
    /// batch leaves it. On SQLite the other requests of the group run in
    /// the same transaction, each in its own savepoint. On PostgreSQL only
    /// orders are grouped, and what the batch leaves runs in a transaction
    /// of its own after the group's commit: several writers run at once
    /// there, and a group holding one request's locks while it runs the
    /// next one's would take them out of the order every other writer
    /// takes them in (a deadlock), and its savepoints would overflow
    /// PostgreSQL's per-session subtransaction cache. The batch itself
    /// takes its locks in that order: the customers' ledger rows in id
    /// order, then the engine's own, then the invoice counter.
    pub async fn run_grouped<F>(
        &self,
        state: &AppState,
        order: Option<BatchOrder>,
        work: F,
    ) -> Result<Response, Problem>
    where
        F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<Reply, Problem>> + Send + 'static,
    {
        if order.is_none() && state.store.backend() != crate::store::Backend::Sqlite {
            return self.run(state, work).await;
        }
        let (answer, answered) = oneshot::channel();
        let job = Job {
            request: self.request(state),
            work: Box::new(work),
            order,
            answer,
        };
        state.group_commit.submit(&state.store, job)?;
        answered.await.unwrap_or_else(|_| Err(Problem::internal()))
    }

    fn request(&self, state: &AppState) -> Request {
        Request {
            scope: self.principal.key_id.clone(),
            key: self.key.0.clone(),
            request_hash: self.request_hash.to_owned(),
            now: state.clock.now(),
        }
    }
}

/// A request's work in a transaction of its own, its answer stored with it.
async fn run_alone<F>(store: &Store, request: &Request, work: F) -> Result<Response, Problem>
where
    F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<Reply, Problem>>,
{
    let mut tx = store.begin().await?;
    match attempt(&mut tx, request, work).await {
        Attempt::Kept(reply) => {
            tx.commit().await?;
            Ok(reply)
        }
        Attempt::Answered(answer) => answer,
        Attempt::Raced => {
            // A concurrent request with the same key won; ours rolls back.
            drop(tx);
            let mut reader = store.reader().await?;
            request.winner(reader.conn()).await
        }
    }
}

/// What identifies a request's answer for replays.
struct Request {
    scope: String,
    key: Option<String>,
    request_hash: String,
    now: DateTime<Utc>,
}

impl Request {
    /// The answer a concurrent request with the same key committed.
    async fn winner(&self, c: Conn<'_>) -> Result<Response, Problem> {
        let key = self.key.as_deref().unwrap_or_default();
        match idempotency::lookup(c, &self.scope, key, &self.request_hash).await? {
            Seen::Same(stored) => Ok(replay(stored)),
            _ => Err(Error::IdempotencyMismatch.into()),
        }
    }
}

/// How a request's work in a transaction ended.
enum Attempt {
    /// It wrote what it answers: commit to keep it.
    Kept(Response),
    /// Nothing of it is to be kept (a replay, a refusal, a failure).
    Answered(Result<Response, Problem>),
    /// Another transaction stored an answer under the same key first: this
    /// one's writes must go, and the caller gets the winner's answer.
    Raced,
}

/// The idempotency check, the work, and storing its answer, on `tx`.
async fn attempt<F>(tx: &mut Tx, request: &Request, work: F) -> Attempt
where
    F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<Reply, Problem>>,
{
    let scope = &request.scope;
    if let Some(key) = &request.key {
        match idempotency::lookup(tx.conn(), scope, key, &request.request_hash).await {
            Ok(Seen::Same(stored)) => return Attempt::Answered(Ok(replay(stored))),
            Ok(Seen::Different) => {
                return Attempt::Answered(Err(Error::IdempotencyMismatch.into()));
            }
            Ok(Seen::Never) => {}
            Err(e) => return Attempt::Answered(Err(e.into())),
        }
    }
    let reply = match work(tx).await {
        Ok(reply) => reply,
        Err(problem) => return Attempt::Answered(Err(problem)),
    };
    if let Some(key) = &request.key {
        let stored = StoredResponse {
            status: reply.status.as_u16(),
            body: reply
                .stored_body
                .as_ref()
                .unwrap_or(&reply.body)
                .to_string(),
        };
        let saved = idempotency::save(
            tx.conn(),
            scope,
            key,
            &request.request_hash,
            &stored,
            request.now,
        )
        .await;
        match saved {
            Ok(()) => {}
            Err(e) if e.is_unique_violation() => return Attempt::Raced,
            Err(e) => return Attempt::Answered(Err(e.into())),
        }
    }
    Attempt::Kept(json_response(reply.status, reply.body.to_string()))
}

/// The most requests one group transaction takes.
const MAX_GROUP: usize = 128;

type Work = Box<dyn for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<Reply, Problem>> + Send>;

/// A request waiting for the committer.
struct Job {
    request: Request,
    work: Work,
    /// An order the group may place in its batch instead of by `work`.
    order: Option<BatchOrder>,
    answer: oneshot::Sender<Result<Response, Problem>>,
}

type Answer = (
    oneshot::Sender<Result<Response, Problem>>,
    Result<Response, Problem>,
);

/// Group commit. Requests hand their work to one committer task per
/// process, which takes every request waiting when it starts a group and
/// runs them in one write transaction: the group's orders as one batch,
/// and on SQLite (whose one writer runs transactions one at a time
/// anyway) every other request in its own savepoint, where a request that
/// fails rolls back to its savepoint and leaves the others whole (on
/// PostgreSQL, see [`Idempotency::run_grouped`]). The answers go out after
/// the commit, so a 201 still means "on disk", and
/// the fsync (SQLite's `synchronous = FULL`, PostgreSQL's WAL flush) and
/// the transaction's own statements are paid once per group, not once per
/// request. Under no load a group is one request: no added wait.
///
/// A client that goes away does not cancel its request: the work is
/// committed and its answer replayed to the same Idempotency-Key.
#[derive(Default)]
pub struct GroupCommit {
    lane: std::sync::Mutex<Option<mpsc::UnboundedSender<Job>>>,
}

impl GroupCommit {
    fn submit(&self, store: &Store, job: Job) -> Result<(), Problem> {
        let mut lane = self.lane.lock().unwrap_or_else(|p| p.into_inner());
        let job = match lane.as_ref() {
            Some(l) => match l.send(job) {
                Ok(()) => return Ok(()),
                // The committer is gone (it can only panic): a new one
                // takes over.
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (sender, jobs) = mpsc::unbounded_channel();
        tokio::spawn(committer(store.clone(), jobs));
        sender.send(job).map_err(|_| Problem::internal())?;
        *lane = Some(sender);
        Ok(())
    }
}

async fn committer(store: Store, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while jobs.recv_many(&mut group, MAX_GROUP).await > 0 {
        commit_group(&store, std::mem::take(&mut group)).await;
    }
}

/// The answer for requests whose group could not be committed: retried
/// with the same Idempotency-Key, a request is done once whatever
/// happened.
fn group_failed() -> Problem {
    Problem::new(
        ProblemKind::Unavailable,
        "the database did not confirm the commit; retry the request with the same Idempotency-Key",
    )
}

async fn commit_group(store: &Store, jobs: Vec<Job>) {
    if store.backend() != crate::store::Backend::Sqlite {
        return commit_orders_apart(store, jobs).await;
    }
    let mut answers: Vec<Answer> = Vec::with_capacity(jobs.len());
    let (orders, mut jobs): (Vec<Job>, Vec<Job>) =
        jobs.into_iter().partition(|j| j.order.is_some());
    let Some(mut tx) = begin_group(store, &mut jobs, &mut answers).await else {
        return fail_group(orders, answers);
    };
    if !orders.is_empty() {
        let (left, failed) = commit_orders(&mut tx, orders, &mut answers).await;
        jobs.extend(left);
        if failed {
            // The batch ran first: what it wrote is all the transaction
            // holds, and the item path starts over in a new one.
            if let Err(e) = tx.rollback().await {
                tracing::warn!(error = %e, "rolling back a failed order batch failed");
            }
            tx = match begin_group(store, &mut jobs, &mut answers).await {
                Some(tx) => tx,
                None => return fail_group(Vec::new(), answers),
            };
        }
    }
    let mut broken = false;
    for job in jobs {
        if broken {
            answers.push((job.answer, Err(group_failed())));
            continue;
        }
        if let Err(e) = savepoint(&mut tx, "SAVEPOINT group_request").await {
            tracing::warn!(error = %e, "a group commit could not set a savepoint");
            broken = true;
            answers.push((job.answer, Err(group_failed())));
            continue;
        }
        let request = job.request;
        let outcome = AssertUnwindSafe(attempt(&mut tx, &request, job.work))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!("a request panicked in a group commit; its work is rolled back");
                Attempt::Answered(Err(Problem::internal()))
            });
        let (undo, raced, answer) = match outcome {
            Attempt::Kept(response) => (false, false, Ok(response)),
            Attempt::Answered(answer) => (true, false, answer),
            Attempt::Raced => (true, true, Err(Problem::internal())),
        };
        let end = if undo {
            savepoint(&mut tx, "ROLLBACK TO SAVEPOINT group_request").await
        } else {
            Ok(())
        };
        let end = match end {
            Ok(()) => savepoint(&mut tx, "RELEASE SAVEPOINT group_request").await,
            Err(e) => Err(e),
        };
        if let Err(e) = end {
            tracing::warn!(error = %e, "a group commit could not end a savepoint");
            broken = true;
            answers.push((job.answer, Err(group_failed())));
            continue;
        }
        // Raced: another connection committed the same key first (its
        // row is visible now that ours is rolled back). A lookup that fails
        // leaves the transaction unusable (PostgreSQL): the group fails.
        let answer = if raced {
            match request.winner(tx.conn()).await {
                Err(problem) if problem.status().is_server_error() => {
                    broken = true;
                    Err(group_failed())
                }
                answer => answer,
            }
        } else {
            answer
        };
        answers.push((job.answer, answer));
    }
    finish_group(tx, broken, answers).await;
}

/// Commits a group's transaction (rolls it back when `broken`) and sends
/// its answers: an answer for work that was not committed becomes "the
/// group failed".
async fn finish_group(tx: Tx, broken: bool, answers: Vec<Answer>) {
    metrics::histogram!("bursar_group_commit_requests").record(answers.len() as f64);
    let committed = if broken {
        if let Err(e) = tx.rollback().await {
            tracing::warn!(error = %e, "rolling back a broken group failed");
        }
        false
    } else {
        match tx.commit().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "a group commit failed");
                false
            }
        }
    };
    if !committed {
        metrics::counter!("bursar_group_commit_failures_total").increment(1);
    }
    send_answers(answers, committed);
}

/// Sends answers; `committed`: whether the work they answer was.
fn send_answers(answers: Vec<Answer>, committed: bool) {
    for (answer, outcome) in answers {
        let outcome = match outcome {
            Ok(_) if !committed => Err(group_failed()),
            other => other,
        };
        let _ = answer.send(outcome);
    }
}

/// Begins a group's transaction; when it cannot, every job of `jobs` is
/// answered that the group failed (moved into `answers`).
async fn begin_group(store: &Store, jobs: &mut Vec<Job>, answers: &mut Vec<Answer>) -> Option<Tx> {
    match store.begin().await {
        Ok(tx) => Some(tx),
        Err(e) => {
            tracing::warn!(error = %e, "a group commit could not begin");
            answers.extend(jobs.drain(..).map(|job| (job.answer, Err(group_failed()))));
            None
        }
    }
}

/// Sends a group's answers when its transaction could not begin: the
/// replays and refusals already found, and "failed" for `left`.
fn fail_group(left: Vec<Job>, answers: Vec<Answer>) {
    send_answers(answers, true);
    for job in left {
        let _ = job.answer.send(Err(group_failed()));
    }
}

/// A group on PostgreSQL: its orders placed as one batch in a transaction
/// of their own; what the batch leaves runs alone, each request in its own
/// transaction, after the batch's commit (a key sent twice in the group
/// then finds the first one's answer).
async fn commit_orders_apart(store: &Store, jobs: Vec<Job>) {
    let mut answers: Vec<Answer> = Vec::with_capacity(jobs.len());
    let (orders, mut left): (Vec<Job>, Vec<Job>) =
        jobs.into_iter().partition(|j| j.order.is_some());
    match store.begin().await {
        Ok(mut tx) => {
            let (rest, failed) = commit_orders(&mut tx, orders, &mut answers).await;
            left.extend(rest);
            if failed {
                // The batch's orders go through the item path; what was
                // answered (replays, reused keys) wrote nothing.
                if let Err(e) = tx.rollback().await {
                    tracing::warn!(error = %e, "rolling back a failed order batch failed");
                }
                send_answers(answers, true);
            } else {
                finish_group(tx, false, answers).await;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "a group commit could not begin");
            left.extend(orders);
        }
    }
    for job in left {
        let store = store.clone();
        tokio::spawn(async move {
            let answer = AssertUnwindSafe(run_alone(&store, &job.request, job.work))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!("a request panicked; its work is rolled back");
                    Err(Problem::internal())
                });
            let _ = job.answer.send(answer);
        });
    }
}

/// The orders of a group, placed as one batch
/// ([`order_batch::place_many`]) before anything else is written in `tx`:
/// replays and reused keys answered from one lookup of their keys, then
/// the rest placed with multi-row statements and their answers stored in
/// one statement. Returns the jobs left for the item path (a key sent
/// twice in the group, an order the batch leaves, or every order when the
/// batch fails), and whether the batch failed: then `tx` holds its partial
/// writes and only them (no savepoint: SQLite would copy every page the
/// batch touches into its subjournal), and the caller rolls it back.
async fn commit_orders(tx: &mut Tx, jobs: Vec<Job>, answers: &mut Vec<Answer>) -> (Vec<Job>, bool) {
    let keys: Vec<(&str, &str)> = jobs
        .iter()
        .filter_map(|j| {
            j.request
                .key
                .as_deref()
                .map(|k| (j.request.scope.as_str(), k))
        })
        .collect();
    let seen = if keys.is_empty() {
        Ok(Vec::new())
    } else {
        idempotency::lookup_many(tx.conn(), &keys).await
    };
    drop(keys);
    let Ok(seen) = seen else {
        return (jobs, false);
    };
    let stored: HashMap<(String, String), Stored> = seen
        .into_iter()
        .map(|(scope, key, stored)| ((scope, key), stored))
        .collect();
    let mut fresh = Vec::with_capacity(jobs.len());
    let mut left = Vec::new();
    let mut taken = HashSet::new();
    for job in jobs {
        if let Some(key) = &job.request.key {
            let scoped = (job.request.scope.clone(), key.clone());
            match stored
                .get(&scoped)
                .map(|s| s.seen_by(&job.request.request_hash))
            {
                Some(Seen::Same(response)) => {
                    answers.push((job.answer, Ok(replay(response))));
                    continue;
                }
                Some(Seen::Different) => {
                    answers.push((job.answer, Err(Error::IdempotencyMismatch.into())));
                    continue;
                }
                Some(Seen::Never) | None => {}
            }
            if !taken.insert(scoped) {
                // The item path replays the first one's answer.
                left.push(job);
                continue;
            }
        }
        fresh.push(job);
    }
    if fresh.is_empty() {
        return (left, false);
    }
    let placed = AssertUnwindSafe(place_orders(tx, &mut fresh))
        .catch_unwind()
        .await;
    match placed {
        Ok(Ok(responses)) => {
            for (job, response) in fresh.into_iter().zip(responses) {
                match response {
                    Some(response) => answers.push((job.answer, Ok(response))),
                    None => left.push(job),
                }
            }
            (left, false)
        }
        failed => {
            match failed {
                Ok(Err(e)) => tracing::info!(error = %e, "an order batch is placed one by one"),
                _ => tracing::error!("an order batch panicked; its orders are placed one by one"),
            }
            // First-comers ahead of the same keys sent again, which
            // then find their answers.
            fresh.extend(left);
            (fresh, true)
        }
    }
}

/// Places the jobs' orders (taken out of them) and stores the answers of
/// those with a key: for each job its answer, or `None` for the item path.
async fn place_orders(
    tx: &mut Tx,
    jobs: &mut [Job],
) -> crate::error::Result<Vec<Option<Response>>> {
    let orders: Vec<BatchOrder> = jobs.iter_mut().filter_map(|j| j.order.take()).collect();
    let now = jobs.iter().map(|j| j.request.now).max().unwrap_or_default();
    let placed = order_batch::place_many(tx.conn(), &orders, now).await?;
    let mut responses = Vec::with_capacity(jobs.len());
    let mut statuses = Vec::new();
    let mut stored = Vec::new();
    for (job, service) in jobs.iter().zip(placed) {
        let Some(service) = service else {
            responses.push(None);
            continue;
        };
        statuses.push(service.status);
        // As `Reply::new` renders it on the item path.
        let body = serde_json::to_value(ServiceView::from(service))
            .map_err(|e| Error::Conflict(format!("an order's answer: {e}")))?
            .to_string();
        if let Some(key) = &job.request.key {
            let response = StoredResponse {
                status: StatusCode::CREATED.as_u16(),
                body: body.clone(),
            };
            stored.push((&job.request, key, response));
        }
        responses.push(Some(json_response(StatusCode::CREATED, body)));
    }
    let saved: Vec<_> = stored
        .iter()
        .map(|(r, key, response)| {
            (
                r.scope.as_str(),
                key.as_str(),
                r.request_hash.as_str(),
                response,
            )
        })
        .collect();
    idempotency::save_many(tx.conn(), &saved, now).await?;
    for status in statuses {
        metrics::counter!("bursar_orders_total", "status" => status.as_str()).increment(1);
    }
    Ok(responses)
}

async fn savepoint(tx: &mut Tx, statement: &'static str) -> crate::error::Result<()> {
    let mut c = tx.conn();
    sql!(&mut c, c => sqlx::query(statement).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = json_response(status, stored.body);
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
