//! One plugin instance's sandbox, whatever world it implements: a fresh
//! `Store` per call with the memory cap and the deadline armed, the call
//! under an outer timeout, output sent to the log, failures classified and
//! counted. The store is dropped after the call, trapped or not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use metrics::Histogram;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, Instance, InstancePre, Lift, Lower,
    TypedFunc,
};
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::plugins::since_v0_1::processing::bursar::plugin::types::{PluginError, PluginInfo};
use crate::plugins::{HttpPolicy, LoadError, PluginHost, PluginState, check_export, validate};
use crate::services::module::ModuleError;

/// What a plugin instance is allowed.
#[derive(Debug, Clone)]
pub struct InstanceLimits {
    /// Longest a call may run (CPU and waiting alike).
    pub timeout: Duration,
    /// Linear memory cap.
    pub memory_bytes: usize,
    /// Largest HTTP response body the plugin may read.
    pub max_response_bytes: u64,
}

/// A pre-instantiated component with its instance's name, HTTP policy and
/// limits.
pub struct Sandbox {
    name: String,
    pre: InstancePre<PluginState>,
    policy: Arc<HttpPolicy>,
    limits: InstanceLimits,
    /// `bursar_plugin_call_seconds` of this instance, registered once.
    call_seconds: Histogram,
    /// The same calls, kept for the staff console's plugins page.
    stats: std::sync::Mutex<CallStats>,
}

/// How many failures an instance's stats keep, newest first.
const KEPT_ERRORS: usize = 5;

/// What an instance's calls did since the process started.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CallStats {
    pub calls: u64,
    pub failures: u64,
    pub total_micros: u64,
    pub max_micros: u64,
    /// The latest failures, newest first.
    pub last_errors: Vec<CallFailure>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CallFailure {
    pub kind: &'static str,
    pub message: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

impl CallStats {
    /// The mean call time, in microseconds.
    pub fn mean_micros(&self) -> u64 {
        self.total_micros.checked_div(self.calls).unwrap_or(0)
    }
}

impl Sandbox {
    pub fn new(
        name: &str,
        pre: InstancePre<PluginState>,
        policy: HttpPolicy,
        limits: InstanceLimits,
    ) -> Self {
        // Handles are bound to the recorder installed when they are made.
        crate::metrics::install();
        Sandbox {
            name: name.to_owned(),
            pre,
            policy: Arc::new(policy),
            limits,
            call_seconds: metrics::histogram!("bursar_plugin_call_seconds", "plugin" => name.to_owned()),
            stats: Default::default(),
        }
    }

    /// Its calls since the process started.
    pub fn stats(&self) -> CallStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A fresh store with the memory cap and the deadline armed: every
    /// epoch tick the guest yields to the runtime, and past the deadline it
    /// is interrupted.
    pub fn store(&self) -> Store<PluginState> {
        let state = PluginState::new(self.policy.clone(), self.limits.memory_bytes);
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        let deadline = Instant::now() + self.limits.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store
    }

    /// A fresh store and instance for one call.
    async fn instantiate(&self) -> Result<(Store<PluginState>, Instance), ModuleError> {
        let mut store = self.store();
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| classify(&store, e, self.limits.timeout))?;
        Ok((store, instance))
    }

    /// Runs one export on a fresh instance under the limits.
    pub async fn run<R, F>(&self, call: F) -> Result<R, ModuleError>
    where
        F: for<'a> FnOnce(
            &'a Instance,
            &'a mut Store<PluginState>,
        ) -> BoxFuture<'a, wasmtime::Result<Result<R, PluginError>>>,
    {
        let started = Instant::now();
        let (mut store, instance) = self.instantiate().await?;
        // The outer timeout catches what the epoch cannot: a host call
        // (HTTP) that hangs. It leaves a little room for the epoch first.
        let outer = self.limits.timeout + Duration::from_millis(250);
        let result = tokio::time::timeout(outer, call(&instance, &mut store)).await;
        store.data().flush_output();
        let took = started.elapsed();
        self.call_seconds.record(took.as_secs_f64());
        {
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            stats.calls += 1;
            stats.total_micros = stats.total_micros.saturating_add(micros);
            stats.max_micros = stats.max_micros.max(micros);
        }
        let outcome = match result {
            Err(_) => Err(ModuleError::Timeout(format!(
                "no answer within {} ms",
                self.limits.timeout.as_millis()
            ))),
            Ok(Err(trap)) => Err(classify(&store, trap, self.limits.timeout)),
            Ok(Ok(Err(plugin_error))) => Err(validate::plugin_error(plugin_error)),
            Ok(Ok(Ok(value))) => Ok(value),
        };
        // The store is dropped here: an instance never serves two calls.
        self.counted(outcome)
    }

    /// Counts a failed call in the metrics, by plugin and failure kind.
    pub fn counted<T>(&self, result: Result<T, ModuleError>) -> Result<T, ModuleError> {
        if let Err(e) = &result {
            metrics::counter!("bursar_plugin_failures_total", "plugin" => self.name.clone(), "kind" => e.kind())
                .increment(1);
            let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            stats.failures += 1;
            stats.last_errors.insert(
                0,
                CallFailure {
                    kind: e.kind(),
                    message: e.to_string(),
                    at: chrono::Utc::now(),
                },
            );
            stats.last_errors.truncate(KEPT_ERRORS);
        }
        result
    }
}

