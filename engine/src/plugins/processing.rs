//! Processing modules as WASM components: the host side of
//! `bursar:plugin/processing`, implementing the engine's
//! [`ProcessingModule`](crate::services::module::ProcessingModule) trait.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, Instance, Lift, Lower, TypedFunc,
};
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::plugins::since_v0_1::processing::ProcessingModulePre;
use crate::plugins::since_v0_1::processing::bursar::plugin::types::{PluginError, PluginInfo};
use crate::plugins::since_v0_1::processing::exports::bursar::plugin::processing as wit;
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
    exports: Exports,
    info: PluginInfo,
    settings: Vec<(String, String)>,
    policy: HttpPolicy,
    limits: InstanceLimits,
}

/// Where each function of `bursar:plugin/processing` is in the component,
/// looked up once at load.
#[derive(Clone, Copy)]
struct Exports {
    info: ComponentExportIndex,
    check_connection: ComponentExportIndex,
    catalog: ComponentExportIndex,
    open: ComponentExportIndex,
    suspend: ComponentExportIndex,
    resume: ComponentExportIndex,
    close: ComponentExportIndex,
    prolong: ComponentExportIndex,
    change_plan: ComponentExportIndex,
    reinstall: ComponentExportIndex,
    poll: ComponentExportIndex,
}

impl Exports {
    fn find(component: &Component) -> Option<Exports> {
        let iface = component.get_export_index(
            None,
            format!(
                "bursar:plugin/processing@{}",
                crate::plugins::since_v0_1::VERSION
            ),
        )?;
        let f = |name: &str| component.get_export_index(Some(&iface), name);
        Some(Exports {
            info: f("info")?,
            check_connection: f("check-connection")?,
            catalog: f("catalog")?,
            open: f("open")?,
            suspend: f("suspend")?,
            resume: f("resume")?,
            close: f("close")?,
            prolong: f("prolong")?,
            change_plan: f("change-plan")?,
            reinstall: f("reinstall")?,
            poll: f("poll")?,
        })
    }
}

/// One export of a fresh instance as a typed function.
fn typed<P, R>(
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
    // SAFETY: every export of this component was type-checked against
    // these exact signatures (the generated bindings') when it was loaded,
    // and instances of one component never differ in their types.
    Ok(unsafe { TypedFunc::new_unchecked(func) })
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
        let exports = Exports::find(&component).ok_or_else(|| LoadError::Invalid {
            name: name.to_owned(),
            message: "`bursar:plugin/processing` lacks a function".into(),
        })?;
        let mut plugin = ProcessingPlugin {
            name: name.to_owned(),
            pre,
            exports,
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
        plugin.check_types().await.map_err(wasm_err)?;
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Type-checks every export against the bindings, once: calls then
    /// look up only the function they need.
    async fn check_types(&self) -> wasmtime::Result<()> {
        let mut store = self.store();
        self.pre.instantiate_async(&mut store).await.map(drop)
    }

    /// A fresh store with the memory cap and the deadline armed: every
    /// epoch tick the guest yields to the runtime, and past the deadline it
    /// is interrupted.
    fn store(&self) -> Store<PluginState> {
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
            .instance_pre()
            .instantiate_async(&mut store)
            .await
            .map_err(|e| classify(&store, e, self.limits.timeout))?;
        Ok((store, instance))
    }

    /// Runs one export on a fresh instance under the limits.
    async fn run<R, F>(&self, call: F) -> Result<R, ModuleError>
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
        let index = self.exports.info;
        let info = self
            .run(move |i, s| {
                Box::pin(async move {
                    let f = typed::<(), (PluginInfo,)>(i, s, &index)?;
                    Ok(Ok(f.call_async(s, ()).await?.0))
                })
            })
            .await?;
        self.counted(validate::info(info))
    }

    /// Runs `check-connection` with the instance's settings.
    pub async fn check_connection(&self) -> Result<(), ModuleError> {
        let settings = self.settings.clone();
        let index = self.exports.check_connection;
        self.run(move |i, s| {
            Box::pin(async move {
                let f = typed::<(&[(String, String)],), (Result<(), PluginError>,)>(i, s, &index)?;
                Ok(f.call_async(s, (&settings,)).await?.0)
            })
        })
        .await
    }

    /// Runs `catalog` with the instance's settings.
    pub async fn catalog(&self) -> Result<Vec<wit::CatalogItem>, ModuleError> {
        let settings = self.settings.clone();
        let index = self.exports.catalog;
        let items = self
            .run(move |i, s| {
                Box::pin(async move {
                    let f = typed::<
                        (&[(String, String)],),
                        (Result<Vec<wit::CatalogItem>, PluginError>,),
                    >(i, s, &index)?;
                    Ok(f.call_async(s, (&settings,)).await?.0)
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
        let e = self.exports;
        let index = match (&poll, kind) {
            (Some(_), _) => e.poll,
            (None, OperationKind::Open) => e.open,
            (None, OperationKind::Suspend) => e.suspend,
            (None, OperationKind::Resume) => e.resume,
            (None, OperationKind::Close) => e.close,
            (None, OperationKind::Prolong) => e.prolong,
            (None, OperationKind::ChangePlan) => e.change_plan,
            (None, OperationKind::Reinstall) => e.reinstall,
        };
        type Answer = (Result<wit::Outcome, PluginError>,);
        let outcome = self
            .run(move |i, s| {
                Box::pin(async move {
                    let answer = match poll {
                        Some(r) => {
                            let f = typed::<(&wit::Context, &str), Answer>(i, s, &index)?;
                            f.call_async(s, (&ctx, &r)).await?
                        }
                        None => {
                            let f = typed::<(&wit::Context,), Answer>(i, s, &index)?;
                            f.call_async(s, (&ctx,)).await?
                        }
                    };
                    Ok(answer.0)
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
