//! An audit of a fleet (the sandbox's platform/fleet subgroup and Argo templates in ten
//! namespaces), checked against what the sandbox saw: never more requests in flight than
//! `--concurrency` on either server, and no object fetched twice.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use std::collections::BTreeMap;

use common::{Sandbox, text};

#[test]
fn a_fleet_audit_stays_within_its_concurrency_and_reads_each_object_once() {
    let sb = Sandbox::start("fleet", &["--fleet", "60", "--latency-ms", "5"]);
    let before = sb.requests().len();
    let out = sb.archshift("audit", &sb.gitlab_token, &["--format", "json", "--quiet", "--concurrency", "3"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let workloads = report["phases"].as_array().unwrap().iter().find(|p| p["id"] == "workloads").unwrap();
    let fleet_changes = workloads["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"].as_str().unwrap().starts_with("cifile/platform/fleet/"))
        .count();
    assert!(fleet_changes >= 30, "the fleet's untagged jobs are planned: {fleet_changes}");

    let log = &sb.requests()[before..];
    assert!(log.len() > 100, "{} requests", log.len());
    for server in ["gitlab", "k8s"] {
        let peak =
            log.iter().filter(|r| r["server"] == server).map(|r| r["in_flight"].as_u64().unwrap()).max().unwrap();
        assert!(peak <= 3, "{server}: {peak} requests in flight with --concurrency 3");
        assert!(peak >= 2, "{server}: the reads did run concurrently (peak {peak})");
    }
    let mut reads: BTreeMap<String, usize> = BTreeMap::new();
    for r in log.iter().filter(|r| r["method"] == "GET") {
        *reads.entry(format!("{} {}", r["server"], r["path"].as_str().unwrap())).or_default() += 1;
    }
    let twice: Vec<_> = reads.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "fetched more than once: {twice:?}");
}

#[test]
fn bench_reports_every_figure_and_keeps_within_its_concurrency() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_archshift"))
        .args([
            "bench",
            "--projects",
            "20",
            "--templates",
            "40",
            "--latency-ms",
            "2",
            "--concurrency",
            "4",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in ["requests", "audit_ms", "sequential_ms", "floor_ms", "peak_rss_mb", "ci_rewrite_ms", "frame_ms"] {
        assert!(r[field].as_f64().is_some_and(|v| v > 0.0), "{field}: {r}");
    }
    let peaks = r["peak_in_flight"].as_array().unwrap();
    assert!(peaks.iter().all(|p| p.as_u64().unwrap() <= 4), "{r}");
    assert!(r["requests"].as_u64().unwrap() > 40, "{r}");
}
