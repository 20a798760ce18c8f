//! The layering the README promises, checked on the source: the pure core does no IO and
//! knows nothing of the adapters, and the sandbox is written from the API reference, never
//! from archshift's client code (so a misunderstanding in the client is caught, not mirrored).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

use std::path::{Path, PathBuf};

use regex::Regex;

/// Files of the pure core: plain data and functions, tested with plain unit tests.
const CORE: [&str; 8] =
    ["src/vocab.rs", "src/redact.rs", "src/par.rs", "src/diff", "src/spec", "src/model", "src/phases", "src/ciyaml"];

struct Rule {
    applies_to: &'static [&'static str],
    forbidden: &'static str,
    why: &'static str,
}

const RULES: [Rule; 3] = [
    Rule {
        applies_to: &CORE,
        forbidden: r"\b(tokio|hyper|hyper_util|reqwest|kube|k8s_openapi|ratatui|crossterm|rustls|tokio_rustls)::|\bstd::(fs|net|process|env|time::(Instant|SystemTime))\b|\bthread::(spawn|sleep|park|Builder)\b|\buse (tokio|hyper|reqwest|kube|k8s_openapi|ratatui|crossterm)\b",
        // Scoped threads (`std::thread::scope`, joined before they return) stay allowed: they
        // compute the same result faster and nothing outlives the call.
        why: "the core does no IO: adapters fill its types in, the engine performs its changes",
    },
    Rule {
        applies_to: &CORE,
        forbidden: r"\bcrate::(live|engine|audit|tui|sandbox)\b",
        why: "the core does not depend on the layers built on it",
    },
    Rule {
        applies_to: &["src/sandbox"],
        forbidden: r"\bcrate::(vocab|redact|diff|spec|model|phases|ciyaml|live|engine|audit|tui)\b|\barchshift::",
        why: "the sandbox is written from the API reference, never from the client's code",
    },
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(line number, line)` of every code line (comments dropped) that matches `forbidden`.
fn violations(source: &str, forbidden: &Regex) -> Vec<(usize, String)> {
    source
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let code = line.split("//").next().unwrap_or("");
            forbidden.is_match(code).then(|| (i + 1, line.trim().to_string()))
        })
        .collect()
}

#[test]
fn the_core_does_no_io_and_the_sandbox_imports_no_client_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    let mut checked = 0;
    for rule in &RULES {
        let forbidden = Regex::new(rule.forbidden).unwrap();
        for area in rule.applies_to {
            let mut files = Vec::new();
            rust_files(&root.join(area), &mut files);
            assert!(!files.is_empty(), "{area} has no Rust files: update the architecture test");
            for file in files {
                checked += 1;
                let text = std::fs::read_to_string(&file).unwrap();
                for (line, code) in violations(&text, &forbidden) {
                    let rel = file.strip_prefix(root).unwrap_or(&file).display().to_string();
                    found.push(format!("{rel}:{line}: `{code}`: {}", rule.why));
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} files checked");
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_forbidden_imports_and_ignores_comments() {
    let io = Regex::new(RULES[0].forbidden).unwrap();
    let bad = "use std::fs;\nfn f() { let _ = tokio::spawn(async {}); }\n// std::fs in a comment\nuse crate::model::kube_id;\nstd::thread::spawn(f);\nstd::thread::scope(|s| ());\nthread::sleep(d);\n";
    let lines: Vec<usize> = violations(bad, &io).into_iter().map(|(l, _)| l).collect();
    assert_eq!(lines, [1, 2, 5, 7]);
    let client = Regex::new(RULES[2].forbidden).unwrap();
    assert_eq!(violations("use crate::phases::plan_all;\nuse crate::sandbox::http;\n", &client).len(), 1);
}
