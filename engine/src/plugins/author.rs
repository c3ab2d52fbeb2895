//! `bursar plugin info|check|call`: tools for plugin authors, running
//! components under the same host and sandbox as `bursar serve`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::calendar::Period;
use crate::plugins::gateway::GatewayPlugin;
use crate::plugins::processing::InstanceLimits;
use crate::plugins::{
    AllowedHost, HostOptions, HttpPolicy, PluginHost, ProcessingPlugin, check_export,
    exported_interfaces, imported_interfaces, since_v0_1,
};
use crate::services::OperationKind;
use crate::services::module::{ModuleError, ModuleOutcome, ModuleRequest, ServiceContext};

/// Why `bytes` cannot be a component, when that can be told from their
/// first bytes: a text file, a core module, not WebAssembly at all.
fn not_a_component(bytes: &[u8]) -> Option<&'static str> {
    const MAGIC: &[u8] = b"\0asm";
    if !bytes.starts_with(MAGIC) {
        let text = std::str::from_utf8(&bytes[..bytes.len().min(4096)]).is_ok();
        return Some(match text && bytes.trim_ascii_start().starts_with(b"(") {
            true => {
                "it is WebAssembly text (.wat), not a binary component: build the plugin \
                 (`cargo build --release --target wasm32-wasip2`), or turn the text into a \
                 component with `wasm-tools parse` and `wasm-tools component new`"
            }
            false => "it is not WebAssembly (a binary component starts with `\\0asm`)",
        });
    }
    match bytes.get(4..8) {
        Some([1, 0, 0, 0]) => Some(
            "it is a core WebAssembly module, not a component: build for wasm32-wasip2 \
             (which makes components), or wrap the module with `wasm-tools component new`",
        ),
        _ => None,
    }
}

/// Compiles a component, saying what the file is when it is not one.
fn compile(
    host: &PluginHost,
    name: &str,
    bytes: &[u8],
) -> anyhow::Result<wasmtime::component::Component> {
    if let Some(why) = not_a_component(bytes) {
        anyhow::bail!("{name}: {why}");
    }
    Ok(host.compile(name, bytes)?)
}

/// What `info` and `check` report about a component.
fn describe(host: &PluginHost, name: &str, bytes: &[u8]) -> anyhow::Result<Value> {
    let component = compile(host, name, bytes)?;
    let exports = exported_interfaces(host.engine(), &component);
    let imports = imported_interfaces(host.engine(), &component);
    let world = exports.iter().find_map(|e| {
        let (iface, version) = e.strip_prefix("bursar:plugin/")?.split_once('@')?;
        let world = match iface {
            "processing" => "processing-module",
            "gateway" => "payment-gateway",
            _ => return None,
        };
        Some((world, version.to_owned()))
    });
    Ok(json!({
        "world": world.as_ref().map(|(w, _)| *w),
        "wit_version": world.as_ref().map(|(_, v)| v.clone()),
        "supported_wit_version": since_v0_1::VERSION,
        "exports": exports,
        "imports": imports,
    }))
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The instance name a component is reported under: its file stem.
fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into())
}

fn host() -> anyhow::Result<PluginHost> {
    host_for(HostOptions::default().max_memory_mb as usize)
}

/// A host whose instances may have `memory_mb` (few instances: one call).
fn host_for(memory_mb: usize) -> anyhow::Result<PluginHost> {
    PluginHost::new(HostOptions {
        max_memory_mb: memory_mb.max(64) as u64,
        max_instances: 4,
        ..HostOptions::default()
    })
    .map_err(|e| anyhow::anyhow!("cannot start the plugin host: {e}"))
}

/// `bursar plugin info FILE.wasm`: world, WIT version, exports, imports and
/// (for a loadable plugin) its own `info`.
pub async fn info(path: &Path) -> anyhow::Result<Value> {
    let host = host()?;
    let bytes = read(path)?;
    let name = stem(path);
    let mut out = describe(&host, &name, &bytes)?;
    if let Some(version) = out["wit_version"].as_str()
        && version != since_v0_1::VERSION
    {
        out["error"] = json!(format!(
            "built for WIT bursar:plugin@{version}; this Bursar loads @{}: rebuild the plugin against this release's wit/",
            since_v0_1::VERSION
        ));
    } else if out["world"].is_null() {
        out["error"] = json!("exports neither bursar:plugin/processing nor bursar:plugin/gateway");
    }
    if out["world"] == "processing-module"
        && let Ok(plugin) = load(&host, &name, &bytes, vec![], &[], CHECK_LIMITS).await
    {
        let i = plugin.info();
        out["plugin"] = json!({"name": i.name, "version": i.version, "features": i.features});
    }
    Ok(out)
}

