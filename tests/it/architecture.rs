//! docs/architecture.md stays true to the code: every `crate::` path in a
//! module is allowed by the module table's "may import" column, and no two
//! files of src/ import each other, directly or around a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Module → the modules it may import, from the table in
/// docs/architecture.md (`everything` = no limit).
fn allowed_imports() -> BTreeMap<String, Option<BTreeSet<String>>> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/architecture.md"))
        .expect("docs/architecture.md is readable");
    let mut table = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // ["", module, job, may import, ""]
        let (Some(module), Some(may)) = (cells.get(1), cells.get(cells.len().saturating_sub(2)))
        else {
            continue;
        };
        let module = module.trim_matches('`').trim_end_matches(".rs").to_string();
        let allowed = if may.starts_with("everything") {
            None
        } else {
            Some(backticked(may).into_iter().collect())
        };
        table.insert(module, allowed);
    }
    table
}

fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim_end_matches(".rs").to_string())
        .collect()
}

/// Every .rs file under src/, with its code up to its unit tests (test
/// modules may use what they like), comments removed.
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("src/ is readable")
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                let text = std::fs::read_to_string(&path).expect("source is readable");
                let code: Vec<&str> = text
                    .lines()
                    .take_while(|l| l.trim() != "#[cfg(test)]")
                    .map(|l| l.split("//").next().unwrap_or(""))
                    .collect();
                out.push((path, code.join("\n")));
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(ROOT).join("src"), &mut out);
    out
}

/// The top-level module a file belongs to: `src/proxy/body.rs` → `proxy`.
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(Path::new(ROOT).join("src")).unwrap();
    let first = rel.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// The paths a file names after `crate::`, each as its segments
/// (`use crate::{a, b::c}` gives `a` and `b::c`).
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    paths_after(code, "crate::")
}

/// The paths a file names after `prefix`, groups spread out, each as its
/// segments.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                paths.push(segments(item.trim()));
            }
        } else {
            paths.push(segments(rest));
        }
    }
    paths.retain(|p| !p.is_empty());
    paths
}

