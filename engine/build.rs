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
        "wrong-signature",
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
    // `sqlx::migrate!` reads the migrations when the crate compiles: a new
    // migration must recompile it even when no source file changed.
    println!("cargo:rerun-if-changed=src/store/migrations");

    ensure_wasm_target();
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

/// Makes sure the compiler running this build has the wasm32-wasip2 standard
/// library. rustup installs a toolchain file's `targets` only when it installs
/// the toolchain itself, so a machine that already had the pinned toolchain
/// can lack it: add it through rustup for the active toolchain, or say exactly
/// what to run.
fn ensure_wasm_target() {
    const TARGET: &str = "wasm32-wasip2";
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |sysroot: &Path| sysroot.join("lib/rustlib").join(TARGET).is_dir();
    match &sysroot {
        Some(root) if installed(root) => return,
        Some(_) => {}
        // Cannot tell; let the plugin build say what is wrong.
        None => return,
    }
    // rustup's proxies name the toolchain they run in RUSTUP_TOOLCHAIN.
    let toolchain = env::var("RUSTUP_TOOLCHAIN").ok();
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", TARGET]);
    if let Some(toolchain) = &toolchain {
        cmd.args(["--toolchain", toolchain]);
    }
    println!("cargo:warning=the {TARGET} target is missing; adding it with rustup");
    match cmd.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "`rustup target add {TARGET}{}` failed ({status}); run it by hand, then build again",
            toolchain
                .as_deref()
                .map(|t| format!(" --toolchain {t}"))
                .unwrap_or_default()
        ),
        Err(_) => panic!(
            "the Rust standard library for {TARGET} is not installed and rustup was not found; \
             install it for this compiler ({rustc}) — with rustup: \
             `rustup target add {TARGET}` — then build again"
        ),
    }
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
