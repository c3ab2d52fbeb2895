//! Plugin instances from `[[plugin]]` in the configuration: settings with
//! secrets from the environment or files, loading, and the registry the API
//! lists.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::plugins::gateway::GatewayPlugin;
use crate::plugins::processing::InstanceLimits;
use crate::plugins::{AllowedHost, HttpPolicy, LoadError, PluginHost, ProcessingPlugin, builtin};
pub use crate::secrets::SettingValue;
use crate::services::module::{ModuleError, ModuleRegistry};

/// What a plugin instance does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    /// Provisions services (`bursar:plugin/processing`).
    Processing,
    /// Collects payments (`bursar:plugin/gateway`).
    Gateway,
}

/// One `[[plugin]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The instance name plans refer to in `module`.
    pub name: String,
    pub kind: PluginKind,
    /// `builtin:NAME` or a path to a `.wasm` component.
    pub component: String,
    /// `host`, `host:port` or `host:*` the plugin may reach over HTTP.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Longest a call may run.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Memory cap of one instance.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Largest HTTP response body the plugin may read.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Gateways: how long a payment may stay open before it expires
    /// (default `[payments] expire_after_secs`).
    #[serde(default)]
    pub payment_expire_after_secs: Option<u64>,
    #[serde(default)]
    pub settings: BTreeMap<String, SettingValue>,
}

fn default_timeout_ms() -> u64 {
    30_000
}
fn default_memory_mb() -> u64 {
    64
}
fn default_max_response_bytes() -> u64 {
    4 << 20
}

/// The host-wide plugin settings: `[plugin_host]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginHostConfig {
    /// Where compiled components are cached (created with mode 0700).
    pub cache_dir: Option<PathBuf>,
    /// The largest `memory_mb` an instance may ask for.
    pub max_memory_mb: u64,
}

impl Default for PluginHostConfig {
    fn default() -> Self {
        PluginHostConfig {
            cache_dir: Some(PathBuf::from("data/plugin-cache")),
            max_memory_mb: 512,
        }
    }
}

/// An instance's settings with secrets read, and its allowed hosts.
pub type Resolved = (Vec<(String, String)>, Vec<AllowedHost>);

