//! The WebAssembly plugin host (wasmtime).
//!
//! One [`PluginHost`] owns the `Engine` (pooling allocator, epoch
//! interruption driven by a ticker thread) and the `Linker` with what a
//! plugin may import: WASI that grants nothing (`state`), `wasi:http` with
//! the allow-list (`http`), and `bursar:plugin/host` (logging). Components
//! are compiled once — and cached on disk by content hash and the engine's
//! compatibility hash — then pre-instantiated; every call gets a fresh
//! `Store` with its own memory cap and deadline, and the store is dropped
//! after the call, trapped or not.

pub mod author;
pub mod builtin;
pub mod gateway;
mod http;
pub mod instances;
pub mod processing;
mod sandbox;
pub mod scaffold;
pub mod since_v0_1;
mod state;
pub(crate) mod validate;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, types::ComponentItem};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use http::{AllowedHost, HttpPolicy};
pub use processing::ProcessingPlugin;
pub use sandbox::{CallFailure, CallStats};
pub use state::PluginState;

/// How often the epoch ticks: the granularity of deadlines and of yields
/// back to the async runtime while a plugin computes.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bytes of each pooled linear memory and fiber stack kept resident
/// between instances.
const KEEP_RESIDENT: usize = 2 << 20;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin `{name}`: {message}")]
    Invalid { name: String, message: String },
    #[error(
        "plugin `{name}` was built for bursar:plugin@{found}, but this Bursar supports bursar:plugin@{supported}"
    )]
    Version {
        name: String,
        found: String,
        supported: &'static str,
    },
    /// The whole chain is in the message; it is not also a `source`, so
    /// that printing the error with its causes says each once.
    #[error("plugin `{name}`: {error:#}")]
    Wasmtime {
        name: String,
        error: wasmtime::Error,
    },
}

/// Core instances each component instance may use, on average, before the
/// pool runs out (see `PluginHost::new`).
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;

/// Settings of the host as a whole.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// The largest `memory_mb` any instance may be given.
    pub max_memory_mb: u64,
    /// How many instances may be alive at once (pool size).
    pub max_instances: u32,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            cache_dir: None,
            max_memory_mb: 512,
            max_instances: 128,
        }
    }
}

/// The engine and linker shared by all plugins.
#[derive(Clone)]
pub struct PluginHost {
    engine: Engine,
    linker: Linker<PluginState>,
    options: HostOptions,
}

impl PluginHost {
    pub fn new(options: HostOptions) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(options.max_instances);
        // A Rust component is one or two core instances; one made by
        // componentize-py (Python) is about thirty: libc, the interpreter
        // and its extension modules are each one.
        pool.total_core_instances(options.max_instances * CORE_INSTANCES_PER_COMPONENT);
        pool.total_memories(options.max_instances * 2);
        pool.total_tables(options.max_instances * 4);
        pool.max_memory_size((options.max_memory_mb as usize) << 20);
        // Instances are short-lived and reused from the pool: keep the
        // pages a call touched resident and reset them in place, instead of
        // giving them back to the kernel and faulting them in again on the
        // next call (the bulk of a call's cost otherwise).
        pool.linear_memory_keep_resident(KEEP_RESIDENT);
        pool.table_keep_resident(64 << 10);
        pool.async_stack_keep_resident(KEEP_RESIDENT);
        pool.pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // Plugins are synchronous components: without the component-model
        // async machinery a store is cheaper to create and to drop.
        config.concurrency_support(false);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        since_v0_1::processing::bursar::plugin::host::add_to_linker::<
            _,
            wasmtime::component::HasSelf<_>,
        >(&mut linker, |s| s)?;

