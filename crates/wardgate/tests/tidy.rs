//! Tidy tests: invariants of the source tree itself (layer order, function and module sizes).
//!
//! **Invariant:** the modules of `src/` are layers; a module uses only modules of its own layer
//! or of layers below it, and modules of one layer do not use each other in a cycle. The order
//! is `LAYERS` below, written down in ARCHITECTURE.md too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers of `src/`, bottom first.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &[
            "background",
            "cold",
            "body",
            "config",
            "gate",
            "gzip",
            "idle",
            "legacy",
            "logging",
            "request_id",
            "time",
            "tls",
        ],
    ),
    (
        "vocabulary",
        &["blob", "metrics", "params", "route", "snapshot"],
    ),
    ("sources", &["replica", "upstream"]),
    ("cache", &["cache"]),
    (
        "serving",
        &[
            "assembly", "budget", "cors", "limit", "respond", "shared", "proxy",
        ],
    ),
    (
        "process",
        &["accept", "admin", "cli", "demo", "purge", "server", "warm"],
    ),
];

/// No product function is longer than this many lines.
const MAX_FN_LINES: usize = 80;
/// No product module file is longer than this many lines (its unit tests not counted).
const MAX_MODULE_LINES: usize = 600;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("src/ is readable") {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The top-level module a file of `src/` belongs to (`cache/l2.rs` → `cache`); `None` for the
/// crate roots.
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// Source without comments, string and char literals, so that `crate::x` inside them is not
/// taken for a use.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == 'r' && matches!(next, Some('"' | '#')) && !ident_before(&chars, i) {
            let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
            if chars.get(i + 1 + hashes) == Some(&'"') {
                let close: String = std::iter::once('"')
                    .chain("#".repeat(hashes).chars())
                    .collect();
                let body: String = chars[i + 2 + hashes..].iter().collect();
                let len = body.find(&close).map_or(body.len(), |n| n + close.len());
                i += 2 + hashes + body[..len].chars().count();
                out.push_str("\"\"");
                continue;
            }
        }
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
            continue;
        }
        if c == '\'' {
            // A char literal ('x', '\n', '\u{1f}'); anything else is a lifetime.
            let end = if next == Some('\\') {
                chars[i + 2..]
                    .iter()
                    .position(|c| *c == '\'')
                    .map(|n| i + 3 + n)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            if let Some(end) = end {
                i = end;
                out.push_str("' '");
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// The top-level modules a piece of code refers to through `crate::`: plain paths
/// (`crate::a::b`, `use crate::a;`) and grouped ones, across lines
/// (`use crate::{a::X, b::{self, Y}};`).
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `wardgate_crate::`, say
        }
        let rest_trim = rest.trim_start();
        if let Some(group) = rest_trim.strip_prefix('{') {
            // The names at depth 0 of the group are top-level modules.
            let mut depth = 0;
            let mut name = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_start = true,
                    c if depth == 0 && at_start && (c.is_alphanumeric() || c == '_') => {
                        name.push(c)
                    }
                    _ if depth == 0 && at_start && !name.is_empty() => {
                        out.insert(std::mem::take(&mut name));
                        at_start = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                out.insert(name);
            }
        } else {
            let name: String = rest_trim
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

/// Every way the module graph breaks the layer order, as messages.
fn layer_violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut bad = Vec::new();
    for (m, uses) in graph {
        let Some(lm) = layer_of(m) else {
            bad.push(format!("module `{m}` is in no layer: add it to LAYERS"));
            continue;
        };
        for u in uses.iter().filter(|u| *u != m) {
            match layer_of(u) {
                None => bad.push(format!("`{m}` uses `crate::{u}`, which is in no layer")),
                Some(lu) if lu > lm => bad.push(format!(
                    "`{m}` ({}) uses `{u}` ({}), a higher layer",
                    LAYERS[lm].0, LAYERS[lu].0
                )),
                _ => {}
            }
        }
    }
    bad.extend(same_layer_cycles(graph));
    bad
}

/// Cycles among modules of one layer (a depth-first search per module).
fn same_layer_cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((m, path)) = stack.pop() {
            for u in graph.get(&m).into_iter().flatten() {
                if u == &m || layer_of(u) != layer_of(start) {
                    continue;
                }
                if u == start {
                    out.push(format!("cycle: {} -> {start}", path.join(" -> ")));
                } else if !path.contains(u) && u > start {
                    let mut p = path.clone();
                    p.push(u.clone());
                    stack.push((u.clone(), p));
                }
            }
        }
    }
    out
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in rust_files(&src()) {
        let Some(m) = module_of(&f) else { continue };
        let text = std::fs::read_to_string(&f).expect("a source file is readable");
        graph
            .entry(m)
            .or_default()
            .extend(crate_refs(&code_only(&text)));
    }
    graph
}

