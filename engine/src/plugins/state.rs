//! What a plugin's store holds for one call: a WASI context that grants
//! nothing, the HTTP policy, the memory limiter, captured output.

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::plugins::http::{HttpPolicy, PolicyHooks};
use crate::plugins::since_v0_1::processing::bursar::plugin::host;

/// Bytes of guest stdout/stderr kept per call (the rest is dropped).
const OUTPUT_CAPACITY: usize = 64 * 1024;
/// Longest `host.log` line kept.
const MAX_LOG_LINE: usize = 4096;

pub struct PluginState {
    /// Built on the guest's first WASI call: most calls of a plugin that
    /// does no I/O make none, and building one costs random-number
    /// generators and clocks.
    wasi: Option<Wasi>,
    http: WasiHttpCtx,
    table: ResourceTable,
    pub policy: PolicyHooks,
    pub limits: MemoryCap,
}

/// The WASI context of one call and the pipes its stdout and stderr go to.
struct Wasi {
    ctx: WasiCtx,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl Wasi {
    fn new() -> Self {
        let stdout = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        // No preopened directories, no environment, no arguments, no
        // sockets, no name lookups: the guest sees an empty machine.
        let ctx = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        Wasi {
            ctx,
            stdout,
            stderr,
        }
    }
}

impl PluginState {
    pub fn new(policy: Arc<HttpPolicy>, memory_bytes: usize) -> Self {
        PluginState {
            wasi: None,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            policy: PolicyHooks(policy),
            limits: MemoryCap {
                max: memory_bytes,
                exceeded: false,
            },
        }
    }

    /// The plugin instance's name.
    pub fn instance(&self) -> &str {
        &self.policy.0.instance
    }

    /// Sends what the guest printed to the log, line by line.
    pub fn flush_output(&self) {
        let Some(wasi) = &self.wasi else { return };
        for (stream, pipe) in [("stdout", &wasi.stdout), ("stderr", &wasi.stderr)] {
            let bytes = pipe.contents();
            for line in String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                tracing::info!(plugin = %self.instance(), stream, "{line}");
            }
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.get_or_insert_with(Wasi::new).ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.policy,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

impl host::Host for PluginState {
    fn log(&mut self, level: host::Level, message: String) {
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = self.instance();
        match level {
            host::Level::Trace => tracing::trace!(%plugin, "{message}"),
            host::Level::Debug => tracing::debug!(%plugin, "{message}"),
            host::Level::Info => tracing::info!(%plugin, "{message}"),
            host::Level::Warn => tracing::warn!(%plugin, "{message}"),
            host::Level::Error => tracing::error!(%plugin, "{message}"),
        }
    }
}

/// Caps linear memory, remembering whether the cap was hit so that the
/// resulting trap is reported as "out of memory".
pub struct MemoryCap {
    max: usize,
    pub exceeded: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.exceeded = true;
            wasmtime::bail!("memory limit of {} MiB reached", self.max >> 20);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
