//! What finishing an operation does, whoever finishes it: the runner when
//! its module answers, staff when they did the work by hand from the
//! manual queue. One place, so the two can never disagree about what a
//! finished `open`, `close` or `change_plan` brings.

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::secrets::Secrets;
use crate::services::{Operation, OperationKind};
use crate::store::Conn;
use crate::store::accounts as accounts_repo;
use crate::store::services as repo;

/// Params a module returns under this prefix belong to the customer, not
/// the service: the module gets them back on every call for any of the
/// customer's services (e.g. the remote user it created at the first
/// `open`), so it never has to find the customer by an e-mail address
/// the customer can change.
pub const ACCOUNT_PARAM: &str = "account.";

/// What a module repaired when it brought the remote side back to the
/// service's state (a `sync`); never stored as a param.
pub const SYNC_CHANGED: &str = "sync.changed";

/// Stores what a module returned: the service's params and secrets, and
/// the customer's `account.` params.
async fn record_params(
    mut c: Conn<'_>,
    op: &Operation,
    params: &[(String, String)],
    secret: &[(String, String)],
    secrets: &Secrets,
    now: DateTime<Utc>,
) -> Result<()> {
    let (account, service): (Vec<_>, Vec<_>) = params
        .iter()
        .filter(|(k, _)| !k.starts_with("sync."))
        .cloned()
        .partition(|(k, _)| k.starts_with(ACCOUNT_PARAM));
    if !account.is_empty() {
        let owner = repo::get(c.reborrow(), &op.service_id).await?.account_id;
        let account: Vec<(String, String)> = account
            .into_iter()
            .map(|(k, v)| (k[ACCOUNT_PARAM.len()..].to_owned(), v))
            .collect();
        accounts_repo::set_module_params(c.reborrow(), &owner, &op.module, &account, now).await?;
    }
    repo::merge_params(c, &op.service_id, &service, secret, secrets, now).await
}

/// What a finished operation returned.
#[derive(Debug, Clone, Copy)]
pub struct Done<'a> {
    pub params: &'a [(String, String)],
    pub secret_params: &'a [(String, String)],
}

/// Applies a finished operation: a `sync` records the drift it repaired;
/// the others store what the module returned and move the service on.
/// The operation row itself is already marked done by the caller.
pub async fn finish(
    mut c: Conn<'_>,
    op: &Operation,
    done: Done<'_>,
    secrets: &Secrets,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    if op.kind == OperationKind::Sync {
        let changed = done
            .params
            .iter()
            .find(|(k, _)| k == SYNC_CHANGED)
            .map(|(_, v)| v.as_str());
        return super::record_sync(c, op, changed, now).await;
    }
    record_params(
        c.reborrow(),
        op,
        done.params,
        done.secret_params,
        secrets,
        now,
    )
    .await?;
    super::complete_effects(c, op, actor, now).await
}

/// An operation its module refused for good (a plan change it cannot
/// make): what was held for it goes back.
pub async fn cancel(c: Conn<'_>, op: &Operation, kind: &str, now: DateTime<Utc>) -> Result<()> {
    super::refuse_plan_change(c, op, kind, now).await
}

/// Staff did an operation from the manual queue by hand, and say what it
/// would have returned: it is done, and the service moves on as if the
/// module had done it.
pub async fn complete_manual(
    mut c: Conn<'_>,
    id: &str,
    params: &[(String, String)],
    secrets: &Secrets,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Operation> {
    let op = repo::resolve_manual(c.reborrow(), id, false, now).await?;
    let done = Done {
        params,
        secret_params: &[],
    };
    finish(c, &op, done, secrets, actor, now).await?;
    Ok(op)
}

/// An operation from the manual queue goes back in the queue, due now,
/// with a fresh set of attempts.
pub async fn retry_manual(c: Conn<'_>, id: &str, now: DateTime<Utc>) -> Result<Operation> {
    repo::resolve_manual(c, id, true, now).await
}