        // The ticker stops by itself when the last engine handle is gone.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("bursar-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| wasmtime::format_err!("cannot start the epoch ticker: {e}"))?;
        Ok(PluginHost {
            engine,
            linker,
            options,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<PluginState> {
        &self.linker
    }

    pub fn options(&self) -> &HostOptions {
        &self.options
    }

    /// Compiles a component, or loads it from the cache. Cached files are
    /// named by the SHA-256 of the component and the engine's compatibility
    /// hash, live in a directory only the host writes, and are written
    /// atomically; only such files are ever deserialized.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        let wasm_err = |error| LoadError::Wasmtime {
            name: name.to_owned(),
            error,
        };
        let Some(dir) = &self.options.cache_dir else {
            return Component::new(&self.engine, bytes).map_err(wasm_err);
        };
        let mut compat = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut compat);
        let key = format!(
            "{}-{:016x}.cwasm",
            hex::encode(Sha256::digest(bytes)),
            compat.finish()
        );
        let path = dir.join(key);
        if path.is_file() {
            match written_by_us(dir, &path) {
                // SAFETY: the file is one this host wrote (see above) for
                // this exact engine configuration: it and its directory
                // belong to this user and nobody else can write them.
                Ok(()) => match unsafe { Component::deserialize_file(&self.engine, &path) } {
                    Ok(c) => return Ok(c),
                    Err(e) => {
                        tracing::warn!(plugin = name, error = %e, "cached component unusable; recompiling")
                    }
                },
                Err(why) => {
                    tracing::warn!(plugin = name, file = %path.display(), %why, "refusing a cached component this host did not write; recompiling");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let compiled = self.engine.precompile_component(bytes).map_err(wasm_err)?;
        if let Err(e) = write_cache(dir, &path, &compiled) {
            tracing::warn!(plugin = name, error = %e, "cannot cache the compiled component");
        }
        // SAFETY: `compiled` was just produced by this engine.
        unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(wasm_err)
    }
}

fn write_cache(dir: &std::path::Path, path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::files::create_private_dir(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::now_v7().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    {
        use std::io::Write;
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

/// Native code is loaded only from a file this process's user wrote: the
/// file and its directory belong to that user, and neither the group nor
/// others may write them (the host writes them 0600 in a 0700 directory).
fn written_by_us(dir: &std::path::Path, file: &std::path::Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        for (what, p) in [("directory", dir), ("file", file)] {
            let m = std::fs::symlink_metadata(p).map_err(|e| format!("{what}: {e}"))?;
            if m.file_type().is_symlink() {
                return Err(format!("the {what} is a symbolic link"));
            }
            if m.uid() != me {
                return Err(format!("the {what} belongs to user {}, not {me}", m.uid()));
            }
            if m.mode() & 0o022 != 0 {
                return Err(format!(
                    "the {what} can be written by others (mode {:o})",
                    m.mode() & 0o777
                ));
            }
        }
    }
    let _ = (dir, file);
    Ok(())
}

/// The interfaces a component exports, by full name
/// (`bursar:plugin/processing@0.1.0`).
pub fn exported_interfaces(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .exports(engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The interfaces a component imports, by full name.
pub fn imported_interfaces(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Checks that a component exports `bursar:plugin/{interface}` of the
/// supported version, with a message naming both versions when not.
pub fn check_export(
    engine: &Engine,
    name: &str,
    component: &Component,
    interface: &str,
) -> Result<(), LoadError> {
    let wanted = format!("bursar:plugin/{interface}@");
    let exports = exported_interfaces(engine, component);
    match exports.iter().find_map(|e| e.strip_prefix(&wanted)) {
        Some(v) if v == since_v0_1::VERSION => Ok(()),
        Some(v) => Err(LoadError::Version {
            name: name.to_owned(),
            found: v.to_owned(),
            supported: since_v0_1::VERSION,
        }),
        None => Err(LoadError::Invalid {
            name: name.to_owned(),
            message: format!(
                "missing export `bursar:plugin/{interface}@{}` (it exports: {})",
                since_v0_1::VERSION,
                if exports.is_empty() {
                    "nothing".into()
                } else {
                    exports.join(", ")
                }
            ),
        }),
    }
}
