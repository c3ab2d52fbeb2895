//! P1: one plugin call — a fresh instance from the cached pre-instantiated
//! component plus `open` on a plugin that does no I/O — against (a) the same
//! logic as a native Rust call and (b) the same logic as a native
//! executable spawned per call.
//!
//! `cargo bench -p bursar --bench plugin_call`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bursar::calendar::Period;
use bursar::plugins::processing::InstanceLimits;
use bursar::plugins::{HostOptions, HttpPolicy, PluginHost, ProcessingPlugin, builtin};
use bursar::services::OperationKind;
use bursar::services::module::{ModuleRequest, ServiceContext};
use criterion::{Criterion, criterion_group, criterion_main};

fn request() -> ModuleRequest {
    ModuleRequest {
        operation_id: "op_bench".into(),
        kind: OperationKind::Open,
        poll: false,
        remote_ref: None,
        service: ServiceContext {
            service_id: "svc_bench".into(),
            plan_id: "plan_bench".into(),
            account_id: "acc_bench".into(),
            account_email: "bench@example.com".into(),
            period: Period::Month,
            settings: BTreeMap::new(),
            params: BTreeMap::new(),
            addons: BTreeMap::new(),
        },
        payload: serde_json::json!({}),
    }
}

fn native_open(operation: &str) -> Vec<(String, String)> {
    vec![
        ("opened_by".into(), "noop".into()),
        ("operation".into(), operation.into()),
    ]
}

/// Builds the spawned-per-call reference and returns its path.
fn native_executable() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "-q",
            // The profile this benchmark is built with: the same
            // dependency builds, so nothing is rebuilt between runs.
            "--profile",
            "bench",
            "-p",
            "bursar",
            "--example",
            "native_open",
            "--message-format=json",
        ])
        .output()
        .expect("build the native reference");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back()
        .expect("the example's path")
}

/// Builds `plugins/examples/python-processing` and returns the component's path.
fn python_component() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = root.join("target/plugins/python-processing.wasm");
    let status = Command::new("bash")
        .arg(root.join("plugins/examples/python-processing/build.sh"))
        .arg(&out)
        .status()
        .expect("bash");
    assert!(status.success(), "build.sh failed");
    out
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host = PluginHost::new(HostOptions::default()).unwrap();
    let limits = InstanceLimits {
        timeout: Duration::from_secs(10),
        memory_bytes: 64 << 20,
        max_response_bytes: 1 << 20,
    };
    let policy = HttpPolicy {
        instance: "bench".into(),
        allowed: vec![],
        timeout: limits.timeout,
        max_response_bytes: 1 << 20,
    };
    let load = |file: &str| {
        let path = PathBuf::from(builtin::WASM_DIR).join(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        runtime
            .block_on(ProcessingPlugin::load(
                &host,
                "bench",
                &bytes,
                vec![],
                policy.clone(),
                limits.clone(),
            ))
            .unwrap()
    };
    // The plugin P1 names: no I/O, and it imports nothing.
    let plugin = load("noop.wasm");
    // The same plugin written with the SDK, so with `std`, whose WASI libc
    // imports wasi:cli and wasi:io; and the same call on a plugin that also
    // imports wasi:http and the WASI filesystem (it has modes that use
    // them): what imports cost.
    let with_std = load("noop_sdk.wasm");
    let importing = load("hostile.wasm");
    // The example module written in Python (componentize-py), built by its
    // documented command; `prolong` is its call that does no I/O.
    let python = load(python_component().to_str().unwrap());
    let req = request();
    let prolong = ModuleRequest {
        kind: OperationKind::Prolong,
        ..request()
    };
    let exe = native_executable();

    let mut group = c.benchmark_group("P1 plugin call");
    group.bench_function("wasm: fresh instance + open", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(plugin.lifecycle(black_box(&req)).await.unwrap()) })
    });
    group.bench_function("wasm: the same written with the SDK (std)", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(with_std.lifecycle(black_box(&req)).await.unwrap()) })
    });
    group.bench_function("wasm: the same on a plugin importing wasi:http", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(importing.lifecycle(black_box(&req)).await.unwrap()) })
    });
    group.bench_function("wasm: a Python module (componentize-py), prolong", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(python.lifecycle(black_box(&prolong)).await.unwrap()) })
    });
    group.bench_function("native: function call", |b| {
        b.iter(|| black_box(native_open(black_box("op_bench"))))
    });
    group.bench_function("native: executable spawned per call", |b| {
        b.iter(|| {
            let out = Command::new(&exe).arg("op_bench").output().unwrap();
            black_box(out.stdout)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
