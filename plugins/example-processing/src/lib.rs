//! A template processing module. It provisions nothing real: `open` returns
//! a made-up server name, and every other call succeeds. Copy this crate,
//! rename it, and replace the bodies with calls to your system.

use bursar_plugin_sdk::prelude::*;

struct Example;

impl ProcessingModule for Example {
    fn info() -> PluginInfo {
        PluginInfo::new("example-processing", env!("CARGO_PKG_VERSION"), &["suspend", "resume", "close"])
    }

    /// Nothing remote to reach here; a real module asks its API something
    /// cheap with the configured credentials.
    fn check_connection(_settings: Params) -> Result<(), PluginError> {
        Ok(())
    }

    fn open(ctx: Context) -> Result<Outcome, PluginError> {
        let prefix = ctx.settings.get("hostname_prefix").unwrap_or("srv");
        log::info(&format!("opening {} for {}", ctx.service.id, ctx.service.account_email));
        Ok(Outcome::done([("hostname", format!("{prefix}-{}", ctx.service.id))]))
    }

    fn suspend(_ctx: Context) -> Result<Outcome, PluginError> {
        Ok(Outcome::nothing())
    }

    fn resume(_ctx: Context) -> Result<Outcome, PluginError> {
        Ok(Outcome::nothing())
    }

    fn close(_ctx: Context) -> Result<Outcome, PluginError> {
        Ok(Outcome::nothing())
    }
}

bursar_plugin_sdk::processing_module!(Example);
