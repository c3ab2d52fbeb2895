//! The engine's modules depend on each other one way: the pure domain
//! below the store, the store below the workflows, the workflows below
//! the edges (HTTP, CLI). A cycle between two top-level modules of
//! `engine/src` fails here, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn engine_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/src")
}

/// The top-level module a file of `engine/src` belongs to.
fn top_level(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read engine/src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules a source text names through `crate::…` (outside
/// its tests).
fn targets(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::x, b};`: the first segment of each item.
            let end = group.find("};").or_else(|| group.find('}')).unwrap_or(0);
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group[..end].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_ascii_alphanumeric() || c == '_') => {
                        out.insert(ident(&group[i..]).to_owned());
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest).to_owned());
        }
    }
    out
}

#[test]
fn the_engine_modules_import_each_other_without_cycles() {
    let src = engine_src();
    let mut files = vec![];
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_level(&src, f)).collect();
    assert!(
        modules.contains("store") && modules.contains("lifecycle"),
        "{modules:?}"
    );
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = top_level(&src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read a source file");
        for to in targets(&text) {
            if to != from && modules.contains(&to) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in &modules {
        if let Some(cycle) = visit(m, &edges, &mut vec![], &mut done) {
            panic!(
                "engine/src has an import cycle: {}\nedges: {edges:#?}",
                cycle.join(" → ")
            );
        }
    }
    // The store is below every workflow.
    let store = edges.get("store").cloned().unwrap_or_default();
    for workflow in [
        "lifecycle",
        "billing",
        "charges",
        "automation",
        "notify",
        "api",
    ] {
        assert!(!store.contains(workflow), "store imports {workflow}");
    }
}

#[test]
fn the_scanner_sees_grouped_and_plain_paths() {
    let t = targets(
        "use crate::{a::x, b::{c, d}, e};\nlet v = crate::f::g();\n#[cfg(test)]\nuse crate::h;",
    );
    assert_eq!(
        t,
        ["a", "b", "e", "f"].into_iter().map(String::from).collect()
    );
}
