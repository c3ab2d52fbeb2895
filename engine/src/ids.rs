//! Identifiers: a short type prefix plus a UUIDv7 in hex, so ids say what
//! they name (`acc_…`, `key_…`, `txn_…`) and sort by creation time.

/// A new identifier with the given prefix, e.g. `new_id("acc")`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}
