//! The shape of the source, checked: no import circle between files
//! outside the simulator, and the README's Layout paths are real.
//!
//! An import is any `crate::`, `super::` or `self::` path (in a `use` line
//! or inline), or a path through a child module the file declares
//! (`mod links;` then `links::Grant`), resolved to the file of the
//! longest module prefix it names. Comments are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A file's module path (`src/web/http.rs` is `["web", "http"]`).
fn module_of(file: &Path) -> Vec<String> {
    let relative = file.strip_prefix("src").unwrap_or(file);
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_string();
    }
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("src entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text without comments and without the contents of string
/// literals (a message may mention `crate::x`).
fn code_only(text: &str) -> String {
    let bytes: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < bytes.len() && bytes[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < bytes.len() && !(bytes[i] == '*' && bytes[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < bytes.len() && bytes[i] != '"' {
                if bytes[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && next.is_some_and(|n| n != '\\') && bytes.get(i + 2) == Some(&'\'') {
            // A char literal such as '"' or '{'.
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand_use(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).trim().to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand_use)
        .map(|p| format!("{prefix}{p}").replace("::self", ""))
        .collect()
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path the file names: `use` trees expanded, and inline paths.
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        let after_use = &rest[at + 4..];
        if before.is_none_or(|c| !is_ident_char(c)) {
            let end = after_use.find(';').unwrap_or(after_use.len());
            paths.extend(expand_use(&after_use[..end]));
        }
        rest = after_use;
    }
    // Inline paths: a run of `ident::ident::…` not preceded by `::`.
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts = is_ident_char(chars[i])
            && (i == 0 || (!is_ident_char(chars[i - 1]) && chars[i - 1] != ':'));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len() && (is_ident_char(chars[j]) || chars[j] == ':') {
            j += 1;
        }
        let path: String = chars[i..j].iter().collect();
        if path.contains("::") {
            paths.push(path.trim_end_matches(':').to_string());
        }
        i = j;
    }
    paths
}

/// The child modules a file declares (`mod x;`, `pub mod x;`).
fn children(code: &str) -> BTreeSet<String> {
    code.lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("pub ").unwrap_or(line);
            let name = line.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_string())
        })
        .collect()
}

struct Graph {
    edges: BTreeMap<PathBuf, BTreeSet<PathBuf>>,
}

fn import_graph() -> Graph {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> =
        files.iter().map(|f| (module_of(f), f.clone())).collect();
    let resolve = |path: &[String]| -> Option<PathBuf> {
        (1..=path.len())
            .rev()
            .find_map(|n| modules.get(&path[..n]).cloned())
    };
    let mut edges = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("source is readable");
        // A file's unit tests (`mod tests { use super::*; }`) are not
        // part of its shape, and their `super` is the file itself.
        let text = text
            .find("#[cfg(test)]\nmod tests")
            .map_or(text.as_str(), |at| &text[..at]);
        let code = code_only(text);
        let me = module_of(file);
        let own = children(&code);
        let mut targets = BTreeSet::new();
        for path in paths_in(&code) {
            let segments: Vec<String> = path
                .split("::")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            let Some(first) = segments.first() else {
                continue;
            };
            let absolute: Vec<String> = match first.as_str() {
                "crate" => segments[1..].to_vec(),
                "super" => {
                    let mut base = me.clone();
                    let mut rest = &segments[..];
                    while rest.first().is_some_and(|s| s == "super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    base.extend(rest.iter().cloned());
                    base
                }
                "self" => me.iter().chain(&segments[1..]).cloned().collect(),
                name if own.contains(name) => me.iter().chain(&segments).cloned().collect(),
                _ => continue,
            };
            if let Some(target) = resolve(&absolute)
                && &target != file
            {
                targets.insert(target);
            }
        }
        edges.insert(file.clone(), targets);
    }
    Graph { edges }
}

impl Graph {
    /// Strongly connected components with more than one file (Tarjan).
    fn circles(&self) -> Vec<Vec<PathBuf>> {
        struct State<'a> {
            graph: &'a Graph,
            index: BTreeMap<&'a PathBuf, usize>,
            low: BTreeMap<&'a PathBuf, usize>,
            stack: Vec<&'a PathBuf>,
            on_stack: BTreeSet<&'a PathBuf>,
            found: Vec<Vec<PathBuf>>,
        }
        fn visit<'a>(s: &mut State<'a>, v: &'a PathBuf) {
            let n = s.index.len();
            s.index.insert(v, n);
            s.low.insert(v, n);
            s.stack.push(v);
            s.on_stack.insert(v);
            for w in &s.graph.edges[v] {
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[w].min(s.low[v]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.index[w].min(s.low[v]);
                    s.low.insert(v, low);
                }
            }
            if s.low[v] == s.index[v] {
                let mut component = Vec::new();
                while let Some(w) = s.stack.pop() {
                    s.on_stack.remove(w);
                    component.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    s.found.push(component);
                }
            }
        }
        let mut state = State {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            found: Vec::new(),
        };
        for v in self.edges.keys() {
            if !state.index.contains_key(v) {
                visit(&mut state, v);
            }
        }
        state.found
    }

    /// Whether `to` is reachable from `from` through imports.
    fn reaches(&self, from: &Path, to: &Path) -> bool {
        let mut seen = BTreeSet::new();
        let mut next = vec![from.to_path_buf()];
        while let Some(file) = next.pop() {
            if file == to {
                return true;
            }
            if seen.insert(file.clone()) {
                next.extend(self.edges.get(&file).into_iter().flatten().cloned());
            }
        }
        false
    }
}

