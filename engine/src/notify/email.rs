//! E-mail: notifications recorded with their events (see
//! [`crate::messages`]) rendered from the templates and sent at least
//! once — over SMTP, or written as `.eml` files.
//!
//! A notification is claimed (so two mailers never send it at once),
//! rendered with what the store says now, sent, and marked sent. A send
//! that fails is tried again with backoff; one the server refuses for good
//! (5xx) is marked failed. Its `Message-ID` is the notification's id, so if
//! the process dies between sending and marking, the mail sent again is
//! the same message to the customer's client. Sends are spread to at most
//! `per_minute`.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::Result;
use crate::messages::Kind;
use crate::secrets::{Secrets, SettingValue};
use crate::store::notifications::{self as repo, Notification, Outcome};
use crate::store::statistics::ClaimStatistics;
use crate::store::{
    Conn, Store, accounts as accounts_repo, catalog as plans_repo, invoices as invoices_repo,
    ledger as ledger_repo, payments as payments_repo, services as services_repo,
};
use crate::templates::{CompanyConfig, Templates, format_money};

/// `[email]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// `file` (write `.eml` files into `dir`), `smtp`, or `off`.
    pub transport: TransportKind,
    /// The sender, `Name <address>`.
    pub from: String,
    /// Where staff notifications go (manual queue, failed refunds,
    /// failing plugins); none: they are recorded, not sent.
    pub staff_to: Option<String>,
    /// The `file` transport's directory.
    pub dir: PathBuf,
    /// A directory whose files replace the shipped templates of the same
    /// name (`email/ru/welcome.txt`, `invoice/en/invoice.html`, …).
    pub templates_dir: Option<PathBuf>,
    /// The language of accounts whose own has no templates.
    pub default_language: String,
    /// Put the service's credentials (root password) into the "service
    /// active" mail itself; otherwise it links to the portal.
    pub include_credentials: bool,
    /// Mails sent per minute at most.
    pub per_minute: u32,
    /// Milliseconds between passes over what is due.
    pub poll_interval_ms: u64,
    pub smtp: SmtpConfig,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            transport: TransportKind::File,
            from: "Bursar <billing@localhost>".into(),
            staff_to: None,
            dir: PathBuf::from("data/mail"),
            templates_dir: None,
            default_language: "en".into(),
            include_credentials: false,
            per_minute: 120,
            poll_interval_ms: 1000,
            smtp: SmtpConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    File,
    Smtp,
    /// Nothing is sent; notifications stay recorded.
    Off,
}

/// `[email.smtp]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub host: String,
    /// Default: 587 for `starttls`, 465 for `implicit`, 25 for `none`.
    pub port: Option<u16>,
    /// `starttls`, `implicit` (TLS from the first byte) or `none`
    /// (plain text: only for a relay on the same host).
    pub tls: SmtpTls,
    pub username: Option<String>,
    /// Text, `{ env = "…" }` or `{ file = "…" }`.
    pub password: Option<SettingValue>,
    pub timeout_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "localhost".into(),
            port: None,
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    Starttls,
    Implicit,
    None,
}

/// A mail ready to go.
#[derive(Debug, Clone)]
pub struct Mail {
    /// `<id@domain>`, the same on every attempt.
    pub message_id: String,
    pub notification_id: String,
    pub message: Message,
}

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Try again later (connection refused or dropped, 4xx).
    Transient(String),
    /// The server refused it for good (5xx).
    Permanent(String),
}

/// Where mail goes.
pub trait Transport: Send + Sync {
    fn send<'a>(&'a self, mail: &'a Mail) -> BoxFuture<'a, std::result::Result<(), SendError>>;
}

/// SMTP with lettre.
pub struct Smtp(AsyncSmtpTransport<Tokio1Executor>);

