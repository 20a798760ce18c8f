//! `cargo bench --bench ci_tags`: how long `ci-tags` takes to rewrite a large pipeline and
//! prove the rewrite (parse, decide, edit, re-parse, check), per file size. The goal is under
//! 20 ms for a 10,000-line file on one core; this reports, it does not assert.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark panics on a broken fixture")]

use std::collections::BTreeMap;

use archshift::bench::big_pipeline;
use archshift::ciyaml::{TagOptions, retag};
use archshift::vocab::Arch;

fn main() {
    divan::main();
}

fn options() -> TagOptions {
    TagOptions {
        default_tag: Some("$CICD_TAG_AMD64".into()),
        arch_tags: BTreeMap::from([(Arch::Amd64, "$CICD_TAG_AMD64".into()), (Arch::Arm64, "$CICD_TAG_ARM64".into())]),
        ..TagOptions::default()
    }
}

/// Lines in the file: 1,000 lines per 111 jobs.
#[divan::bench(args = [1_000, 10_000, 50_000])]
fn rewrite_and_verify(bencher: divan::Bencher, lines: usize) {
    // The generator `archshift bench` times too: the two figures are of the same file.
    let text = big_pipeline(lines);
    let opts = options();
    assert!(retag(&text, &opts).unwrap().changed);
    bencher.counter(divan::counter::BytesCount::of_str(&text)).bench(|| retag(divan::black_box(&text), &opts).unwrap());
}

// The parts, to see where the time goes: the lossless parse that places the edit, the
// YAML parse that gives the meaning, and the whole analysis of one file.

#[divan::bench(args = [10_000])]
fn part_yaml_edit_parse(bencher: divan::Bencher, lines: usize) {
    let text = big_pipeline(lines);
    bencher.bench(|| yaml_edit::YamlFile::parse(divan::black_box(&text)).tree().to_string().len());
}

#[divan::bench(args = [10_000])]
fn part_yaml_serde_parse(bencher: divan::Bencher, lines: usize) {
    let text = big_pipeline(lines);
    bencher.bench(|| yaml_serde::from_str::<yaml_serde::Value>(divan::black_box(&text)).unwrap());
}

#[divan::bench(args = [10_000])]
fn part_analyze(bencher: divan::Bencher, lines: usize) {
    let text = big_pipeline(lines);
    bencher.bench(|| archshift::ciyaml::analyze(divan::black_box(&text)).unwrap());
}