#[test]
fn no_import_circle_outside_the_simulator() {
    let graph = import_graph();
    assert!(
        graph.edges.len() > 40,
        "only {} files were read: is the test run from the crate root?",
        graph.edges.len()
    );
    let circles: Vec<String> = graph
        .circles()
        .into_iter()
        .filter(|c| !c.iter().all(|f| f.starts_with("src/sim")))
        .map(|circle| {
            let within: BTreeSet<&PathBuf> = circle.iter().collect();
            circle
                .iter()
                .map(|f| {
                    let to: Vec<String> = graph.edges[f]
                        .iter()
                        .filter(|t| within.contains(t))
                        .map(|t| t.display().to_string())
                        .collect();
                    format!("  {} -> {}", f.display(), to.join(", "))
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert!(
        circles.is_empty(),
        "import circles between files (each file -> the files of its circle it imports):\n{}",
        circles.join("\n\n")
    );
}

#[test]
fn the_checker_sees_a_circle_when_there_is_one() {
    // The graph's own reading, on a known pair: the web server imports
    // the web terminal, and a module's `use super::` is an import.
    let graph = import_graph();
    assert!(graph.reaches(
        Path::new("src/web/http.rs"),
        Path::new("src/web/terminal.rs")
    ));
    assert!(graph.edges[Path::new("src/web/links.rs")].contains(Path::new("src/config/mod.rs")));
    let fake = Graph {
        edges: BTreeMap::from([
            (PathBuf::from("a"), BTreeSet::from([PathBuf::from("b")])),
            (PathBuf::from("b"), BTreeSet::from([PathBuf::from("a")])),
        ]),
    };
    assert_eq!(fake.circles().len(), 1);
    assert_eq!(
        expand_use("crate::{a::B, c::{self, D}}"),
        ["crate::a::B", "crate::c", "crate::c::D"]
    );
}

/// The README's Layout section: each list of the files a request passes
/// through (`1. src/…` lines under a `**… passes through**` heading).
fn layout_paths() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string("README.md").expect("README.md is readable");
    let layout = readme
        .split("\n## ")
        .find(|s| s.starts_with("Layout"))
        .expect("README.md has a Layout section");
    let mut lists: Vec<(String, Vec<String>)> = Vec::new();
    for line in layout.lines() {
        let line = line.trim();
        if line.starts_with("**") && line.contains("passes through") {
            lists.push((line.trim_matches('*').to_string(), Vec::new()));
        } else if let Some((_, rest)) = line.split_once(". `src/")
            && line.chars().next().is_some_and(|c| c.is_ascii_digit())
            && let Some(list) = lists.last_mut()
        {
            let file = rest.split('`').next().unwrap_or_default();
            list.1.push(format!("src/{file}"));
        }
    }
    lists
}

#[test]
fn the_readme_paths_are_true_and_short() {
    let graph = import_graph();
    let lists = layout_paths();
    assert!(
        lists.len() >= 3,
        "the README's Layout section should list the files an SSH shell, a web terminal and an SFTP read pass through; found {} lists",
        lists.len()
    );
    for (name, files) in &lists {
        assert!(
            (2..=8).contains(&files.len()),
            "{name}: {} files (at most eight)",
            files.len()
        );
        let unique: BTreeSet<&String> = files.iter().collect();
        assert_eq!(unique.len(), files.len(), "{name}: a file is listed twice");
        for (i, file) in files.iter().enumerate() {
            let file = Path::new(file);
            assert!(
                graph.edges.contains_key(file),
                "{name}: {} is not a source file",
                file.display()
            );
            // Each file after the first is reached from one listed before
            // it: the list follows the calls, in order.
            assert!(
                i == 0
                    || files[..i]
                        .iter()
                        .any(|earlier| graph.edges[Path::new(earlier)].contains(file)),
                "{name}: no file listed before {} imports it",
                file.display()
            );
        }
    }
}