impl Smtp {
    pub fn new(config: &SmtpConfig) -> anyhow::Result<Smtp> {
        let builder = match config.tls {
            SmtpTls::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)?
            }
            SmtpTls::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)?,
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
        };
        let mut builder = builder.timeout(Some(Duration::from_secs(config.timeout_secs.max(1))));
        if let Some(port) = config.port {
            builder = builder.port(port);
        }
        if let Some(user) = &config.username {
            let password = match &config.password {
                Some(p) => p
                    .resolve()
                    .map_err(|m| anyhow::anyhow!("[email.smtp] password: {m}"))?,
                None => anyhow::bail!("[email.smtp] username is set without a password"),
            };
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Smtp(builder.build()))
    }
}

impl Transport for Smtp {
    fn send<'a>(&'a self, mail: &'a Mail) -> BoxFuture<'a, std::result::Result<(), SendError>> {
        Box::pin(async move {
            match self.0.send(mail.message.clone()).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_permanent() && e.status().is_some_and(refuses_recipient) => {
                    Err(SendError::Permanent(e.to_string()))
                }
                // Everything else — the connection, a 4xx, and 5xx that
                // are about the server or Bursar's own settings (a wrong
                // password, a refused sender) — waits for a later try
                // rather than failing every mail due.
                Err(e) => Err(SendError::Transient(e.to_string())),
            }
        })
    }
}

/// Replies that refuse this mail for good: no such mailbox (550, 551,
/// 553), too large for it (552), or a bad address (501, 553).
fn refuses_recipient(code: lettre::transport::smtp::response::Code) -> bool {
    matches!(u16::from(code), 501 | 550 | 551 | 552 | 553)
}

/// Writes each mail as `{notification id}.eml` into a directory (written
/// whole, then renamed into place: a retry replaces, never doubles).
pub struct FileTransport(pub PathBuf);

impl Transport for FileTransport {
    fn send<'a>(&'a self, mail: &'a Mail) -> BoxFuture<'a, std::result::Result<(), SendError>> {
        Box::pin(async move {
            let bytes = mail.message.formatted();
            let dir = self.0.clone();
            let name = format!("{}.eml", mail.notification_id);
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir)?;
                let tmp = dir.join(format!(".{name}.tmp"));
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, dir.join(name))
            })
            .await
            .map_err(|e| SendError::Transient(e.to_string()))?
            .map_err(|e| SendError::Transient(format!("{}: {e}", self.0.display())))
        })
    }
}

/// Retries double from this, up to an hour.
const FIRST_RETRY_SECS: i64 = 30;
const MAX_RETRY_SECS: i64 = 3600;
/// A notification claimed by a mailer is left alone by others this long:
/// well above a batch's worst case (every send timing out, or waiting for
/// the rate limit).
pub const CLAIM_SECS: i64 = 600;
/// Claimed per pass.
const BATCH: usize = 5;
/// A notification that cannot be rendered (a template or the PDF fails)
/// this many times is marked failed; sending is retried for as long as
/// it takes.
const MAX_RENDER_ATTEMPTS: i64 = 20;

/// Renders and sends what is due.
pub struct Mailer {
    store: Store,
    templates: Arc<Templates>,
    config: EmailConfig,
    company: CompanyConfig,
    from: Mailbox,
    staff_to: Option<Mailbox>,
    transport: Arc<dyn Transport>,
    secrets: Option<Arc<Secrets>>,
    limiter: governor::DefaultDirectRateLimiter,
    /// Dates of accounts without their own time zone are shown in this one.
    zone: crate::calendar::Zone,
    /// Refreshes the planner's view of the queue when a claim was slow.
    statistics: ClaimStatistics,
}

/// The transport `[email]` asks for (none when `off`).
pub fn transport(config: &EmailConfig) -> anyhow::Result<Option<Arc<dyn Transport>>> {
    Ok(match config.transport {
        TransportKind::Off => None,
        TransportKind::File => Some(Arc::new(FileTransport(config.dir.clone()))),
        TransportKind::Smtp => Some(Arc::new(Smtp::new(&config.smtp)?)),
    })
}

