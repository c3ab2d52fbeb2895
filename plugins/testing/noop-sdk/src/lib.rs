//! Does no I/O: `open` returns two params made from its input. It imports only what the SDK and `std` need, so it
//! is the plugin benchmark P1 calls (docs/BENCHMARKS.md).

use bursar_plugin_sdk::prelude::*;

struct Noop;

impl ProcessingModule for Noop {
    fn info() -> PluginInfo {
        PluginInfo::new("noop", env!("CARGO_PKG_VERSION"), &[])
    }

    fn open(ctx: Context) -> Result<Outcome, PluginError> {
        Ok(Outcome::done([("opened_by", "noop"), ("operation", ctx.operation_id.as_str())]))
    }
}

bursar_plugin_sdk::processing_module!(Noop);
