//! The documents the project owns stay honest: every relative link in a Markdown file resolves,
//! nothing cites the original brief outside the repository, the README stays a front door, and
//! `docs/api.md` names every route of `infra/openapi.yaml`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The repository's files matching `patterns` (git pathspecs), relative to the root: tracked ones
/// and new ones git does not ignore (so `target/` and `.local/` never count). Files deleted in the
/// work tree are left out.
fn repo_files(patterns: &[&str]) -> Vec<PathBuf> {
    let root = repo_root();
    let output = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--"])
        .args(patterns)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git ls-files failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut files: Vec<PathBuf> = output
        .stdout
        .split(|byte| *byte == 0)
        .filter(|path| !path.is_empty())
        .map(|path| PathBuf::from(String::from_utf8(path.to_vec()).expect("UTF-8 path")))
        .filter(|path| root.join(path).is_file())
        .collect();
    files.sort();
    files.dedup();
    files
}

fn read(relative: &Path) -> String {
    let bytes = std::fs::read(repo_root().join(relative)).expect("readable file");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Targets of inline links `[text](target)` outside fenced code blocks.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            // `[text](target "title")` and `[text](<target>)` name the same target.
            let target = after[..end].split_whitespace().next().unwrap_or("");
            targets.push(target.trim_start_matches('<').trim_end_matches('>').to_owned());
            rest = &after[end + 1..];
        }
    }
    targets
}

/// The file or directory a link points to, if it is a relative link (no URL, no bare anchor).
fn local_path(target: &str) -> Option<&str> {
    let path = target.split('#').next().unwrap_or("");
    let external = target.contains("://") || target.starts_with("mailto:");
    (!external && !path.is_empty()).then_some(path)
}

#[test]
fn relative_links_in_markdown_point_to_files_that_exist() {
    let root = repo_root();
    let mut broken = Vec::new();
    let markdown = repo_files(&["*.md"]);
    assert!(
        markdown.iter().any(|file| file == Path::new("README.md")),
        "{markdown:?}"
    );
    for file in &markdown {
        let dir = root.join(file).parent().expect("a parent directory").to_path_buf();
        for target in link_targets(&read(file)) {
            if let Some(path) = local_path(&target) {
                if !dir.join(path).exists() {
                    broken.push(format!("{}: ({target})", file.display()));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to files that do not exist:\n{}",
        broken.join("\n")
    );
}

#[test]
fn no_file_cites_the_brief_outside_the_repository() {
    // Built from parts, so this file does not cite them itself.
    let outside = [["spec", "api.md"].join("/"), ["spec", "product.md"].join("/")];
    let mut citing = Vec::new();
    for file in repo_files(&["*.md", "*.rs", "*.yaml", "*.yml", "*.toml", "*.sh"]) {
        let text = read(&file);
        for (number, line) in text.lines().enumerate() {
            if outside.iter().any(|cited| line.contains(cited.as_str())) {
                citing.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
            }
        }
    }
    assert!(
        citing.is_empty(),
        "these lines cite files the repository does not contain (the contract is docs/api.md):\n{}",
        citing.join("\n")
    );
}

#[test]
fn the_readme_stays_a_front_door() {
    let size = std::fs::metadata(repo_root().join("README.md"))
        .expect("README.md")
        .len();
    assert!(
        size < 18_000,
        "README.md is {size} bytes; move details into docs/ (limit 18,000)"
    );
}

#[test]
fn docs_api_names_every_route_of_the_openapi_document() {
    let openapi: serde_yaml::Value =
        serde_yaml::from_str(&read(Path::new("infra/openapi.yaml"))).expect("infra/openapi.yaml is YAML");
    let contract = read(Path::new("docs/api.md"));
    let methods = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    let mut routes = Vec::new();
    for (path, operations) in openapi["paths"].as_mapping().expect("paths") {
        let path = path.as_str().expect("a path");
        for (key, _) in operations.as_mapping().expect("operations") {
            let method = key.as_str().expect("a key").to_uppercase();
            // Path-level keys such as `parameters` are not operations.
            if methods.contains(&method.as_str()) {
                routes.push(format!("{method} {path}"));
            }
        }
    }
    assert!(routes.len() >= 11, "{routes:?}");
    let missing: Vec<&String> = routes
        .iter()
        .filter(|route| !contract.contains(route.as_str()))
        .collect();
    assert!(missing.is_empty(), "docs/api.md does not name {missing:?}");
}

#[test]
fn link_targets_are_read_as_written() {
    let text = "[a](docs/a.md#x), [b](https://e.com/b), [c](c.md \"title\"), [d](<d.md>)\n```\n[no](in/code)\n```\n";
    assert_eq!(link_targets(text), ["docs/a.md#x", "https://e.com/b", "c.md", "d.md"]);
    assert_eq!(local_path("docs/a.md#x"), Some("docs/a.md"));
    assert_eq!(local_path("#anchor"), None);
    assert_eq!(local_path("https://e.com/b"), None);
}

/// Repository paths named in text: a top-level directory of the repository, then path characters,
/// ending in a file extension. Patterns (`{…}`, `<…>`, `*`) are not paths.
fn named_paths(text: &str) -> Vec<String> {
    const TOP: [&str; 9] = [
        "shared/",
        "functions/",
        "tools/",
        "tests/",
        "infra/",
        "docs/",
        "scripts/",
        "simulator/",
        ".ci/",
    ];
    const EXTENSIONS: [&str; 8] = [".rs", ".md", ".yaml", ".yml", ".toml", ".sh", ".json", ".txt"];
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-');
    let mut found = Vec::new();
    for (start, _) in text.char_indices() {
        let rest = &text[start..];
        let preceded_by_path = text[..start].chars().next_back().is_some_and(is_path_char);
        if preceded_by_path || !TOP.iter().any(|top| rest.starts_with(top)) {
            continue;
        }
        let end = rest.find(|c: char| !is_path_char(c)).unwrap_or(rest.len());
        let candidate = rest[..end].trim_end_matches('.');
        let pattern = rest[end..].starts_with(['{', '<', '*']);
        if !pattern && EXTENSIONS.iter().any(|ext| candidate.ends_with(ext)) {
            found.push(candidate.to_owned());
        }
    }
    found
}

#[test]
fn every_repository_file_named_in_the_text_exists() {
    let root = repo_root();
    let mut missing = Vec::new();
    // This file's own examples are not citations.
    let this_file = Path::new("tests/tests/infra/docs.rs");
    for file in repo_files(&["*.md", "*.rs", "*.yaml", "*.yml", "*.toml", "*.sh"]) {
        if file == this_file {
            continue;
        }
        for (number, line) in read(&file).lines().enumerate() {
            // A path is named from the repository's root, or from the file's own directory (a
            // crate's Cargo.toml naming its `tests/…`).
            let dir = root
                .join(&file)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.clone());
            for named in named_paths(line) {
                if !root.join(&named).exists() && !dir.join(&named).exists() {
                    missing.push(format!("{}:{}: {named}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "these lines name files the repository does not contain:\n{}",
        missing.join("\n")
    );
}

#[test]
fn named_paths_are_read_as_written() {
    let line = "see `shared/src/wiring.rs`, docs/api.md. and functions/{binary}/src/main.rs or xtests/a.rs";
    assert_eq!(named_paths(line), ["shared/src/wiring.rs", "docs/api.md"]);
}