impl Mailer {
    pub fn new(
        store: Store,
        templates: Arc<Templates>,
        config: EmailConfig,
        company: CompanyConfig,
        transport: Arc<dyn Transport>,
        secrets: Option<Arc<Secrets>>,
    ) -> anyhow::Result<Mailer> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("[email] from `{}`: {e}", config.from))?;
        let staff_to = match &config.staff_to {
            Some(s) => Some(
                s.parse()
                    .map_err(|e| anyhow::anyhow!("[email] staff_to `{s}`: {e}"))?,
            ),
            None => None,
        };
        let per_minute = NonZeroU32::new(config.per_minute.max(1)).expect("at least one");
        let limiter = governor::RateLimiter::direct(governor::Quota::per_minute(per_minute));
        Ok(Mailer {
            store,
            templates,
            config,
            company,
            from,
            staff_to,
            transport,
            secrets,
            limiter,
            zone: crate::calendar::Zone::UTC,
            statistics: ClaimStatistics::new("notifications"),
        })
    }

    /// Dates of accounts without their own time zone in `zone` (the
    /// deployment's `[billing] time_zone`).
    pub fn with_time_zone(mut self, zone: crate::calendar::Zone) -> Mailer {
        self.zone = zone;
        self
    }

    /// Sends what is due at `now`; returns how many went out.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<usize> {
        self.run_while(now, None).await
    }

    /// [`run_once`](Self::run_once), leaving between messages (and out of
    /// the rate limit's wait) once `stop` says so: a shutdown does not wait
    /// for a backlog that the rate limit spreads over hours.
    async fn run_while(&self, now: DateTime<Utc>, stop: Option<&Stop>) -> Result<usize> {
        let mut sent = 0;
        // A few at a time, so that a claim never outlives its window.
        while !stop.is_some_and(|s| *s.borrow()) {
            let n = self.run_batch(now, stop).await?;
            if n.claimed == 0 {
                break;
            }
            sent += n.sent;
        }
        Ok(sent)
    }

    /// Claims one batch and works it.
    async fn run_batch(&self, now: DateTime<Utc>, stop: Option<&Stop>) -> Result<Batch> {
        let until = now + chrono::Duration::seconds(CLAIM_SECS);
        let claimed = self
            .statistics
            .claim(&self.store, async |c| {
                repo::claim_due(c, now, until, BATCH).await
            })
            .await?;
        let mut sent = 0;
        let count = claimed.len();
        for n in claimed {
            // A message that panics (a library refusing a value) is one
            // failed message, not a dead mailer.
            let outcome = std::panic::AssertUnwindSafe(self.deliver(&n, stop))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Delivery::Failed("rendering or sending panicked".into()));
            let (outcome, to) = match &outcome {
                // Stopping: this message and the rest of the batch are sent
                // once their claims lapse, by this process's successor.
                Delivery::Stopped => break,
                Delivery::Sent(to) => (Outcome::Sent { recipient: to }, Some(to)),
                Delivery::Skipped(why) => (Outcome::Skipped { why }, None),
                Delivery::Failed(error) => {
                    tracing::warn!(notification = %n.notification_id, kind = n.kind.as_str(), %error, "e-mail cannot be sent");
                    (Outcome::Failed { error }, None)
                }
                Delivery::Retry(error) => {
                    let backoff = (FIRST_RETRY_SECS << n.attempts.clamp(0, 20)).min(MAX_RETRY_SECS);
                    tracing::warn!(notification = %n.notification_id, kind = n.kind.as_str(), %error, "e-mail not sent; will retry");
                    metrics::counter!("bursar_email_failures_total").increment(1);
                    let retry_at = now + chrono::Duration::seconds(backoff);
                    (Outcome::Retry { error, retry_at }, None)
                }
            };
            if to.is_some() {
                sent += 1;
                metrics::counter!("bursar_emails_sent_total", "kind" => n.kind.as_str())
                    .increment(1);
            }
            let mut tx = self.store.begin().await?;
            repo::finish(tx.conn(), n.id, outcome, now).await?;
            tx.commit().await?;
        }
        Ok(Batch {
            claimed: count,
            sent,
        })
    }

    async fn deliver(&self, n: &Notification, stop: Option<&Stop>) -> Delivery {
        if stop.is_some_and(|s| *s.borrow()) {
            return Delivery::Stopped;
        }
        let mail = match self.compose(n).await {
            Ok(Composed::Mail(mail)) => mail,
            Ok(Composed::Skip(why)) => return Delivery::Skipped(why),
            Err(Compose::Gone(e)) => return Delivery::Failed(e),
            Err(Compose::Later(e)) if n.attempts + 1 >= MAX_RENDER_ATTEMPTS => {
                return Delivery::Failed(format!("gave up after {} attempts: {e}", n.attempts + 1));
            }
            Err(Compose::Later(e)) => return Delivery::Retry(e),
        };
        let to = mail
            .message
            .envelope()
            .to()
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        match stop {
            Some(stop) => {
                let mut stop = stop.clone();
                tokio::select! {
                    _ = self.limiter.until_ready() => {}
                    _ = stop.wait_for(|stopping| *stopping) => return Delivery::Stopped,
                }
            }
            None => self.limiter.until_ready().await,
        }
        match self.transport.send(&mail).await {
            Ok(()) => Delivery::Sent(to),
            Err(SendError::Transient(e)) => Delivery::Retry(e),
            Err(SendError::Permanent(e)) => Delivery::Failed(e),
        }
    }

    /// The mail a notification makes now, or why none.
    pub async fn compose(&self, n: &Notification) -> std::result::Result<Composed, Compose> {
        let mut r = self.store.reader().await.map_err(later)?;
        let facts = Facts::load(r.conn(), &n.data).await?;
        let (to, lang) = match (n.kind.is_staff(), &facts.account) {
            (true, _) => match &self.staff_to {
                Some(to) => (to.clone(), self.config.default_language.clone()),
                None => return Ok(Composed::Skip("no [email] staff_to".into())),
            },
            (false, Some(account)) => {
                if n.kind.is_optional() && account.email_opt_out.contains(&n.kind) {
                    return Ok(Composed::Skip("turned off by the customer".into()));
                }
                let to = Mailbox::new(
                    Some(display_name(&account.name)),
                    account.email.parse().map_err(|e| {
                        Compose::Gone(format!(
                            "account {}: e-mail {}: {e}",
                            account.id, account.email
                        ))
                    })?,
                );
                (to, account.language.clone())
            }
            (false, None) => {
                return Err(Compose::Gone(format!(
                    "{}: no account to write to in {}",
                    n.kind.as_str(),
                    n.data
                )));
            }
        };
        let ctx = self.context(r.conn(), n, &facts).await?;
        let rendered = self
            .templates
            .message(n.kind, &lang, &ctx)
            .map_err(Compose::Later)?;
        let mut attachments = Vec::new();
        if n.kind == Kind::InvoiceIssued
            && let (Some(invoice), Some(account)) = (&facts.invoice, &facts.account)
        {
            let zone = account.time_zone.unwrap_or(self.zone);
            let doc = crate::templates::invoice_context(invoice, account, &self.company, zone);
            let html = self
                .templates
                .invoice_html(&account.language, &doc)
                .map_err(Compose::Later)?;
            let pdf = crate::templates::pdf::render(html)
                .await
                .map_err(Compose::Later)?;
            attachments.push((format!("{}.pdf", invoice.number), pdf));
        }
        drop(r);
        let domain = self.from.email.domain().to_owned();
        let message_id = format!("<{}@{domain}>", n.notification_id);
        let body = MultiPart::alternative_plain_html(rendered.text, rendered.html);
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(message_id.clone()))
            .date(n.created_at.into());
        let message = match attachments.is_empty() {
            true => builder.multipart(body),
            false => {
                let mut mixed = MultiPart::mixed().multipart(body);
                for (name, bytes) in attachments {
                    let pdf = ContentType::parse("application/pdf").expect("a valid content type");
                    mixed = mixed.singlepart(Attachment::new(name).body(bytes, pdf));
                }
                builder.multipart(mixed)
            }
        }
        .map_err(|e| Compose::Gone(format!("building the message: {e}")))?;
        Ok(Composed::Mail(Mail {
            message_id,
            notification_id: n.notification_id.clone(),
            message,
        }))
    }

    /// What the templates are told: the sample context's fields, filled
    /// from the store.
    async fn context(
        &self,
        mut c: Conn<'_>,
        n: &Notification,
        facts: &Facts,
    ) -> std::result::Result<Value, Compose> {
        let data = &n.data;
        let mut ctx = json!({
            "kind": n.kind.as_str(),
            "company": self.company,
            "portal_url": self.company.portal_url,
            "topup_url": self.company.link("payments/new"),
        });
        let zone = facts
            .account
            .as_ref()
            .and_then(|a| a.time_zone)
            .unwrap_or(self.zone);
        if let Some(a) = &facts.account {
            let balance = ledger_repo::balance(
                c.reborrow(),
                &crate::ledger::LedgerAccountId::customer(&a.id),
            )
            .await
            .map_err(later)?;
            ctx["account"] = json!({
                "id": a.id, "name": display_name(&a.name), "email": a.email, "currency": a.currency.code(),
                "balance": format_money(balance.balance, a.currency),
                "time_zone": zone.name(),
            });
        }
        if let Some(s) = &facts.service {
            let plan = plans_repo::get(c.reborrow(), &s.plan_id)
                .await
                .map_err(later)?;
            let deletion = match (s.status, s.suspend_reason, s.suspended_at) {
                (
                    crate::services::ServiceStatus::Suspended,
                    Some(crate::services::SuspendReason::NonPayment),
                    Some(at),
                ) => crate::calendar::add_units(
                    at,
                    crate::calendar::PeriodUnit::Day,
                    plan.spec.deletion_days,
                    s.time_zone,
                ),
                _ => None,
            };
            let mut service = json!({
                "id": s.id, "plan": plan.spec.name, "status": s.status.as_str(),
                "params": s.params,
                "paid_until": s.paid_until.map(|t| s.time_zone.format(t)),
                "suspend_reason": s.suspend_reason.map(|r| r.as_str()),
                "deletion_date": deletion.map(|t| s.time_zone.format(t)),
                "url": self.company.link(&format!("services/{}", s.id)),
                "credentials_url": self.company.link(&format!("services/{}#credentials", s.id)),
            });
            if n.kind == Kind::ServiceActive
                && self.config.include_credentials
                && let Some(secrets) = &self.secrets
            {
                let creds = services_repo::secret_params(c.reborrow(), &s.id, secrets)
                    .await
                    .map_err(later)?;
                if !creds.is_empty() {
                    service["credentials"] = json!(creds);
                }
            }
            ctx["service"] = service;
            ctx["order"] = json!({
                "awaiting_payment": data.get("to").and_then(Value::as_str) == Some("ordered"),
                "amount_due": format_money(s.amount_due, s.currency),
            });
        }
        if let Some(p) = &facts.payment {
            ctx["payment"] = json!({
                "id": p.id, "amount": format_money(p.amount, p.currency), "gateway": p.gateway,
            });
        }
        if let Some(i) = &facts.invoice {
            ctx["invoice"] = json!({
                "id": i.id, "number": i.number, "kind": i.kind.as_str(),
                "total": format_money(i.total, i.currency),
                "url": self.company.link(&format!("invoices/{}", i.id)),
            });
        }
        if let (Some(p), Some(amount)) = (
            &facts.payment,
            data.get("refund_amount").and_then(Value::as_i64),
        ) {
            ctx["refund"] = json!({
                "id": data["refund_id"], "payment_id": p.id, "gateway": p.gateway,
                "amount": format_money(amount, p.currency),
            });
        }
        if data.get("operation_id").is_some() {
            ctx["operation"] = json!({
                "id": data["operation_id"], "kind": data["kind"], "module": data["module"],
                "attempts": data["attempts"], "error": data["error"],
                "service_id": data["service_id"],
                "url": self.company.link("staff/operations"),
            });
        }
        // What a reminder worked out when it was recorded.
        for key in ["renewal", "threshold", "reset"] {
            if let Some(v) = data.get(key) {
                ctx[key] = v.clone();
            }
        }
        Ok(ctx)
    }

    /// Runs until shutdown, every `poll_interval_ms`, at the times `clock`
    /// tells.
    pub fn spawn(
        self,
        clock: crate::clock::SharedClock,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let every = Duration::from_millis(self.config.poll_interval_ms.max(10));
        tokio::spawn(async move {
            loop {
                let pass = self.run_while(clock.now(), Some(&shutdown));
                if let Err(e) = pass.await {
                    tracing::warn!(error = %e, "e-mail pass failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    break;
                }
            }
        })
    }
}

