//! The seam between the engine and provisioning: [`ProcessingModule`].
//!
//! The operation runner calls a module with a [`ModuleRequest`] and gets an
//! outcome or a [`ModuleError`]; errors are data, and each kind has one
//! retry rule (see [`ModuleError::retryable`]). The operation id is the
//! idempotency key: a module may be called again with the same id after a
//! crash and must not do the work twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::calendar::Period;
use crate::catalog::AddonValues;
use crate::services::OperationKind;

/// What a module knows about the service it works on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceContext {
    pub service_id: String,
    pub plan_id: String,
    pub account_id: String,
    pub account_email: String,
    pub period: Period,
    /// The plan's module settings.
    pub settings: BTreeMap<String, String>,
    /// What the module returned earlier (server id, IPs…).
    pub params: BTreeMap<String, String>,
    pub addons: AddonValues,
}

/// One call into a module.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModuleRequest {
    /// The operation id: the module's idempotency key.
    pub operation_id: String,
    pub kind: OperationKind,
    /// True when asking about work the module reported in progress.
    pub poll: bool,
    /// The module's own reference to that work.
    pub remote_ref: Option<String>,
    pub service: ServiceContext,
    /// Kind-specific details (the new plan of a change, the prolonged period).
    pub payload: serde_json::Value,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleOutcome {
    /// Finished. `params` are stored on the service; `secret_params` too,
    /// but never shown in lists or logs.
    Done {
        params: Vec<(String, String)>,
        secret_params: Vec<(String, String)>,
    },
    /// Started remotely; ask again with `poll` after `poll_after`.
    InProgress {
        remote_ref: String,
        poll_after: Duration,
        progress: Option<String>,
    },
    /// Nothing automatic can do it: staff must (the `manual` module).
    NeedsStaff(String),
}

impl ModuleOutcome {
    pub fn done() -> Self {
        ModuleOutcome::Done {
            params: vec![],
            secret_params: vec![],
        }
    }
}

/// Why a module call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    #[error("unavailable: {message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("internal plugin error: {0}")]
    Internal(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    #[error("no module instance named `{0}`")]
    UnknownModule(String),
    #[error("the plugin answered something invalid: {0}")]
    InvalidResult(String),
}

impl ModuleError {
    /// A short stable name, recorded on the operation and in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ModuleError::Unavailable { .. } => "unavailable",
            ModuleError::Rejected(_) => "rejected",
            ModuleError::InvalidConfig(_) => "invalid_config",
            ModuleError::NotFound(_) => "not_found",
            ModuleError::Unsupported(_) => "unsupported",
            ModuleError::Internal(_) => "internal",
            ModuleError::Timeout(_) => "timeout",
            ModuleError::Trap(_) => "trap",
            ModuleError::OutOfMemory(_) => "out_of_memory",
            ModuleError::UnknownModule(_) => "unknown_module",
            ModuleError::InvalidResult(_) => "invalid_result",
        }
    }

    /// Retried with backoff (then manual after the last attempt), or
    /// straight to the manual queue. Crashes of a plugin — traps, timeouts,
    /// memory overruns — are retried with a fresh instance.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ModuleError::Unavailable { .. }
                | ModuleError::Internal(_)
                | ModuleError::Timeout(_)
                | ModuleError::Trap(_)
                | ModuleError::OutOfMemory(_)
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ModuleError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What a module call returns.
pub type ModuleResult = Result<ModuleOutcome, ModuleError>;

/// A provisioning back-end.
pub trait ProcessingModule: Send + Sync {
    fn call<'a>(&'a self, request: &'a ModuleRequest) -> BoxFuture<'a, ModuleResult>;

    /// What the module says it does beyond the required calls (its
    /// `info` features): `sync`, and `requires:A|B` — a plan on it must set
    /// module setting `A` or `B`, or offer an add-on of that code.
    fn features(&self) -> Vec<String> {
        vec![]
    }
}

/// What a plan on a module with `features` lacks: the first `requires:`
/// that neither its module settings nor its add-ons satisfy.
pub fn missing_requirement(
    features: &[String],
    settings: &BTreeMap<String, String>,
    addon_codes: &[&str],
) -> Option<String> {
    features
        .iter()
        .filter_map(|f| f.strip_prefix("requires:"))
        .find(|alternatives| {
            !alternatives.split('|').any(|name| {
                settings.get(name).is_some_and(|v| !v.trim().is_empty())
                    || addon_codes.contains(&name)
            })
        })
        .map(|a| a.replace('|', "` or `"))
}

/// The `manual` module: every operation waits for staff.
pub struct ManualModule;

