//! `bursar plugin new NAME --kind processing|gateway`: a standalone crate
//! outside this repository that builds with one command (`cargo build
//! --release`) and passes `bursar plugin check` as generated. It carries its
//! own copy of the Rust SDK and of the WIT it was written against, so it
//! needs nothing from here.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The SDK and the WIT, as this Bursar was built with them.
const SDK: &[(&str, &str)] = &[
    (
        "src/lib.rs",
        include_str!("../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "src/common.rs",
        include_str!("../../../plugins/sdk/src/common.rs"),
    ),
    (
        "src/http.rs",
        include_str!("../../../plugins/sdk/src/http.rs"),
    ),
    (
        "src/processing.rs",
        include_str!("../../../plugins/sdk/src/processing.rs"),
    ),
    (
        "src/gateway.rs",
        include_str!("../../../plugins/sdk/src/gateway.rs"),
    ),
    ("wit/plugin.wit", include_str!("../../../wit/plugin.wit")),
    (
        "wit/deps/cli/cli.wit",
        include_str!("../../../wit/deps/cli/cli.wit"),
    ),
    (
        "wit/deps/clocks/clocks.wit",
        include_str!("../../../wit/deps/clocks/clocks.wit"),
    ),
    (
        "wit/deps/filesystem/filesystem.wit",
        include_str!("../../../wit/deps/filesystem/filesystem.wit"),
    ),
    (
        "wit/deps/http/http.wit",
        include_str!("../../../wit/deps/http/http.wit"),
    ),
    (
        "wit/deps/io/io.wit",
        include_str!("../../../wit/deps/io/io.wit"),
    ),
    (
        "wit/deps/random/random.wit",
        include_str!("../../../wit/deps/random/random.wit"),
    ),
    (
        "wit/deps/sockets/sockets.wit",
        include_str!("../../../wit/deps/sockets/sockets.wit"),
    ),
];

/// The versions the plugins of this repository are built with.
const LOCK: &str = include_str!("../../../plugins/Cargo.lock");

const SDK_MANIFEST: &str = r#"[package]
name = "bursar-plugin-sdk"
description = "Write Bursar plugins (processing modules, payment gateways) in Rust"
version = "0.1.0"
edition = "2024"
license = "Apache-2.0"
publish = false

[features]
default = []
# Exactly one of these per plugin: the world the plugin exports.
processing = []
gateway = []

[dependencies]
wit-bindgen = "0.57"
serde = { version = "1", features = ["derive"] }
serde_json = "1"
"#;

const PROCESSING: &str = r#"//! NAME: a Bursar processing module. Replace the bodies with calls to your
//! provisioning system; `bursar plugin call` runs one call in the sandbox.

use bursar_plugin_sdk::prelude::*;

struct Module;

impl ProcessingModule for Module {
    fn info() -> PluginInfo {
        PluginInfo::new("NAME", env!("CARGO_PKG_VERSION"), &["suspend", "resume", "close"])
    }

    /// Reach the remote side with the instance's settings.
    fn check_connection(settings: Params) -> Result<(), PluginError> {
        let url = settings.require("url")?;
        let r = Client.get(url).send()?;
        match r.is_success() {
            true => Ok(()),
            false => Err(PluginError::unavailable(format!("{url}: HTTP {}", r.status))),
        }
    }

    fn open(ctx: Context) -> Result<Outcome, PluginError> {
        log::info(&format!("opening {} for {}", ctx.service.id, ctx.service.account_email));
        // `ctx.operation_id` is the same on every retry of this operation:
        // send it as the remote side's idempotency key.
        Ok(Outcome::done([("hostname", format!("srv-{}", ctx.service.id))]))
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

bursar_plugin_sdk::processing_module!(Module);
"#;

const GATEWAY: &str = r#"//! NAME: a Bursar payment gateway. It starts payments that wait for the
//! payer (instructions to show), answers callbacks, and tells their status
//! when asked; replace the bodies with calls to your payment provider.

use bursar_plugin_sdk::prelude::*;

struct Gateway;

impl GatewayPlugin for Gateway {
    fn info() -> PluginInfo {
        PluginInfo::new("NAME", env!("CARGO_PKG_VERSION"), &[])
    }

    fn check_connection(_settings: Params) -> Result<(), PluginError> {
        Ok(())
    }

    /// `request.payment_id` is the idempotency key towards the provider.
    fn create_payment(request: PaymentRequest) -> Result<CreatedPayment, PluginError> {
        Ok(CreatedPayment {
            gateway_ref: format!("NAME-{}", request.payment_id),
            checkout: Checkout::Instant(PaymentStatus::Pending),
            instructions: Some(format!("Pay with reference {}", request.payment_id)),
        })
    }

    /// The provider's notification: verify it, then say what happened.
    fn handle_callback(_settings: Params, _request: HttpRequest) -> Result<CallbackResult, PluginError> {
        Ok(CallbackResult { response: HttpResponse { status: 204, headers: vec![], body: vec![] }, events: vec![] })
    }

    fn query(_settings: Params, gateway_ref: String) -> Result<PaymentEvent, PluginError> {
        Ok(PaymentEvent { gateway_ref, status: PaymentStatus::Pending, amount: None, event_id: String::new() })
    }
}

bursar_plugin_sdk::gateway_plugin!(Gateway);
"#;

/// Which world the new plugin exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Processing,
    Gateway,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "processing" => Some(Kind::Processing),
            "gateway" => Some(Kind::Gateway),
            _ => None,
        }
    }

    fn feature(self) -> &'static str {
        match self {
            Kind::Processing => "processing",
            Kind::Gateway => "gateway",
        }
    }
}

