//! The control plane's layers, checked from its source: a module uses only
//! its own layer and the layers below (see the table in `src/lib.rs` and
//! docs/ARCHITECTURE.md), and no modules depend on each other in a cycle.
//!
//! A module is one source file. Its dependencies are the `crate::` and
//! `super::` paths it names in code (comments are skipped) and the paths
//! through its own submodules; each path counts for the deepest module it
//! names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first.
const LAYERS: &[&[&str]] = &[
    &["db", "model", "config"],
    &["domain"],
    &["commit"],
    &["analytics"],
    &["state"],
    &["tasks"],
    &["http"],
    &["app"],
];

type Module = Vec<String>;

fn layer(module: &Module) -> usize {
    LAYERS
        .iter()
        .position(|names| names.contains(&module[0].as_str()))
        .unwrap_or_else(|| panic!("{} is in no layer; add it to LAYERS", module.join("::")))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/http/links.rs` -> `http::links`; `src/http/mod.rs` -> `http`.
fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Module = relative
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The source without comments (line comments and doc comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string literal is rare in this crate; URLs in
            // strings hold no `crate::` paths either way.
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts at `prefix` (`crate::`, `super::` or a
/// submodule's name), brace groups expanded one level:
/// `crate::{a, b::c}` gives `a` and `b::c`.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find(prefix) {
        let start = from + found;
        from = start + prefix.len();
        if code[..start].chars().next_back().is_some_and(ident_char)
            || code[..start].ends_with("::")
        {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let path = segments(item.trim());
                if !path.is_empty() {
                    out.push(path);
                }
            }
        } else {
            let path = segments(rest);
            if !path.is_empty() {
                out.push(path);
            }
        }
    }
    out
}

fn segments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let end = rest.find(|c: char| !ident_char(c)).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(next) if next.starts_with(ident_char) => rest = next,
            _ => break,
        }
    }
    out
}

/// The deepest known module a path names.
fn target(modules: &BTreeSet<Module>, path: &[String]) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|candidate| modules.contains(candidate))
}

/// The control crate's module graph.
fn dependencies() -> BTreeMap<Module, BTreeSet<Module>> {
    dependencies_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// The module graph of the library under `src` (binaries, which only use
/// the library, are left out).
fn dependencies_of(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let src = src.to_path_buf();
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.retain(|f| {
        !f.ends_with("main.rs") && !f.ends_with("lib.rs") && !f.starts_with(src.join("bin"))
    });
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = code(&std::fs::read_to_string(file).expect("read source"));
        let mut uses = BTreeSet::new();
        for path in paths_after(&text, "crate::") {
            uses.extend(target(&modules, &path));
        }
        // `super::` from `a::b::c` is `a::b`, whether c is `c.rs` or
        // `c/mod.rs`; each further `super` goes one level up.
        let parent: Module = module[..module.len() - 1].to_vec();
        for path in paths_after(&text, "super::") {
            let mut full = parent.clone();
            let mut path = path.as_slice();
            while path.first().is_some_and(|s| s == "super") {
                full.pop();
                path = &path[1..];
            }
            full.extend(path.iter().cloned());
            uses.extend(target(&modules, &full));
        }
        // Paths through the module's own submodules (`canonical::f`).
        for child in modules
            .iter()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(&module))
        {
            let name = format!("{}::", child.last().expect("named"));
            for path in paths_after(&text, &name) {
                let mut full = child.clone();
                full.extend(path);
                uses.extend(target(&modules, &full));
            }
        }
        uses.remove(&module);
        graph.insert(module, uses);
    }
    graph
}

#[test]
fn modules_use_only_their_layer_and_the_layers_below() {
    let graph = dependencies();
    assert!(graph.len() > 30, "found only {} modules", graph.len());
    let mut wrong = Vec::new();
    for (module, uses) in &graph {
        for used in uses {
            if layer(used) > layer(module) {
                wrong.push(format!("{} uses {}", module.join("::"), used.join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "upward dependencies:\n{}",
        wrong.join("\n")
    );
}

/// The import cycles of a module graph: Tarjan's strongly connected
/// components with two or more modules.
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<String>> {
    // Tarjan's strongly connected components; any with two or more
    // modules is a cycle.
    struct Walk<'g> {
        graph: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'g Module, usize>,
        low: BTreeMap<&'g Module, usize>,
        stack: Vec<&'g Module>,
        on_stack: BTreeSet<&'g Module>,
        cycles: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, module: &'g Module) {
            let at = self.index.len();
            self.index.insert(module, at);
            self.low.insert(module, at);
            self.stack.push(module);
            self.on_stack.insert(module);
            for used in &self.graph[module] {
                if !self.index.contains_key(used) {
                    self.visit(used);
                    let low = self.low[used].min(self.low[module]);
                    self.low.insert(module, low);
                } else if self.on_stack.contains(used) {
                    let low = self.index[used].min(self.low[module]);
                    self.low.insert(module, low);
                }
            }
            if self.low[module] == self.index[module] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    component.push(top.join("::"));
                    if top == module {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.cycles.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        cycles: Vec::new(),
    };
    for module in graph.keys() {
        if !walk.index.contains_key(module) {
            walk.visit(module);
        }
    }
    walk.cycles
}

#[test]
fn no_modules_depend_on_each_other_in_a_cycle() {
    let found = cycles(&dependencies());
    assert!(found.is_empty(), "import cycles: {found:?}");
}

#[test]
fn no_crate_of_the_workspace_has_an_import_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds control/");
    let mut checked = 0;
    for entry in std::fs::read_dir(root).expect("read the workspace") {
        let src = entry.expect("dir entry").path().join("src");
        if !src.join("lib.rs").is_file() {
            continue;
        }
        let graph = dependencies_of(&src);
        let found = cycles(&graph);
        assert!(
            found.is_empty(),
            "import cycles in {}: {found:?}",
            src.display()
        );
        checked += 1;
    }
    assert!(checked >= 5, "checked only {checked} crates");
}

#[test]
fn the_checker_sees_paths_in_every_form() {
    let text = "use crate::{db::keys, model};\nuse super::extract::Auth;\n// crate::app\nlet x = canonical::f();";
    let code = code(text);
    assert_eq!(
        paths_after(&code, "crate::"),
        [
            vec!["db".to_owned(), "keys".to_owned()],
            vec!["model".to_owned()]
        ]
    );
    assert_eq!(
        paths_after(&code, "super::"),
        [vec!["extract".to_owned(), "Auth".to_owned()]]
    );
    assert_eq!(paths_after(&code, "canonical::"), [vec!["f".to_owned()]]);
}