#[test]
fn layers_point_one_way() {
    let graph = module_graph();
    assert!(graph.len() >= 20, "found only {} modules", graph.len());
    let bad = layer_violations(&graph);
    assert!(bad.is_empty(), "layer order broken:\n{}", bad.join("\n"));
}

#[test]
fn the_layer_check_sees_grouped_and_multiline_imports() {
    let code = code_only(
        "use crate::{\n    config::Config,\n    proxy::{self, Proxy},\n};\n// crate::admin\nlet s = \"crate::warm\"; let q = '\"'; crate::gzip::x();\nlet r = r#\"\"crate::demo\"\"#; let l: &'static str = crate::time::X;",
    );
    let refs = crate_refs(&code);
    assert_eq!(
        refs,
        ["config", "gzip", "proxy", "time"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let mut graph = BTreeMap::new();
    graph.insert("config".to_string(), refs);
    let bad = layer_violations(&graph);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].contains("`config` (foundation) uses `proxy` (serving)"),
        "{bad:?}"
    );

    let mut cyclic = BTreeMap::new();
    cyclic.insert(
        "upstream".to_string(),
        BTreeSet::from(["replica".to_string()]),
    );
    cyclic.insert(
        "replica".to_string(),
        BTreeSet::from(["upstream".to_string()]),
    );
    assert!(
        !layer_violations(&cyclic).is_empty(),
        "a same-layer cycle is reported"
    );
}

/// The product part of a file: everything before its `#[cfg(test)]` module.
fn product_lines(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .collect()
}

/// `(name, first line, length)` of every function body in rustfmt-formatted code.
fn functions(lines: &[&str]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let indent = l.len() - t.len();
        let Some(at) = t.find("fn ") else { continue };
        let head = &t[..at];
        let is_fn = head
            .split_whitespace()
            .all(|w| matches!(w, "pub" | "pub(crate)" | "async" | "const" | "unsafe"));
        if !is_fn || t.ends_with(';') {
            continue;
        }
        let name: String = t[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if t.ends_with('}') {
            continue; // a one-line function
        }
        let close = " ".repeat(indent) + "}";
        if let Some(len) = lines[i..].iter().position(|x| *x == close) {
            out.push((name, i + 1, len + 1));
        }
    }
    out
}

#[test]
fn functions_and_modules_stay_small() {
    let mut bad = Vec::new();
    for f in rust_files(&src()) {
        let text = std::fs::read_to_string(&f).expect("a source file is readable");
        let lines = product_lines(&text);
        let rel = f.strip_prefix(src()).unwrap_or(&f).display().to_string();
        if lines.len() > MAX_MODULE_LINES {
            bad.push(format!(
                "{rel}: {} lines (at most {MAX_MODULE_LINES})",
                lines.len()
            ));
        }
        for (name, at, len) in functions(&lines) {
            if len > MAX_FN_LINES {
                bad.push(format!(
                    "{rel}:{at}: fn {name} is {len} lines (at most {MAX_FN_LINES})"
                ));
            }
        }
    }
    assert!(bad.is_empty(), "split these:\n{}", bad.join("\n"));
}

#[test]
fn the_size_check_measures_functions() {
    let code =
        "fn a() {\n    x();\n}\n    pub async fn b(\n        y: u8,\n    ) {\n    }\nfn c() {}\n";
    let lines: Vec<&str> = code.lines().collect();
    assert_eq!(
        functions(&lines),
        vec![("a".to_string(), 1, 3), ("b".to_string(), 4, 4)]
    );
}