/// Why the plugins could not start; names the instance and key.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("plugin `{name}`: {message}")]
    Config { name: String, message: String },
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl PluginConfig {
    /// Checks the entry and reads its secrets. Returns the settings as the
    /// plugin will see them.
    pub fn resolve(&self, max_memory_mb: u64) -> Result<Resolved, InstanceError> {
        let err = |message: String| InstanceError::Config {
            name: self.name.clone(),
            message,
        };
        if self.name.trim().is_empty() || self.name == "manual" {
            return Err(err("`name` must be set and must not be `manual`".into()));
        }
        if self.memory_mb == 0 || self.memory_mb > max_memory_mb {
            return Err(err(format!("`memory_mb` must be 1 to {max_memory_mb}")));
        }
        if self.timeout_ms == 0 {
            return Err(err("`timeout_ms` must be positive".into()));
        }
        let hosts = self
            .allowed_hosts
            .iter()
            .map(|h| AllowedHost::parse(h).map_err(|m| err(format!("`allowed_hosts`: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut settings = Vec::new();
        for (key, value) in &self.settings {
            let value = value
                .resolve()
                .map_err(|m| err(format!("`settings.{key}` {m}")))?;
            settings.push((key.clone(), value));
        }
        Ok((settings, hosts))
    }

    /// The component's bytes: embedded for `builtin:NAME`, else read from
    /// the path.
    pub fn component_bytes(&self) -> Result<Vec<u8>, InstanceError> {
        let err = |message: String| InstanceError::Config {
            name: self.name.clone(),
            message,
        };
        match self.component.strip_prefix("builtin:") {
            Some(name) => builtin::get(name).map(<[u8]>::to_vec).ok_or_else(|| {
                err(format!(
                    "`component`: no built-in plugin `{name}` (built in: {})",
                    builtin::names().join(", ")
                ))
            }),
            None => std::fs::read(&self.component)
                .map_err(|e| err(format!("`component`: {}: {e}", self.component))),
        }
    }
}

/// Health of an instance, from its last `check-connection`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `unknown` (never checked), `ok` or `failing`.
    pub status: String,
    pub message: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
}

/// A loaded instance as the API shows it: no settings, so no secrets.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginView {
    pub name: String,
    pub kind: PluginKind,
    pub component: String,
    /// The plugin's own name and version, from its `info`.
    pub plugin_name: String,
    pub version: String,
    pub features: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub timeout_ms: u64,
    pub memory_mb: u64,
    pub health: Health,
}

struct Entry {
    view: Mutex<PluginView>,
    plugin: Loaded,
    payment_expire_after_secs: Option<u64>,
}

/// A loaded instance of either world.
#[derive(Clone)]
enum Loaded {
    Processing(Arc<ProcessingPlugin>),
    Gateway(Arc<GatewayPlugin>),
}

impl Loaded {
    fn info(&self) -> &crate::plugins::since_v0_1::processing::bursar::plugin::types::PluginInfo {
        match self {
            Loaded::Processing(p) => p.info(),
            Loaded::Gateway(g) => g.info(),
        }
    }

    fn stats(&self) -> crate::plugins::CallStats {
        match self {
            Loaded::Processing(p) => p.stats(),
            Loaded::Gateway(g) => g.stats(),
        }
    }

    async fn check_connection(&self) -> Result<(), ModuleError> {
        match self {
            Loaded::Processing(p) => p.check_connection().await,
            Loaded::Gateway(g) => g.check_connection().await,
        }
    }
}

/// One thing a processing module can provision: a configuration, an OS
/// template or an orderable add-on.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CatalogEntry {
    /// `configuration`, `os-template` or `addon`.
    pub kind: String,
    pub id: String,
    pub name: String,
    pub details: BTreeMap<String, String>,
}

/// The loaded instances.
#[derive(Default, Clone)]
pub struct PluginRegistry {
    entries: Arc<BTreeMap<String, Entry>>,
}

impl PluginRegistry {
    /// Loads every configured instance; the first failure stops start-up
    /// with a message naming the instance.
    pub async fn load(
        host: &PluginHost,
        configs: &[PluginConfig],
        modules: &mut ModuleRegistry,
    ) -> Result<PluginRegistry, InstanceError> {
        let mut entries = BTreeMap::new();
        for config in configs {
            if entries.contains_key(&config.name) || modules.contains(&config.name) {
                return Err(InstanceError::Config {
                    name: config.name.clone(),
                    message: "another module instance has this name".into(),
                });
            }
            let (settings, allowed) = config.resolve(host.options().max_memory_mb)?;
            let bytes = config.component_bytes()?;
            let limits = InstanceLimits {
                timeout: Duration::from_millis(config.timeout_ms),
                memory_bytes: (config.memory_mb as usize) << 20,
                max_response_bytes: config.max_response_bytes,
            };
            let policy = HttpPolicy {
                instance: config.name.clone(),
                allowed,
                timeout: limits.timeout,
                max_response_bytes: limits.max_response_bytes,
            };
            let plugin = match config.kind {
                PluginKind::Processing => {
                    let p = Arc::new(
                        ProcessingPlugin::load(
                            host,
                            &config.name,
                            &bytes,
                            settings,
                            policy,
                            limits,
                        )
                        .await?,
                    );
                    modules.insert(config.name.clone(), p.clone());
                    Loaded::Processing(p)
                }
                PluginKind::Gateway => Loaded::Gateway(Arc::new(
                    GatewayPlugin::load(host, &config.name, &bytes, settings, policy, limits)
                        .await?,
                )),
            };
            let info = plugin.info().clone();
            tracing::info!(plugin = %config.name, kind = ?config.kind, component = %config.component, version = %info.version, "plugin loaded");
            let view = PluginView {
                name: config.name.clone(),
                kind: config.kind,
                component: config.component.clone(),
                plugin_name: info.name,
                version: info.version,
                features: info.features,
                allowed_hosts: config.allowed_hosts.clone(),
                timeout_ms: config.timeout_ms,
                memory_mb: config.memory_mb,
                health: Health {
                    status: "unknown".into(),
                    message: None,
                    checked_at: None,
                },
            };
            entries.insert(
                config.name.clone(),
                Entry {
                    view: Mutex::new(view),
                    plugin,
                    payment_expire_after_secs: config.payment_expire_after_secs,
                },
            );
        }
        Ok(PluginRegistry {
            entries: Arc::new(entries),
        })
    }

    pub fn list(&self) -> Vec<PluginView> {
        self.entries
            .values()
            .map(|e| {
                e.view
                    .lock()
                    .map(|v| v.clone())
                    .unwrap_or_else(|p| p.into_inner().clone())
            })
            .collect()
    }

    /// Each instance with its calls since the process started.
    pub fn list_with_stats(&self) -> Vec<(PluginView, crate::plugins::CallStats)> {
        self.entries
            .values()
            .map(|e| {
                let view = e.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
                (view, e.plugin.stats())
            })
            .collect()
    }

    /// The gateway instance named `name`, if there is one, as loaded.
    pub fn gateway_plugin(&self, name: &str) -> Option<Arc<GatewayPlugin>> {
        match &self.entries.get(name)?.plugin {
            Loaded::Gateway(g) => Some(g.clone()),
            Loaded::Processing(_) => None,
        }
    }

    /// Runs the instance's `catalog`: what it can provision.
    pub async fn catalog(&self, name: &str) -> Option<Result<Vec<CatalogEntry>, ModuleError>> {
        let entry = self.entries.get(name)?;
        let Loaded::Processing(plugin) = &entry.plugin else {
            return Some(Err(ModuleError::Unsupported(format!(
                "`{name}` is a payment gateway; only processing modules have a catalog"
            ))));
        };
        Some(plugin.catalog().await.map(|items| {
            items
                .into_iter()
                .map(|i| CatalogEntry {
                    kind: i.kind,
                    id: i.id,
                    name: i.name,
                    details: i.details.into_iter().collect(),
                })
                .collect()
        }))
    }

    /// Runs `check-connection` and records the result as the health.
    pub async fn check(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Option<(PluginView, Result<(), ModuleError>)> {
        let entry = self.entries.get(name)?;
        let result = entry.plugin.check_connection().await;
        let mut view = entry.view.lock().unwrap_or_else(|p| p.into_inner());
        view.health = match &result {
            Ok(()) => Health {
                status: "ok".into(),
                message: None,
                checked_at: Some(now),
            },
            Err(e) => Health {
                status: "failing".into(),
                message: Some(e.to_string()),
                checked_at: Some(now),
            },
        };
        Some((view.clone(), result))
    }
}

impl crate::payments::Gateways for PluginRegistry {
    fn gateway(&self, name: &str) -> Option<Arc<dyn crate::payments::Gateway>> {
        self.gateway_plugin(name)
            .map(|g| g as Arc<dyn crate::payments::Gateway>)
    }

    fn gateway_names(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e.plugin, Loaded::Gateway(_)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn payment_expiry(&self, name: &str) -> Option<u64> {
        self.entries.get(name)?.payment_expire_after_secs
    }
}
