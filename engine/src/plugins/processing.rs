//! Processing modules as WASM components: the host side of
//! `bursar:plugin/processing`, implementing the engine's
//! [`ProcessingModule`](crate::services::module::ProcessingModule) trait.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use wasmtime::component::Component;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::plugins::since_v0_1::processing::bursar::plugin::types::{PluginError, PluginInfo};
use crate::plugins::since_v0_1::processing::exports::bursar::plugin::processing as wit;
use crate::plugins::since_v0_1::processing::{ProcessingModule as Bindings, ProcessingModulePre};
use crate::plugins::validate;
use crate::plugins::{HttpPolicy, LoadError, PluginHost, PluginState, check_export};
use crate::services::OperationKind;
use crate::services::module::{ModuleError, ModuleRequest, ModuleResult, ProcessingModule};

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

/// A loaded processing module instance: its pre-instantiated component,
/// settings and limits.
pub struct ProcessingPlugin {
    name: String,
    pre: ProcessingModulePre<PluginState>,
    info: PluginInfo,
    settings: Vec<(String, String)>,
    policy: HttpPolicy,
    limits: InstanceLimits,
}

/// A settings list with the plan's settings laid over the instance's.
fn merged(
    base: &[(String, String)],
    over: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut map: std::collections::BTreeMap<String, String> = base.iter().cloned().collect();
    map.extend(over);
    map.into_iter().collect()
}

impl ProcessingPlugin {
    /// Compiles (or loads from cache), checks the exported interface and
    /// its version, pre-instantiates, and asks the plugin for its `info`.
    pub async fn load(
        host: &PluginHost,
        name: &str,
        bytes: &[u8],
        settings: Vec<(String, String)>,
        policy: HttpPolicy,
        limits: InstanceLimits,
    ) -> Result<ProcessingPlugin, LoadError> {
        let component: Component = host.compile(name, bytes)?;
        check_export(host.engine(), name, &component, "processing")?;
        let wasm_err = |source| LoadError::Wasmtime {
            name: name.to_owned(),
            source,
        };
        let instance_pre = host
            .linker()
            .instantiate_pre(&component)
            .map_err(wasm_err)?;
        let pre = ProcessingModulePre::new(instance_pre).map_err(wasm_err)?;
        let mut plugin = ProcessingPlugin {
            name: name.to_owned(),
            pre,
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                features: vec![],
            },
            settings,
            policy,
            limits,
        };
        let info = plugin.call_info().await.map_err(|e| LoadError::Invalid {
            name: name.to_owned(),
            message: format!("`info` failed: {e}"),
        })?;
        plugin.info = info;
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// A fresh store and instance for one call, with the memory cap and the
    /// deadline armed: every epoch tick the guest yields to the runtime, and
    /// past the deadline it is interrupted.
    async fn instantiate(&self) -> Result<(Store<PluginState>, Bindings), ModuleError> {
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
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| classify(&store, e, self.limits.timeout))?;
        Ok((store, bindings))
    }

    /// Runs one export on a fresh instance under the limits.
    async fn run<R, F>(&self, call: F) -> Result<R, ModuleError>
    where
        F: for<'a> FnOnce(
            &'a Bindings,
            &'a mut Store<PluginState>,
        ) -> BoxFuture<'a, wasmtime::Result<Result<R, PluginError>>>,
    {
        let started = Instant::now();
        let (mut store, bindings) = self.instantiate().await?;
        // The outer timeout catches what the epoch cannot: a host call
        // (HTTP) that hangs. It leaves a little room for the epoch first.
        let outer = self.limits.timeout + Duration::from_millis(250);
        let result = tokio::time::timeout(outer, call(&bindings, &mut store)).await;
        store.data().flush_output();
        metrics::histogram!("bursar_plugin_call_seconds", "plugin" => self.name.clone())
            .record(started.elapsed().as_secs_f64());
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
    fn counted<T>(&self, result: Result<T, ModuleError>) -> Result<T, ModuleError> {
        if let Err(e) = &result {
            metrics::counter!("bursar_plugin_failures_total", "plugin" => self.name.clone(), "kind" => e.kind())
                .increment(1);
        }
        result
    }

    pub async fn call_info(&self) -> Result<PluginInfo, ModuleError> {
        let info = self
            .run(|b, s| {
                Box::pin(async move { b.bursar_plugin_processing().call_info(s).await.map(Ok) })
            })
            .await?;
        self.counted(validate::info(info))
    }

    /// Runs `check-connection` with the instance's settings.
    pub async fn check_connection(&self) -> Result<(), ModuleError> {
        let settings = self.settings.clone();
        self.run(move |b, s| {
            Box::pin(async move {
                b.bursar_plugin_processing()
                    .call_check_connection(s, &settings)
                    .await
            })
        })
        .await
    }

    /// Runs `catalog` with the instance's settings.
    pub async fn catalog(&self) -> Result<Vec<wit::CatalogItem>, ModuleError> {
        let settings = self.settings.clone();
        let items = self
            .run(move |b, s| {
                Box::pin(async move {
                    b.bursar_plugin_processing()
                        .call_catalog(s, &settings)
                        .await
                })
            })
            .await?;
        self.counted(validate::catalog(items))
    }

    fn context(&self, request: &ModuleRequest) -> wit::Context {
        let service = &request.service;
        let addon_text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        wit::Context {
            settings: merged(&self.settings, service.settings.clone()),
            operation_id: request.operation_id.clone(),
            service: wit::Service {
                id: service.service_id.clone(),
                plan_id: service.plan_id.clone(),
                period: service.period.as_str().to_owned(),
                params: service
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                addons: service
                    .addons
                    .iter()
                    .map(|(k, v)| (k.clone(), addon_text(v)))
                    .collect(),
                account_email: service.account_email.clone(),
            },
        }
    }

    /// Runs one lifecycle call (or a poll) for an operation.
    pub async fn lifecycle(&self, request: &ModuleRequest) -> ModuleResult {
        let ctx = self.context(request);
        let kind = request.kind;
        let poll = if request.poll {
            request.remote_ref.clone()
        } else {
            None
        };
        let outcome = self
            .run(move |b, s| {
                Box::pin(async move {
                    let p = b.bursar_plugin_processing();
                    match (poll, kind) {
                        (Some(r), _) => p.call_poll(s, &ctx, &r).await,
                        (None, OperationKind::Open) => p.call_open(s, &ctx).await,
                        (None, OperationKind::Suspend) => p.call_suspend(s, &ctx).await,
                        (None, OperationKind::Resume) => p.call_resume(s, &ctx).await,
                        (None, OperationKind::Close) => p.call_close(s, &ctx).await,
                        (None, OperationKind::Prolong) => p.call_prolong(s, &ctx).await,
                        (None, OperationKind::ChangePlan) => p.call_change_plan(s, &ctx).await,
                        (None, OperationKind::Reinstall) => p.call_reinstall(s, &ctx).await,
                    }
                })
            })
            .await?;
        self.counted(validate::outcome(outcome))
    }
}

impl ProcessingModule for ProcessingPlugin {
    fn call<'a>(&'a self, request: &'a ModuleRequest) -> BoxFuture<'a, ModuleResult> {
        Box::pin(self.lifecycle(request))
    }
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
