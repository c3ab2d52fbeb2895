//! A component that exports `wasi:cli/run` and nothing of Bursar's.
fn main() {
    println!("not a plugin");
}
