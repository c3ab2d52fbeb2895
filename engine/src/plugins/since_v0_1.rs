//! Bindings for `bursar:plugin@0.1.0`. When the WIT package gets a new
//! version, its bindings go in a module of their own beside this one, and
//! the host dispatches on the version a component was built for.

/// The WIT package version these bindings implement.
pub const VERSION: &str = "0.1.0";

/// The processing-module world.
pub mod processing {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "processing-module",
        imports: { default: tracing },
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
        },
    });
}
