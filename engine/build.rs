//! Builds the reference plugins in `plugins/` for wasm32-wasip2 and embeds
//! them (see `src/plugins/builtin.rs`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every package of the plugins workspace, grouped by the world it exports
/// (and by whether it uses `std`).
const PACKAGES_BY_WORLD: &[&[&str]] = &[
    &[
        "example-processing",
        "dcimanager6",
        "hostile",
        "noop-sdk",
        "not-a-plugin",
    ],
    &["gateway-echo", "bank-transfer", "stripe"],
    // Without `std`: built alone so that wit-bindgen's `std` feature, which
    // the SDK turns on, does not unify into it.
    &["noop"],
];

/// Built-in plugins: (name used in `builtin:NAME`, crate's wasm file stem).
const BUILTIN: &[(&str, &str)] = &[
    ("example-processing", "example_processing"),
    ("dcimanager6", "dcimanager6"),
    ("bank-transfer", "bank_transfer"),
    ("stripe", "stripe"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("engine/ has a parent")
        .to_path_buf();
    let plugins = root.join("plugins");
    println!(
        "cargo:rerun-if-changed={}",
        plugins.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        plugins.join("Cargo.lock").display()
    );
    for dir in [
        "sdk",
        "example-processing",
        "dcimanager6",
        "bank-transfer",
        "stripe",
        "testing",
    ] {
        println!("cargo:rerun-if-changed={}", plugins.join(dir).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    // A target directory of its own: the outer build holds the lock of ours.
    let target_dir = wasm_target_dir(&out_dir);
    // One `cargo build` per group: the SDK's `processing` and `gateway`
    // features must not unify into one build of it.
    for packages in PACKAGES_BY_WORLD {
        let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
        for package in *packages {
            cmd.args(["-p", package]);
        }
        for var in [
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTFLAGS",
            "CARGO_BUILD_TARGET",
        ] {
            cmd.env_remove(var);
        }
        let status = cmd.status().expect("run cargo to build the plugins");
        if !status.success() {
            panic!(
                "building the plugins for wasm32-wasip2 failed; is the target installed? \
                 (`rustup target add wasm32-wasip2`, or let rust-toolchain.toml install it)"
            );
        }
    }
    let wasm_dir = target_dir.join("wasm32-wasip2").join("release");
    let mut code = String::from(
        "/// (name, component bytes) of every built-in plugin.\npub static BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for (name, stem) in BUILTIN {
        let file = wasm_dir.join(format!("{stem}.wasm"));
        let copy = out_dir.join(format!("{stem}.wasm"));
        std::fs::copy(&file, &copy).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            copy.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("builtin_plugins.rs"), code).expect("write builtin_plugins.rs");
    println!("cargo:rustc-env=PLUGINS_WASM_DIR={}", wasm_dir.display());
}

/// `<target>/plugins`, found from OUT_DIR (`<target>/<profile>/build/<pkg>/out`).
fn wasm_target_dir(out_dir: &Path) -> PathBuf {
    if let Ok(dir) = env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("plugins");
    }
    out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(|build| build.parent())
        .and_then(|profile| profile.parent())
        .map(|target| target.join("plugins"))
        .unwrap_or_else(|| out_dir.join("plugins"))
}