impl ProcessingModule for ManualModule {
    fn call<'a>(&'a self, request: &'a ModuleRequest) -> BoxFuture<'a, ModuleResult> {
        let what = request.kind.as_str();
        Box::pin(async move {
            Ok(ModuleOutcome::NeedsStaff(format!(
                "the plan is provisioned by hand: do `{what}` and complete the operation"
            )))
        })
    }
}

/// Module instances by name. `manual` is always there.
#[derive(Clone)]
pub struct ModuleRegistry {
    modules: HashMap<String, Arc<dyn ProcessingModule>>,
}

impl Default for ModuleRegistry {
    fn default() -> Self {
        let mut modules: HashMap<String, Arc<dyn ProcessingModule>> = HashMap::new();
        modules.insert("manual".into(), Arc::new(ManualModule));
        ModuleRegistry { modules }
    }
}

impl ModuleRegistry {
    pub fn insert(&mut self, name: impl Into<String>, module: Arc<dyn ProcessingModule>) {
        self.modules.insert(name.into(), module);
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn ProcessingModule>> {
        self.modules.get(name).cloned()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(name)
    }

    /// Whether the named instance checks and repairs its services' state
    /// (lists the `sync` feature).
    pub fn syncs(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|m| m.features().iter().any(|f| f == "sync"))
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.modules.keys().cloned().collect();
        v.sort();
        v
    }
}

/// A scriptable module for tests: answers from a queue of outcomes per
/// operation kind (then `Done`), and records every call it receives.
#[derive(Default)]
pub struct ScriptedModule {
    script: Mutex<HashMap<(OperationKind, bool), VecDeque<ModuleResult>>>,
    calls: Mutex<Vec<ModuleRequest>>,
    in_flight: Mutex<HashMap<String, usize>>,
    overlaps: Mutex<Vec<String>>,
    delay: Mutex<Duration>,
    gate: Mutex<Option<Arc<tokio::sync::Barrier>>>,
    features: Mutex<Vec<String>>,
}

impl ScriptedModule {
    pub fn new() -> Arc<Self> {
        Arc::new(ScriptedModule::default())
    }

    /// Queues an answer to the next `kind` call (`poll` for polls).
    pub fn push(
        &self,
        kind: OperationKind,
        poll: bool,
        outcome: Result<ModuleOutcome, ModuleError>,
    ) {
        self.script
            .lock()
            .expect("lock")
            .entry((kind, poll))
            .or_default()
            .push_back(outcome);
    }

    /// What the module says it does (`sync`, `requires:…`).
    pub fn set_features(&self, features: &[&str]) {
        *self.features.lock().expect("lock") = features.iter().map(|f| (*f).to_owned()).collect();
    }

    /// Makes every call take this long (to widen race windows).
    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().expect("lock") = d;
    }

    /// Makes calls wait until `n` of them are under way, then answer
    /// together (outcomes that come in at once).
    pub fn answer_together(&self, n: usize) {
        *self.gate.lock().expect("lock") = Some(Arc::new(tokio::sync::Barrier::new(n)));
    }

    pub fn calls(&self) -> Vec<ModuleRequest> {
        self.calls.lock().expect("lock").clone()
    }

    /// Operation ids that were being worked on by two calls at once.
    pub fn overlaps(&self) -> Vec<String> {
        self.overlaps.lock().expect("lock").clone()
    }
}

impl ProcessingModule for ScriptedModule {
    fn features(&self) -> Vec<String> {
        self.features.lock().expect("lock").clone()
    }

    fn call<'a>(&'a self, request: &'a ModuleRequest) -> BoxFuture<'a, ModuleResult> {
        Box::pin(async move {
            self.calls.lock().expect("lock").push(request.clone());
            {
                let mut flying = self.in_flight.lock().expect("lock");
                let n = flying.entry(request.operation_id.clone()).or_default();
                *n += 1;
                if *n > 1 {
                    self.overlaps
                        .lock()
                        .expect("lock")
                        .push(request.operation_id.clone());
                }
            }
            let delay = *self.delay.lock().expect("lock");
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let gate = self.gate.lock().expect("lock").clone();
            if let Some(gate) = gate {
                gate.wait().await;
            }
            let answer = self
                .script
                .lock()
                .expect("lock")
                .get_mut(&(request.kind, request.poll))
                .and_then(VecDeque::pop_front)
                .unwrap_or_else(|| Ok(ModuleOutcome::done()));
            if let Some(n) = self
                .in_flight
                .lock()
                .expect("lock")
                .get_mut(&request.operation_id)
            {
                *n -= 1;
            }
            answer
        })
    }
}
