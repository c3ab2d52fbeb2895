//! Reference plugins compiled into the binary (`component =
//! "builtin:NAME"`), so a fresh `bursar serve` has them without extra files.
//! `build.rs` builds the `plugins/` workspace for wasm32-wasip2.

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The component bytes of a built-in plugin.
pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// Names of the built-in plugins.
pub fn names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// Where the build put every plugin of the `plugins/` workspace, including
/// the test plugins that are not embedded.
pub const WASM_DIR: &str = env!("PLUGINS_WASM_DIR");