/// Tells the mailer to stop (true once `serve` is stopping).
type Stop = tokio::sync::watch::Receiver<bool>;

/// A display name fit for a header: control characters (a line break a
/// customer typed into their name) become spaces.
fn display_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a notification's data points at, as stored now.
#[derive(Default)]
struct Facts {
    account: Option<crate::accounts::Account>,
    service: Option<crate::services::Service>,
    payment: Option<crate::payments::Payment>,
    invoice: Option<crate::invoices::Invoice>,
}

impl Facts {
    async fn load(mut c: Conn<'_>, data: &Value) -> std::result::Result<Facts, Compose> {
        let id = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_owned);
        let mut f = Facts::default();
        if let Some(s) = id("service_id") {
            f.service = Some(services_repo::get(c.reborrow(), &s).await.map_err(gone)?);
        }
        if let Some(p) = id("payment_id") {
            f.payment = Some(payments_repo::get(c.reborrow(), &p).await.map_err(gone)?);
        }
        if let Some(i) = id("invoice_id") {
            f.invoice = Some(invoices_repo::get(c.reborrow(), &i).await.map_err(gone)?);
        }
        let account = id("account_id")
            .or_else(|| f.service.as_ref().map(|s| s.account_id.clone()))
            .or_else(|| f.payment.as_ref().map(|p| p.account_id.clone()))
            .or_else(|| f.invoice.as_ref().map(|i| i.account_id.clone()));
        if let Some(a) = account {
            f.account = Some(accounts_repo::get(c.reborrow(), &a).await.map_err(gone)?);
        }
        Ok(f)
    }
}

/// What a notification makes.
pub enum Composed {
    Mail(Mail),
    /// Nothing to send, and why.
    Skip(String),
}

/// Why a notification could not be composed.
#[derive(Debug)]
pub enum Compose {
    /// What it is about is gone: never.
    Gone(String),
    /// The store or a template failed: later.
    Later(String),
}

fn later(e: crate::error::Error) -> Compose {
    Compose::Later(e.to_string())
}

fn gone(e: crate::error::Error) -> Compose {
    match e {
        crate::error::Error::NotFound { .. } => Compose::Gone(e.to_string()),
        e => Compose::Later(e.to_string()),
    }
}

/// What one batch did.
struct Batch {
    claimed: usize,
    sent: usize,
}

enum Delivery {
    /// Not tried: the mailer is stopping.
    Stopped,
    Sent(String),
    Skipped(String),
    Retry(String),
    Failed(String),
}