/// Writes the crate `name` into `dir/name`; returns its directory.
pub fn generate(name: &str, kind: Kind, dir: &Path) -> anyhow::Result<PathBuf> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!(
            "`{name}` is not a plugin name: lower-case letters, digits and `-`, starting with a letter"
        );
    }
    let root = dir.join(name);
    if root.exists() {
        bail!("{} exists; choose another name or --dir", root.display());
    }
    let write = |path: &str, text: &str| -> anyhow::Result<()> {
        let file = root.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))
    };
    let stem = name.replace('-', "_");
    write(
        "Cargo.toml",
        &format!(
            r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
bursar-plugin-sdk = {{ path = "bursar-plugin-sdk", features = ["{feature}"] }}
serde_json = "1"

# A crate of its own, outside any workspace.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
"#,
            feature = kind.feature()
        ),
    )?;
    write(
        "rust-toolchain.toml",
        "[toolchain]\nchannel = \"1.95.0\"\ntargets = [\"wasm32-wasip2\"]\n",
    )?;
    write(
        ".cargo/config.toml",
        "[build]\ntarget = \"wasm32-wasip2\"\n",
    )?;
    write(".gitignore", "/target\n")?;
    write("Cargo.lock", LOCK)?;
    let source = match kind {
        Kind::Processing => PROCESSING,
        Kind::Gateway => GATEWAY,
    };
    write("src/lib.rs", &source.replace("NAME", name))?;
    write("bursar-plugin-sdk/Cargo.toml", SDK_MANIFEST)?;
    for (path, text) in SDK {
        let text = match *path {
            // The WIT sits beside the SDK here, not two directories up.
            "src/lib.rs" => text.replace("path: \"../../wit\"", "path: \"wit\""),
            _ => (*text).to_owned(),
        };
        write(&format!("bursar-plugin-sdk/{path}"), &text)?;
    }
    write(
        "README.md",
        &format!(
            "# {name}\n\nA Bursar {kind} plugin.\n\n```sh\ncargo build --release    # target/wasm32-wasip2/release/{stem}.wasm\nbursar plugin check target/wasm32-wasip2/release/{stem}.wasm\nbursar plugin call target/wasm32-wasip2/release/{stem}.wasm info\n```\n\n`bursar-plugin-sdk/` is the Rust SDK and `bursar-plugin-sdk/wit/` the WIT\ncontract (`bursar:plugin@0.1.0`) this plugin is built against. The guide:\nBursar's docs/PLUGINS.md.\n",
            kind = kind.feature()
        ),
    )?;
    Ok(root)
}
