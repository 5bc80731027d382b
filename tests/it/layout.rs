//! The code map's "must not know" column, checked: every `use crate::…` in
//! `src/` must stay within what its part of the flow may know
//! (ARCHITECTURE.md, "Code map"). A new import across a line fails here, so
//! the map stays a fact; widening a rule is a decision made in this table,
//! with its reason. A relative `use super::…` is read as the crate path it
//! names, so a file deep in a folder (`work/pull/credit.rs`) cannot climb out
//! of its part unseen.

use std::fs;
use std::path::{Path, PathBuf};

/// What each part of `src/` may import from the crate, besides itself.
/// A path is allowed when it starts with one of these.
const MAY_USE: &[(&str, &[&str], &str)] = &[
    (
        "pipeline",
        &[
            "config",
            "time",
            "ops",
            "work",
            "delivery::Broadcast",
            "delivery::Kind",
        ],
        "the pipeline makes verdicts and hands delivery serialised messages; it never knows clients or the front",
    ),
    (
        "delivery",
        &["epoch", "ops::faults"],
        "delivery moves serialised messages to sockets: no deadlines, verdicts, work or routes",
    ),
    (
        "work",
        &["pipeline::event", "time", "ops::health", "ops::logging"],
        "real work knows the event it carries out, not admission, the ledger or verdicts",
    ),
    (
        "ops",
        &[
            "config",
            "server",
            "pipeline::stats",
            "pipeline::ledger::Dropped",
            "time",
        ],
        "ops renders and guards what the stages report (the snapshot and its drop counts), without knowing what they do",
    ),
    (
        "config",
        &["http::origin", "ops::limits", "ops::faults"],
        "flags are parsed into the types that use them, nothing more",
    ),
    (
        "cluster",
        &[
            "config",
            "epoch",
            "time",
            "ops::health",
            "ops::logging",
            "delivery::Broadcast",
            "delivery::Kind",
            "delivery::Log",
            "delivery::Read",
            "delivery::gap_message",
            "delivery::run_switch",
            "pipeline::hub::LatestStats",
            "pipeline::hub::STATS_INTERVAL",
            "pipeline::stats",
            "pipeline::overload::State",
            "pipeline::event",
            "pipeline::intake::Intake",
        ],
        "the cluster carries serialised messages and snapshots between nodes: it makes no verdict and knows no client",
    ),
    ("time", &[], "the one conversion of time, a leaf"),
    ("epoch", &[], "a run's id and a position in it, a leaf"),
    (
        "http",
        &[
            "config",
            "delivery",
            "epoch",
            "ops",
            "pipeline",
            "time",
            "work",
            "cluster::ingest",
        ],
        "the front may use every part but the wiring (of the cluster, only the way posted events go into Redis)",
    ),
];

/// Files outside the rules: the wiring, the crate root and the fuzz entry
/// points see everything by design; the load tool speaks only the wire.
const UNRULED: &[&str] = &["lib.rs", "server.rs", "fuzzing.rs", "main.rs", "bin"];

fn sources(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The part of the flow a file belongs to: its folder, or its own name.
fn part_of(relative: &Path) -> String {
    let first = relative.components().next().expect("a path under src/");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_owned()
}

/// The module a file is: `work/pull/mod.rs` is `work::pull`,
/// `work/pull/credit.rs` is `work::pull::credit`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut module: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let file = module.pop().expect("a file name");
    if file != "mod.rs" {
        module.push(file.trim_end_matches(".rs").to_owned());
    }
    module
}