/// `bursar plugin check FILE.wasm`: everything `serve` checks before it
/// accepts a plugin. Errors say exactly what is missing or mismatched.
pub async fn check(path: &Path) -> anyhow::Result<Value> {
    let host = host()?;
    let bytes = read(path)?;
    let name = stem(path);
    let description = describe(&host, &name, &bytes)?;
    let component = compile(&host, &name, &bytes)?;
    let info = if description["world"] == "payment-gateway" {
        check_export(host.engine(), &name, &component, "gateway")?;
        let (policy, limits) = sandbox(&name, &[], 5_000, 64, DEFAULT_MAX_RESPONSE_BYTES)?;
        GatewayPlugin::load(&host, &name, &bytes, vec![], policy, limits)
            .await?
            .info()
            .clone()
    } else {
        check_export(host.engine(), &name, &component, "processing")?;
        load(&host, &name, &bytes, vec![], &[], CHECK_LIMITS)
            .await?
            .info()
            .clone()
    };
    Ok(json!({
        "ok": true,
        "world": description["world"],
        "wit_version": since_v0_1::VERSION,
        "plugin": {"name": info.name, "version": info.version, "features": info.features},
    }))
}

/// What `serve` lets a plugin read of one HTTP response by default
/// (`max_response_bytes` of an instance).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 4 << 20;

/// The HTTP policy and limits of a one-off instance.
fn sandbox(
    name: &str,
    allowed: &[String],
    timeout_ms: u64,
    memory_mb: usize,
    max_response_bytes: u64,
) -> anyhow::Result<(HttpPolicy, InstanceLimits)> {
    let limits = InstanceLimits {
        timeout: Duration::from_millis(timeout_ms),
        memory_bytes: memory_mb << 20,
        max_response_bytes,
    };
    let policy = HttpPolicy {
        instance: name.to_owned(),
        allowed: allowed
            .iter()
            .map(|h| AllowedHost::parse(h).map_err(anyhow::Error::msg))
            .collect::<Result<_, _>>()?,
        timeout: limits.timeout,
        max_response_bytes: limits.max_response_bytes,
    };
    Ok((policy, limits))
}

/// What a one-off instance may use: time, memory, HTTP response size.
#[derive(Debug, Clone, Copy)]
struct Limits {
    timeout_ms: u64,
    memory_mb: usize,
    max_response_bytes: u64,
}

/// The limits `info` and `check` load a plugin with.
const CHECK_LIMITS: Limits = Limits {
    timeout_ms: 5_000,
    memory_mb: 64,
    max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
};

async fn load(
    host: &PluginHost,
    name: &str,
    bytes: &[u8],
    settings: Vec<(String, String)>,
    allowed: &[String],
    l: Limits,
) -> anyhow::Result<ProcessingPlugin> {
    let (policy, limits) = sandbox(
        name,
        allowed,
        l.timeout_ms,
        l.memory_mb,
        l.max_response_bytes,
    )?;
    Ok(ProcessingPlugin::load(host, name, bytes, settings, policy, limits).await?)
}

/// The service a `plugin call` works on, as a JSON file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceFile {
    pub id: String,
    pub plan_id: String,
    pub period: Option<String>,
    pub account_email: String,
    pub params: BTreeMap<String, String>,
    pub addons: BTreeMap<String, Value>,
    /// Plan module settings, laid over `--settings`.
    pub settings: BTreeMap<String, String>,
}

/// What `plugin call` runs with.
pub struct CallOptions {
    pub command: String,
    pub settings: Vec<(String, String)>,
    pub service: Option<ServiceFile>,
    pub remote_ref: Option<String>,
    pub allowed_hosts: Vec<String>,
    pub timeout_ms: u64,
    pub memory_mb: usize,
    /// The largest HTTP response body the plugin may read.
    pub max_response_bytes: u64,
    /// The operation id the plugin is given (its idempotency key towards
    /// the remote side): the same id twice tries a retry.
    pub operation_id: Option<String>,
}

