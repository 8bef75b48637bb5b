//! No import circles: within every crate of the workspace, the modules form a DAG (at file
//! level, and at the level of each crate's top modules), so each layer can be read, tested and
//! replaced on its own. Test code (`#[cfg(test)]` sections, `tests.rs` files) may reach
//! anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 6] = [
    "messages", "protocol", "policy", "envs", "actors", "runtime",
];

type Module = Vec<String>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are module `[a, b]`; `lib.rs`/`main.rs` the root.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code that ships: tests and comments removed.
fn production_code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::…`, `super::…` and `self::…` path in `code`, as segments (braces expanded one
/// level, which is how this workspace writes them).
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            let boundary = at == 0
                || !(bytes[at - 1].is_ascii_alphanumeric()
                    || bytes[at - 1] == b'_'
                    || bytes[at - 1] == b':');
            if !boundary {
                continue;
            }
            let rest = &code[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let head = rest[..end].trim_end_matches(':');
            let segments: Vec<String> = head.split("::").map(str::to_string).collect();
            if rest[end..].starts_with('{') {
                let inner = &rest[end + 1..rest[end..].find('}').map_or(rest.len(), |j| end + j)];
                for item in inner.split(',') {
                    let item = item.trim().split("::").next().unwrap_or("").trim();
                    if !item.is_empty() {
                        let mut s = segments.clone();
                        s.push(item.to_string());
                        out.push(s);
                    }
                }
            } else {
                out.push(segments);
            }
        }
    }
    out
}

/// The module `path` (seen from `current`) names, or None outside the crate.
fn resolve(modules: &BTreeSet<Module>, current: &Module, path: &[String]) -> Option<Module> {
    let mut target: Module = match path.first().map(String::as_str) {
        Some("crate") => vec![],
        Some("self") => current.clone(),
        Some("super") => {
            let mut base = current.clone();
            let mut rest = path;
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            return longest_module(modules, &base);
        }
        _ => return None,
    };
    target.extend(path[1..].iter().cloned());
    longest_module(modules, &target)
}

fn longest_module(modules: &BTreeSet<Module>, path: &[String]) -> Option<Module> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
}

/// Module → the modules it uses (not its own ancestors: a child may use its parent's items).
fn graph(krate: &str) -> BTreeMap<Module, BTreeSet<Module>> {
    let src = workspace().join(krate).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let files: Vec<(Module, PathBuf)> = files
        .into_iter()
        .filter(|f| f.file_name().is_none_or(|n| n != "tests.rs"))
        .map(|f| (module_of(&src, &f), f))
        .collect();
    let modules: BTreeSet<Module> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut edges = BTreeMap::new();
    for (module, file) in &files {
        let code = production_code(&std::fs::read_to_string(file).unwrap());
        let deps: BTreeSet<Module> = paths(&code)
            .iter()
            .filter_map(|p| resolve(&modules, module, p))
            .filter(|d| d != module && !module.starts_with(d) && !d.starts_with(module))
            .collect();
        edges.insert(module.clone(), deps);
    }
    edges
}

fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<String> {
    fn visit(
        node: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
        found: &mut Vec<String>,
    ) {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let from = stack.iter().position(|m| m == next).unwrap();
                    let mut names: Vec<String> =
                        stack[from..].iter().map(|m| m.join("::")).collect();
                    names.push(next.join("::"));
                    found.push(names.join(" -> "));
                }
                None => visit(next, edges, state, stack, found),
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
    }
    let (mut state, mut found) = (BTreeMap::new(), Vec::new());
    for node in edges.keys() {
        if !state.contains_key(node) {
            visit(node, edges, &mut state, &mut vec![], &mut found);
        }
    }
    found
}

/// The graph collapsed to each crate's top modules (`roles`, `compute`, ...).
fn top_level(edges: &BTreeMap<Module, BTreeSet<Module>>) -> BTreeMap<Module, BTreeSet<Module>> {
    let top = |m: &Module| m.iter().take(1).cloned().collect::<Module>();
    let mut out: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, tos) in edges {
        let entry = out.entry(top(from)).or_default();
        entry.extend(
            tos.iter()
                .map(top)
                .filter(|t| *t != top(from) && !t.is_empty()),
        );
    }
    out
}

#[test]
fn no_crate_has_import_circles() {
    let mut problems = Vec::new();
    for krate in CRATES {
        let edges = graph(krate);
        assert!(
            edges.len() > 3,
            "{krate}: read only {} modules",
            edges.len()
        );
        for c in cycles(&edges).into_iter().chain(cycles(&top_level(&edges))) {
            problems.push(format!("{krate}: {c}"));
        }
    }
    assert!(
        problems.is_empty(),
        "import circles:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_a_circle() {
    let m = |s: &str| -> Module { s.split("::").map(str::to_string).collect() };
    let edges: BTreeMap<Module, BTreeSet<Module>> = [
        (m("roles"), BTreeSet::from([m("compute")])),
        (m("compute"), BTreeSet::from([m("roles")])),
        (m("bus"), BTreeSet::new()),
    ]
    .into_iter()
    .collect();
    assert_eq!(cycles(&edges), vec!["compute -> roles -> compute"]);
    let code = "use crate::roles::{miner::MineJob, verifier};\nlet x = super::deep::f();";
    let found = paths(code);
    assert!(found.contains(&vec!["crate".into(), "roles".into(), "miner".into()]));
    assert!(found.contains(&vec!["super".into(), "deep".into(), "f".into()]));
}
