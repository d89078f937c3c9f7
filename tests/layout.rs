//! The layout rules (issue 10), checked on the source tree:
//! - nothing outside `src/apps/` imports `src/apps/` — the runtime holds no application.
//!   The single exception is the composition root, `src/main.rs`'s `main`, which asks for
//!   `Registry::with_apps()` (defined in `src/apps/mod.rs`);
//! - stage kinds (`src/stages/`) never import the running machinery (`src/actors/`).
//!
//! Comment lines are skipped: a doc may say where things are.

use std::path::{Path, PathBuf};

/// The one place outside `src/apps/` allowed to reach the apps.
const COMPOSITION_ROOT: &str = "src/main.rs";

/// What counts as reaching `src/apps/` from outside it: a path into the module, or the two
/// functions it defines to register the apps.
const APP_MARKERS: &[&str] = &["apps::", "with_apps", "register_all"];
const ACTOR_MARKERS: &[&str] = &["actors::"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("read {}: {e}", dir.display())).path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `file:line: text` for every code line of `text` containing one of `markers`.
fn offending(file: &str, text: &str, markers: &[&str]) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .filter(|(_, line)| markers.iter().any(|m| line.contains(m)))
        .map(|(i, line)| format!("{file}:{}: {}", i + 1, line.trim()))
        .collect()
}

/// Every `src/` file (as `src/...`) with its text.
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().replace('\\', "/");
            (rel, text)
        })
        .collect()
}

#[test]
fn nothing_outside_src_apps_imports_the_apps() {
    let sources = sources();
    let outside: Vec<_> = sources.iter().filter(|(f, _)| !f.starts_with("src/apps/")).collect();
    let mut bad = Vec::new();
    let mut root_uses = 0;
    for (file, text) in &outside {
        let hits = offending(file, text, APP_MARKERS);
        if file == COMPOSITION_ROOT {
            root_uses += hits.len();
        } else {
            bad.extend(hits);
        }
    }
    println!("scanned {} files outside src/apps; {} offending lines; composition root uses: {root_uses}", outside.len(), bad.len());
    assert!(bad.is_empty(), "imports of src/apps outside it (only {COMPOSITION_ROOT} may):\n{}", bad.join("\n"));
    // The apps reach the binary through the composition root, and only there.
    assert_eq!(root_uses, 1, "{COMPOSITION_ROOT} should register the apps exactly once");
    assert!(sources.iter().any(|(f, _)| f == "src/apps/mod.rs"), "src/apps/mod.rs is missing");
}

#[test]
fn stage_kinds_never_import_the_actors() {
    let sources = sources();
    let stages: Vec<_> = sources.iter().filter(|(f, _)| f.starts_with("src/stages/")).collect();
    let bad: Vec<String> = stages.iter().flat_map(|(f, t)| offending(f, t, ACTOR_MARKERS)).collect();
    println!("scanned {} files under src/stages; {} offending lines", stages.len(), bad.len());
    assert!(!stages.is_empty(), "no files under src/stages");
    assert!(bad.is_empty(), "src/stages imports src/actors:\n{}", bad.join("\n"));
}

/// The scanner itself finds an import and names its line, and ignores comments.
#[test]
fn the_scanner_reports_file_and_line() {
    let text = "//! see crate::apps::skeji\nuse crate::apps::skeji::model;\nfn f() { crate::actors::producer::x(); }\n";
    assert_eq!(offending("src/x.rs", text, APP_MARKERS), vec!["src/x.rs:2: use crate::apps::skeji::model;"]);
    assert_eq!(offending("src/x.rs", text, ACTOR_MARKERS), vec!["src/x.rs:3: fn f() { crate::actors::producer::x(); }"]);
}
