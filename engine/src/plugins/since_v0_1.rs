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

/// The payment-gateway world. The interfaces it shares with the
/// processing world (`types`, `host`) are the processing bindings' own, so
/// one `host` implementation and one error type serve both.
pub mod gateway {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "payment-gateway",
        imports: { default: tracing },
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "bursar:plugin/types": super::processing::bursar::plugin::types,
            "bursar:plugin/host": super::processing::bursar::plugin::host,
        },
    });
}

#[cfg(test)]
mod tests {
    use wit_parser::{Resolve, Type, TypeDefKind, TypeOwner};

    /// Every interface, world, type and function of `bursar:plugin` says
    /// what the host guarantees and what the plugin must do.
    #[test]
    fn the_wit_package_has_the_supported_version_and_documents_everything() {
        let mut resolve = Resolve::default();
        let wit = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit");
        let (pkg, _) = resolve
            .push_dir(wit)
            .expect("wit/ parses with its vendored WASI deps");
        let package = &resolve.packages[pkg];
        assert_eq!(
            package.name.to_string(),
            format!("bursar:plugin@{}", super::VERSION)
        );
        assert!(package.docs.contents.is_some(), "the package is documented");
        let mut missing = Vec::new();
        for (name, id) in &package.interfaces {
            let iface = &resolve.interfaces[*id];
            if iface.docs.contents.is_none() {
                missing.push(format!("interface {name}"));
            }
            for (fname, f) in &iface.functions {
                if f.docs.contents.is_none() {
                    missing.push(format!("{name}.{fname}"));
                }
            }
            for (tname, t) in &iface.types {
                let ty = &resolve.types[*t];
                let owned_here = matches!(ty.owner, TypeOwner::Interface(i) if i == *id);
                // `use types.{x}` brings in an alias; the original carries the docs.
                let used = matches!(ty.kind, TypeDefKind::Type(Type::Id(_)));
                if owned_here && !used && ty.docs.contents.is_none() {
                    missing.push(format!("{name}.{tname}"));
                }
            }
        }
        for (name, id) in &package.worlds {
            if resolve.worlds[*id].docs.contents.is_none() {
                missing.push(format!("world {name}"));
            }
        }
        assert!(missing.is_empty(), "undocumented: {missing:?}");
        for world in ["processing-module", "payment-gateway"] {
            assert!(package.worlds.contains_key(world), "world {world}");
        }
    }
}
