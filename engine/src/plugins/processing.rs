//! Processing modules as WASM components: the host side of
//! `bursar:plugin/processing`, implementing the engine's
//! [`ProcessingModule`](crate::services::module::ProcessingModule) trait.

use futures::future::BoxFuture;
use wasmtime::component::{Component, ComponentExportIndex};

pub use crate::plugins::sandbox::InstanceLimits;
use crate::plugins::sandbox::{
    Sandbox, interface_index, prepare, typed, unanswered_info, wasm_error,
};
use crate::plugins::since_v0_1::processing::ProcessingModulePre;
use crate::plugins::since_v0_1::processing::bursar::plugin::types::{PluginError, PluginInfo};
use crate::plugins::since_v0_1::processing::exports::bursar::plugin::processing as wit;
use crate::plugins::validate;
use crate::plugins::{HttpPolicy, LoadError, PluginHost, PluginState};
use crate::services::OperationKind;
use crate::services::module::{ModuleError, ModuleRequest, ModuleResult, ProcessingModule};

/// A loaded processing module instance: its pre-instantiated component,
/// settings and limits.
pub struct ProcessingPlugin {
    sandbox: Sandbox,
    pre: ProcessingModulePre<PluginState>,
    exports: Exports,
    info: PluginInfo,
    settings: Vec<(String, String)>,
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
        let iface = interface_index(component, "processing")?;
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
    /// its version, pre-instantiates, type-checks every export, and only
    /// then asks the plugin for its `info`.
    pub async fn load(
        host: &PluginHost,
        name: &str,
        bytes: &[u8],
        settings: Vec<(String, String)>,
        policy: HttpPolicy,
        limits: InstanceLimits,
    ) -> Result<ProcessingPlugin, LoadError> {
        let (component, instance_pre) = prepare(host, name, bytes, "processing")?;
        let wasm_err = |source| wasm_error(name, source);
        let pre = ProcessingModulePre::new(instance_pre).map_err(wasm_err)?;
        let exports = Exports::find(&component).ok_or_else(|| LoadError::Invalid {
            name: name.to_owned(),
            message: "`bursar:plugin/processing` lacks a function".into(),
        })?;
        let sandbox = Sandbox::new(name, pre.instance_pre().clone(), policy, limits);
        let mut plugin = ProcessingPlugin {
            sandbox,
            pre,
            exports,
            info: unanswered_info(),
            settings,
        };
        // Every export is type-checked before any is called: the calls
        // below look their function up unchecked.
        plugin.check_types().await.map_err(wasm_err)?;
        plugin.info = plugin.call_info().await.map_err(|e| LoadError::Invalid {
            name: name.to_owned(),
            message: format!("`info` failed: {e}"),
        })?;
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        self.sandbox.name()
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Type-checks every export once, against the bindings and against
    /// the exact signatures the calls below use: calls then look up only
    /// the function they run, unchecked.
    async fn check_types(&self) -> wasmtime::Result<()> {
        let mut store = self.sandbox.store();
        self.pre.instantiate_async(&mut store).await?;
        let mut store = self.sandbox.store();
        let i = self
            .pre
            .instance_pre()
            .instantiate_async(&mut store)
            .await?;
        let (e, s) = (&self.exports, &mut store);
        type Settings<'a> = (&'a [(String, String)],);
        type Answer = (Result<wit::Outcome, PluginError>,);
        i.get_typed_func::<(), (PluginInfo,)>(&mut *s, &e.info)?;
        i.get_typed_func::<Settings, (Result<(), PluginError>,)>(&mut *s, &e.check_connection)?;
        i.get_typed_func::<Settings, (Result<Vec<wit::CatalogItem>, PluginError>,)>(
            &mut *s, &e.catalog,
        )?;
        for index in [
            &e.open,
            &e.suspend,
            &e.resume,
            &e.close,
            &e.prolong,
            &e.change_plan,
            &e.reinstall,
        ] {
            i.get_typed_func::<(&wit::Context,), Answer>(&mut *s, index)?;
        }
        i.get_typed_func::<(&wit::Context, &str), Answer>(&mut *s, &e.poll)?;
        Ok(())
    }

    async fn run<R, F>(&self, call: F) -> Result<R, ModuleError>
    where
        F: for<'a> FnOnce(
            &'a wasmtime::component::Instance,
            &'a mut wasmtime::Store<PluginState>,
        ) -> BoxFuture<'a, wasmtime::Result<Result<R, PluginError>>>,
    {
        self.sandbox.run(call).await
    }

    /// Its calls since the process started.
    pub fn stats(&self) -> crate::plugins::CallStats {
        self.sandbox.stats()
    }

    fn counted<T>(&self, result: Result<T, ModuleError>) -> Result<T, ModuleError> {
        self.sandbox.counted(result)
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
            // A sync asserts the service's state: resume what is active,
            // suspend what is suspended.
            (None, OperationKind::Sync) if request.payload["state"] == "suspended" => e.suspend,
            (None, OperationKind::Sync) => e.resume,
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

    fn features(&self) -> Vec<String> {
        self.info.features.clone()
    }
}
