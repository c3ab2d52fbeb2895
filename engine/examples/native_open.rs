//! The reference for benchmark P1 (b): the same work as the benchmarked
//! plugin's `open`, as a native program started once per call — the way
//! classic billing panels run their processing modules.

fn main() {
    let operation = std::env::args().nth(1).unwrap_or_default();
    let params = bursar_native_open(&operation);
    for (k, v) in params {
        println!("{k}={v}");
    }
}

fn bursar_native_open(operation: &str) -> Vec<(String, String)> {
    vec![
        ("opened_by".into(), "noop".into()),
        ("operation".into(), operation.into()),
    ]
}