/// Every crate path a file's `use` statements name, expanded from groups:
/// `use crate::{a::b, c::{d, e}};` gives `a::b`, `c::d`, `c::e`. A
/// `use super::…` is resolved from `module`, the file's own module; one
/// indented by four spaces per level stands in an inline module (`mod
/// tests`), so its first `super` is the file's module itself. A path that
/// stays within the file's module is its own and is left out.
fn crate_uses(text: &str, module: &[&str]) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("use crate::") {
        let after = &rest[at + "use crate::".len()..];
        let end = after.find(';').unwrap_or(after.len());
        expand("", &after[..end], &mut paths);
        rest = &after[end..];
    }
    for (at, _) in text.match_indices("use super::") {
        let line = &text[text[..at].rfind('\n').map_or(0, |n| n + 1)..at];
        let inline = (line.len() - line.trim_start_matches(' ').len()) / 4;
        let after = &text[at + "use ".len()..];
        let mut tree = &after[..after.find(';').unwrap_or(after.len())];
        let mut up = 0;
        while let Some(next) = tree.strip_prefix("super::") {
            tree = next;
            up += 1;
        }
        if up <= inline {
            continue;
        }
        match module.len().checked_sub(up - inline) {
            Some(kept) => {
                let prefix: String = module[..kept].iter().map(|m| format!("{m}::")).collect();
                expand(&prefix, tree, &mut paths);
            }
            None => paths.push(format!("{tree} (a `super` above the crate root)")),
        }
    }
    paths
}

fn expand(prefix: &str, tree: &str, into: &mut Vec<String>) {
    let tree = tree.trim();
    match tree.find('{') {
        Some(open) => {
            let head = format!("{prefix}{}", &tree[..open]);
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            for item in split_top_level(inner) {
                expand(&head, item, into);
            }
        }
        None if !tree.is_empty() => {
            let path = format!("{prefix}{tree}");
            let path = path.split(" as ").next().unwrap_or(&path).trim();
            into.push(path.trim_end_matches("::self").to_owned());
        }
        None => {}
    }
}

/// Splits `a, b::{c, d}, e` at the commas outside braces.
fn split_top_level(list: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    items
}

#[test]
fn group_expansion_reads_nested_use_statements() {
    let uses = crate_uses(
        "use crate::{a::b, c::{d, e as f}, g};\nuse crate::h::self;",
        &[],
    );
    assert_eq!(uses, ["a::b", "c::d", "c::e", "g", "h"]);
}

#[test]
fn a_relative_use_is_read_as_the_crate_path_it_names() {
    let module = module_of(Path::new("work/pull/credit.rs"));
    assert_eq!(module, ["work", "pull", "credit"]);
    assert_eq!(module_of(Path::new("work/pull/mod.rs")), ["work", "pull"]);
    let text = "use super::remote::Remote;\n\
                use super::super::{Answer, http};\n\
                use super::super::super::pipeline::hub;\n\
                mod tests {\n    use super::*;\n    use super::super::testing::MS;\n}\n";
    let module: Vec<&str> = module.iter().map(String::as_str).collect();
    assert_eq!(
        crate_uses(text, &module),
        [
            "work::pull::remote::Remote",
            "work::Answer",
            "work::http",
            "pipeline::hub",
            "work::pull::testing::MS",
        ]
    );
    assert_eq!(
        crate_uses("use super::super::x;", &["config"]),
        ["x (a `super` above the crate root)"]
    );
}

#[test]
fn no_module_imports_across_the_lines_of_the_code_map() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut crossings = Vec::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src/");
        let part = part_of(relative);
        if UNRULED.contains(&relative.to_string_lossy().as_ref())
            || UNRULED.contains(&part.as_str())
        {
            continue;
        }
        let Some((_, allowed, why)) = MAY_USE.iter().find(|(name, _, _)| *name == part) else {
            crossings.push(format!(
                "{}: the part `{part}` has no row in MAY_USE",
                relative.display()
            ));
            continue;
        };
        checked += 1;
        let text = fs::read_to_string(file).expect("a source file is readable");
        let module = module_of(relative);
        let module: Vec<&str> = module.iter().map(String::as_str).collect();
        for path in crate_uses(&text, &module) {
            let own = path == part || path.starts_with(&format!("{part}::"));
            let may = allowed
                .iter()
                .any(|a| path == *a || path.starts_with(&format!("{a}::")));
            if !own && !may {
                crossings.push(format!(
                    "{} uses crate::{path}, but `{part}` may use only {allowed:?} ({why})",
                    relative.display()
                ));
            }
        }
    }
    assert!(checked > 30, "only {checked} files were checked");
    assert!(crossings.is_empty(), "{}", crossings.join("\n"));
}
