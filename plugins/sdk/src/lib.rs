//! The Bursar plugin SDK: everything a plugin author needs to write a
//! processing module or a payment gateway in Rust and build it with
//! `cargo build --release --target wasm32-wasip2`.
//!
//! A processing module implements [`ProcessingModule`] and exports it with
//! [`processing_module!`]:
//!
//! ```ignore
//! use bursar_plugin_sdk::prelude::*;
//!
//! struct Hello;
//!
//! impl ProcessingModule for Hello {
//!     fn info() -> PluginInfo {
//!         PluginInfo::new("hello", env!("CARGO_PKG_VERSION"), &[])
//!     }
//!     fn open(ctx: Context) -> Result<Outcome, PluginError> {
//!         Ok(Outcome::done([("greeting", format!("hello {}", ctx.service.account_email))]))
//!     }
//! }
//!
//! bursar_plugin_sdk::processing_module!(Hello);
//! ```
//!
//! A payment gateway implements [`GatewayPlugin`] and exports it with
//! `gateway_plugin!`. Enable the SDK feature of the world you export:
//! `processing` or `gateway` (build plugins of the two worlds in separate
//! `cargo build` invocations, so the features do not unify).

#[cfg(all(feature = "processing", feature = "gateway"))]
compile_error!("enable one of the features `processing` and `gateway`: a plugin exports one world");

/// The generated bindings of the world this plugin exports.
#[cfg(feature = "processing")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "processing-module",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "bursar_plugin_sdk::bindings",
    });
}

/// The generated bindings of the world this plugin exports.
#[cfg(feature = "gateway")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "payment-gateway",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "bursar_plugin_sdk::bindings",
    });
}

#[cfg(any(feature = "processing", feature = "gateway"))]
pub mod http;
#[cfg(any(feature = "processing", feature = "gateway"))]
mod common;
#[cfg(any(feature = "processing", feature = "gateway"))]
pub use common::*;

#[cfg(feature = "processing")]
mod processing;
#[cfg(feature = "processing")]
pub use processing::*;

#[cfg(feature = "gateway")]
mod gateway;
#[cfg(feature = "gateway")]
pub use gateway::*;

/// What most plugins need in scope.
#[cfg(any(feature = "processing", feature = "gateway"))]
pub mod prelude {
    pub use crate::common::{Params, PluginError, PluginInfo, log};
    pub use crate::http::{Client, Response};
    #[cfg(feature = "processing")]
    pub use crate::processing::{CatalogItem, Context, Outcome, ProcessingModule, Service};
    #[cfg(feature = "gateway")]
    pub use crate::gateway::{
        CallbackResult, Checkout, CreatedPayment, GatewayPlugin, HttpRequest, HttpResponse, Money, PaymentEvent,
        PaymentRequest, PaymentStatus,
    };
}