fn outcome_json(result: Result<ModuleOutcome, ModuleError>) -> Value {
    match result {
        Ok(ModuleOutcome::Done {
            params,
            secret_params,
        }) => json!({
            "ok": "done",
            "params": params.into_iter().collect::<BTreeMap<_, _>>(),
            "secret_params": secret_params.into_iter().map(|(k, _)| (k, "<secret>")).collect::<BTreeMap<_, _>>(),
        }),
        Ok(ModuleOutcome::InProgress {
            remote_ref,
            poll_after,
            progress,
        }) => json!({
            "ok": "in-progress", "remote_ref": remote_ref, "poll_after_ms": poll_after.as_millis() as u64, "message": progress,
        }),
        Ok(ModuleOutcome::NeedsStaff(m)) => json!({"ok": "needs-staff", "message": m}),
        Err(e) => error_json(&e),
    }
}

fn error_json(e: &ModuleError) -> Value {
    json!({"error": e.kind(), "message": e.to_string(), "retried_by_bursar": e.retryable()})
}

/// `bursar plugin call FILE.wasm COMMAND`: one call under the sandbox,
/// printed as JSON.
pub async fn call(path: &Path, options: CallOptions) -> anyhow::Result<Value> {
    let host = host_for(options.memory_mb)?;
    let bytes = read(path)?;
    let plugin = load(
        &host,
        &stem(path),
        &bytes,
        options.settings,
        &options.allowed_hosts,
        Limits {
            timeout_ms: options.timeout_ms,
            memory_mb: options.memory_mb,
            max_response_bytes: options.max_response_bytes,
        },
    )
    .await?;
    let kind = match options.command.as_str() {
        "info" => {
            let i = plugin.info();
            return Ok(json!({"name": i.name, "version": i.version, "features": i.features}));
        }
        "check-connection" => {
            return Ok(match plugin.check_connection().await {
                Ok(()) => json!({"ok": true}),
                Err(e) => error_json(&e),
            });
        }
        "catalog" => {
            return Ok(match plugin.catalog().await {
                Ok(items) => json!({"items": items.into_iter().map(|i| json!({
                    "kind": i.kind, "id": i.id, "name": i.name,
                    "details": i.details.into_iter().collect::<BTreeMap<_, _>>(),
                })).collect::<Vec<_>>()}),
                Err(e) => error_json(&e),
            });
        }
        "poll" => None,
        other => Some(
            OperationKind::parse(&other.replace('-', "_"))
                .ok_or_else(|| anyhow::anyhow!("unknown command `{other}`: use info, check-connection, catalog, open, suspend, resume, close, prolong, change-plan, reinstall or poll"))?,
        ),
    };
    let service = options.service.unwrap_or_default();
    let period = match &service.period {
        Some(p) => Period::parse(p).ok_or_else(|| {
            anyhow::anyhow!("service.period `{p}` is not 1d, 1m, 3m, 6m, 12m, 24m or 36m")
        })?,
        None => Period::Month,
    };
    if kind.is_none() && options.remote_ref.is_none() {
        anyhow::bail!("`poll` needs --remote-ref");
    }
    let request = ModuleRequest {
        operation_id: options
            .operation_id
            .unwrap_or_else(|| format!("op_cli_{}", uuid::Uuid::now_v7().simple())),
        kind: kind.unwrap_or(OperationKind::Open),
        poll: kind.is_none(),
        remote_ref: options.remote_ref,
        service: ServiceContext {
            service_id: if service.id.is_empty() {
                "svc_cli".into()
            } else {
                service.id
            },
            plan_id: if service.plan_id.is_empty() {
                "plan_cli".into()
            } else {
                service.plan_id
            },
            account_id: "acc_cli".into(),
            account_email: if service.account_email.is_empty() {
                "customer@example.com".into()
            } else {
                service.account_email
            },
            period,
            settings: service.settings,
            params: service.params,
            addons: service.addons,
        },
        payload: json!({}),
    };
    Ok(outcome_json(plugin.lifecycle(&request).await))
}
