//! The supervisor's folders are its layers (see `lib.rs` and ARCHITECTURE.md): this test reads
//! every module's source, finds which other modules it names through `crate::` or `super::`
//! paths (comments aside), and fails on a module of a lower layer naming a higher one, or on any
//! import circle between modules, printing the offending paths.
//!
//! It reads the source rather than trusting a list, so a new module or a new import is checked
//! the day it is written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first; a module is in the layer of its first path segment.
const LAYERS: &[&str] = &[
    "log",
    "config",
    "report",
    "io",
    "supervision",
    "daemon",
    "cli",
];

fn rank(module: &str) -> usize {
    let top = module.split("::").next().unwrap_or_default();
    LAYERS
        .iter()
        .position(|l| *l == top)
        .unwrap_or_else(|| panic!("module {module} is in no layer: add its folder to LAYERS"))
}

/// Every `.rs` file under `src/` as a module path (`io/control.rs` -> `io::control`).
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let name = parts.join("::");
            if name == "lib" || name == "main" {
                continue;
            }
            out.insert(name, path);
        }
    }
    out
}

/// The code of a file with comments and string literals blanked out.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut kept = String::new();
        let mut in_str = false;
        let mut prev = '\0';
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if !in_str && c == '/' && chars.get(i + 1) == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            }
            if !in_str {
                kept.push(c);
            }
            prev = c;
            i += 1;
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// The modules `module`'s source names, each with the path that named it.
fn imports(
    module: &str,
    text: &str,
    known: &BTreeMap<String, PathBuf>,
) -> BTreeMap<String, String> {
    let code = code_only(text);
    let mut out = BTreeMap::new();
    let bytes = code.as_bytes();
    for (start, prefix) in code
        .match_indices("crate::")
        .map(|(i, _)| (i, None))
        .chain(code.match_indices("super::").map(|(i, _)| (i, Some(()))))
    {
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        let rest = &code[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let path = rest[..end].trim_end_matches(':');
        let mut segs: Vec<&str> = path.split("::").collect();
        let mut base: Vec<&str> = Vec::new();
        if prefix.is_some() {
            // `super::` from inside a file's own `mod tests` is the file itself; from a module
            // it is the parent. Both stay inside the file's folder, so resolve against it.
            base = module.split("::").collect();
            while segs.first() == Some(&"super") {
                segs.remove(0);
                if !module.ends_with("tests") {
                    base.pop();
                }
            }
        } else {
            segs.remove(0);
        }
        let full: Vec<&str> = base.into_iter().chain(segs).collect();
        // The longest prefix of the path that is a module of ours.
        for n in (1..=full.len()).rev() {
            let candidate = full[..n].join("::");
            if known.contains_key(&candidate) {
                // A folder's `mod.rs` naming its own children is containment, not an import.
                if candidate != module && !candidate.starts_with(&format!("{module}::")) {
                    out.entry(candidate).or_insert_with(|| path.to_owned());
                }
                break;
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    known
        .iter()
        .map(|(m, path)| {
            let text = std::fs::read_to_string(path).expect("read module");
            (m.clone(), imports(m, &text, &known))
        })
        .collect()
}

#[test]
fn no_module_imports_a_higher_layer() {
    let g = graph();
    let mut wrong = Vec::new();
    for (from, deps) in &g {
        for (to, path) in deps {
            if rank(to) > rank(from) {
                wrong.push(format!(
                    "{from} ({}) imports {to} ({}) through {path}",
                    LAYERS[rank(from)],
                    LAYERS[rank(to)]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
}

#[test]
fn no_import_circles() {
    let g = graph();
    // A circle exists if some module reaches itself; report each as the shortest path found.
    let mut circles = BTreeSet::new();
    for start in g.keys() {
        let mut queue = std::collections::VecDeque::from([vec![start.clone()]]);
        let mut seen = BTreeSet::new();
        while let Some(path) = queue.pop_front() {
            let last = path.last().expect("non-empty");
            for next in g.get(last).into_iter().flat_map(|d| d.keys()) {
                if next == start {
                    let mut c = path.clone();
                    // Rotate so the same circle is reported once.
                    let min = c.iter().enumerate().min_by_key(|(_, m)| *m).map(|(i, _)| i);
                    c.rotate_left(min.unwrap_or(0));
                    circles.insert(c.join(" -> "));
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    queue.push_back(p);
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_checker_sees_imports() {
    // The two tests above pass trivially if nothing is found: prove the reader finds an import
    // that is known to exist, and resolves `super::` within a folder.
    let g = graph();
    assert!(
        g["daemon"].contains_key("supervision::supervised")
            || g["daemon"].keys().any(|k| k.starts_with("supervision")),
        "daemon's imports not found: {:?}",
        g["daemon"]
    );
    assert!(
        g["config::translate"].contains_key("config"),
        "super:: not resolved: {:?}",
        g["config::translate"]
    );
}