fn segments(text: &str) -> Vec<String> {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    text[..end]
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn modules_import_only_what_the_architecture_table_allows() {
    let table = allowed_imports();
    assert!(
        table.len() > 10,
        "the module table was not found: {table:?}"
    );
    let mut wrong = Vec::new();
    for (path, code) in sources() {
        let module = module_of(&path);
        if module == "lib" {
            continue;
        }
        let Some(allowed) = table.get(&module) else {
            wrong.push(format!("{module}: not in the module table"));
            continue;
        };
        let Some(allowed) = allowed else { continue };
        for p in crate_paths(&code) {
            let target = &p[0];
            let target = if target == "Error" { "error" } else { target };
            if target != module && !allowed.contains(target) {
                wrong.push(format!(
                    "{}: imports `{target}`, which the table does not allow for `{module}`",
                    path.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The file a path names: as deep as files exist (`proxy::pools::X` is
/// src/proxy/pools.rs, `proxy::X` src/proxy/mod.rs).
fn resolve(base: &Path, segs: &[String]) -> Option<PathBuf> {
    let mut found = None;
    let mut dir = base.to_path_buf();
    for seg in segs {
        let file = dir.join(format!("{seg}.rs"));
        let module = dir.join(seg).join("mod.rs");
        if file.exists() {
            found = Some(file);
        } else if module.exists() {
            found = Some(module);
        } else {
            break;
        }
        dir = dir.join(seg);
    }
    found
}

/// The paths a file names after `super::`, groups spread out, each as
/// its segments (`use super::{a, b::c};` gives `a` and `b::c`).
fn super_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = paths_after(code, "super::");
    paths.retain(|p| p[0] != "super");
    paths
}

/// The file of the module whose directory is `dir`: `dir/mod.rs`, or
/// `dir.rs` beside it (`src/` itself: lib.rs).
fn parent_file(dir: &Path) -> Option<PathBuf> {
    let module = dir.join("mod.rs");
    if module.exists() {
        return Some(module);
    }
    if dir == Path::new(ROOT).join("src") {
        return Some(dir.join("lib.rs"));
    }
    Some(dir.with_extension("rs")).filter(|f| f.exists())
}

/// file → the files it imports; with `parent_items`, a child module's
/// use of its parent's own items (`super::Proxy`) counts as an import of
/// the parent's file too.
fn file_graph(parent_items: bool) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let src = Path::new(ROOT).join("src");
    let mut graph = BTreeMap::new();
    for (path, code) in sources() {
        let mut edges = BTreeSet::new();
        for p in crate_paths(&code) {
            // `crate::Error` is error.rs's, re-exported at the root.
            let p = if p[0] == "Error" {
                vec!["error".to_string()]
            } else {
                p
            };
            edges.extend(resolve(&src, &p));
        }
        // `super::x` from src/a/b.rs is src/a/x.rs; from src/a/mod.rs it
        // is the crate root's `x`.
        let parent = path.parent().unwrap();
        let sibling_dir = if path.ends_with("mod.rs") {
            parent.parent().unwrap()
        } else {
            parent
        };
        for segs in super_paths(&code) {
            // `super::{a, b::c}` names files, or items of the parent
            // module's own file (`super::Proxy` from src/proxy/x.rs is
            // src/proxy/mod.rs).
            let item = || parent_file(sibling_dir).filter(|_| parent_items);
            if let Some(f) = resolve(sibling_dir, &segs).or_else(item) {
                edges.insert(f);
            }
        }
        // A module file using its own submodules: `mod x;` then `x::…`.
        let own_dir = if path.ends_with("mod.rs") {
            parent.to_path_buf()
        } else {
            path.with_extension("")
        };
        for line in code.lines() {
            let l = line.trim();
            let Some(name) = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))
                .and_then(|n| n.strip_suffix(';'))
            else {
                continue;
            };
            let used = code.contains(&format!("{name}::"));
            if let Some(f) = resolve(&own_dir, &[name.to_string()]).filter(|_| used) {
                edges.insert(f);
            }
        }
        edges.remove(&path);
        graph.insert(path, edges);
    }
    graph
}

#[test]
fn no_import_circles_between_files() {
    // A parent module's file and its children share items both ways (a
    // child names the parent's types, the parent declares and uses the
    // child): not a circle between modules.
    let graph = file_graph(false);
    let mut circles = Vec::new();
    // Depth-first search from every file; a file met again on the current
    // path closes a circle.
    fn visit(
        node: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        stack: &mut Vec<PathBuf>,
        done: &mut BTreeSet<PathBuf>,
        circles: &mut Vec<String>,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let names: Vec<String> = stack[at..]
                .iter()
                .chain(std::iter::once(node))
                .map(|p| p.strip_prefix(ROOT).unwrap_or(p).display().to_string())
                .collect();
            circles.push(names.join(" -> "));
            return;
        }
        if !done.insert(node.clone()) {
            return;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done, circles);
        }
        stack.pop();
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done, &mut circles);
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_checker_sees_imports() {
    // The scan must find what is there, or the tests above prove nothing.
    let paths = crate_paths("use crate::{a, b::c};\nlet x = crate::d::e();");
    assert_eq!(
        paths,
        vec![
            vec!["a".to_string()],
            vec!["b".into(), "c".into()],
            vec!["d".into(), "e".into()]
        ]
    );
    let graph = file_graph(false);
    let src = Path::new(ROOT).join("src");
    let pools = &graph[&src.join("proxy/pools.rs")];
    assert!(
        pools.contains(&src.join("proxy/request_body.rs")),
        "{pools:?}"
    );
    assert!(pools.contains(&src.join("routing.rs")), "{pools:?}");
}

#[test]
fn the_checker_sees_super_groups_and_parent_items() {
    assert_eq!(
        super_paths("use super::{engine::Front, Proxy};\nsuper::wire::x();"),
        vec![
            vec!["engine".to_string(), "Front".into()],
            vec!["Proxy".to_string()],
            vec!["wire".to_string(), "x".into()],
        ]
    );
    let graph = file_graph(true);
    let src = Path::new(ROOT).join("src");
    let direct = &graph[&src.join("proxy/front_direct.rs")];
    for imported in ["proxy/engine.rs", "proxy/mod.rs", "proxy/wire/request.rs"] {
        assert!(
            direct.contains(&src.join(imported)),
            "{imported}: {direct:?}"
        );
    }
}

/// The request engine's two fronts (docs/architecture.md, "The request
/// engine"): neither imports the other, so a policy cannot be reached
/// from one front only; they share the engine through its seam.
#[test]
fn the_fronts_reach_each_other_only_through_the_engine() {
    let graph = file_graph(true);
    let src = Path::new(ROOT).join("src/proxy");
    let fronts = [src.join("front_hyper.rs"), src.join("front_direct.rs")];
    let mut wrong = Vec::new();
    for (from, to) in [(&fronts[0], &fronts[1]), (&fronts[1], &fronts[0])] {
        let Some(edges) = graph.get(from) else {
            wrong.push(format!("{} is missing", from.display()));
            continue;
        };
        if edges.contains(to) {
            wrong.push(format!("{} imports {}", from.display(), to.display()));
        }
        if !edges.contains(&src.join("engine.rs")) {
            wrong.push(format!("{} does not use the engine", from.display()));
        }
    }
    // Nothing else in `proxy` (the engine above all) reaches up into a
    // front; `server` drives them, `proxy/mod.rs` declares them.
    for (file, edges) in &graph {
        if !file.starts_with(&src) || fronts.contains(file) || file.ends_with("proxy/mod.rs") {
            continue;
        }
        for front in &fronts {
            if edges.contains(front) {
                wrong.push(format!("{} imports {}", file.display(), front.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Only the control plane's one publishing step stores a routing table:
/// `routing::Control` (the table's only writer handle) is held by
/// `ControlPlane` alone, and its `store` called from `publish` alone.
#[test]
fn only_the_control_plane_stores_a_table() {
    let mut holders = Vec::new();
    let mut stores = Vec::new();
    for (path, code) in sources() {
        if path.ends_with("src/routing.rs") {
            continue;
        }
        let name = path.strip_prefix(ROOT).unwrap().display().to_string();
        let name = name.trim_start_matches('/').to_string();
        // `routing::Control`, alone or in a `routing::{…}` group.
        let holds = code.match_indices("routing::").any(|(i, _)| {
            let rest = &code[i + "routing::".len()..];
            match rest.strip_prefix('{') {
                Some(group) => group[..group.find('}').unwrap_or(group.len())]
                    .split(',')
                    .any(|item| item.trim() == "Control"),
                None => segments(rest).first().is_some_and(|s| s == "Control"),
            }
        });
        if holds {
            holders.push(name.clone());
        }
        let count = code.matches("control.store(").count() + code.matches("Control::new(").count();
        if count > 0 {
            stores.push((name, count));
        }
    }
    assert_eq!(
        holders,
        ["src/control/mod.rs"],
        "who holds routing::Control"
    );
    assert_eq!(
        stores,
        [("src/control/mod.rs".to_string(), 2)],
        "Control made or stored outside ControlPlane::new and ControlPlane::publish"
    );
    // And `publish` is called by the one commit only: a file read, a DNS
    // answer and a fleet document are events through `take`, like a change.
    let plane = sources()
        .into_iter()
        .find(|(path, _)| path.ends_with("src/control/mod.rs"))
        .map(|(_, code)| code)
        .unwrap();
    assert_eq!(
        plane.matches(".publish()").count(),
        1,
        "the table is published from ControlPlane::take only"
    );
}