/// Compiles (or loads from the cache) a component, checks that it exports
/// `bursar:plugin/{interface}` of the supported version, and links it.
pub fn prepare(
    host: &PluginHost,
    name: &str,
    bytes: &[u8],
    interface: &str,
) -> Result<(Component, InstancePre<PluginState>), LoadError> {
    let component = host.compile(name, bytes)?;
    check_export(host.engine(), name, &component, interface)?;
    let pre = host
        .linker()
        .instantiate_pre(&component)
        .map_err(|e| wasm_error(name, e))?;
    Ok((component, pre))
}

/// A wasmtime failure while loading instance `name`.
pub fn wasm_error(name: &str, error: wasmtime::Error) -> LoadError {
    LoadError::Wasmtime {
        name: name.to_owned(),
        error,
    }
}

/// What a plugin's `info` is taken to be until it has answered.
pub fn unanswered_info() -> PluginInfo {
    PluginInfo {
        name: String::new(),
        version: String::new(),
        features: vec![],
    }
}

/// Where `bursar:plugin/{interface}` of the supported version is exported.
pub fn interface_index(component: &Component, interface: &str) -> Option<ComponentExportIndex> {
    let name = format!(
        "bursar:plugin/{interface}@{}",
        crate::plugins::since_v0_1::VERSION
    );
    component.get_export_index(None, &name)
}

/// One export of a fresh instance as a typed function.
pub fn typed<P, R>(
    instance: &Instance,
    store: &mut Store<PluginState>,
    index: &ComponentExportIndex,
) -> wasmtime::Result<TypedFunc<P, R>>
where
    P: ComponentNamedList + Lower,
    R: ComponentNamedList + Lift,
{
    let func = instance
        .get_func(&mut *store, index)
        .ok_or_else(|| wasmtime::format_err!("the component lost an export"))?;
    // SAFETY: every export of the component was type-checked against these
    // exact signatures (the generated bindings') when it was loaded, and
    // instances of one component never differ in their types.
    Ok(unsafe { TypedFunc::new_unchecked(func) })
}

/// Turns a wasmtime error into the failure kind the runner acts on.
fn classify(store: &Store<PluginState>, e: wasmtime::Error, timeout: Duration) -> ModuleError {
    if store.data().limits.exceeded {
        return ModuleError::OutOfMemory(format!("{e:#}"));
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            ModuleError::Timeout(format!("ran past its {} ms deadline", timeout.as_millis()))
        }
        _ => ModuleError::Trap(format!("{e:#}")),
    }
}
