//! kubectl 1.32 (from the machine image) against the sandbox's API server.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers panic on broken fixtures")]

mod common;

use common::{Sandbox, text, write};

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "kubectl failed: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn kubectl_reads_custom_resources_with_their_printer_columns() {
    let sb = Sandbox::start("kubectl-get", &[]);
    let pools = ok(&sb.kubectl(&["get", "nodepools"]));
    let header: Vec<&str> = pools.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "NODECLASS", "NODES", "READY", "AGE"]);
    assert!(pools.lines().any(|l| l.starts_with("spot-pool ")), "{pools}");
    assert!(pools.lines().any(|l| l.starts_with("system-pool ")), "{pools}");

    let yaml = ok(&sb.kubectl(&["get", "nodepool", "spot-pool", "-o", "yaml"]));
    let obj: yaml_serde::Value = yaml_serde::from_str(&yaml).unwrap();
    let reqs = obj["spec"]["template"]["spec"]["requirements"].as_sequence().unwrap();
    let arch = reqs.iter().find(|r| r["key"].as_str() == Some("kubernetes.io/arch")).unwrap();
    assert_eq!(arch["values"], yaml_serde::Value::Sequence(vec!["amd64".into()]));
    // Defaults from the CRD schema were applied on write, as a real server does.
    assert_eq!(obj["spec"]["template"]["spec"]["expireAfter"].as_str(), Some("720h"));

    let releases = ok(&sb.kubectl(&["get", "releases.helm.crossplane.io"]));
    let row: Vec<&str> =
        releases.lines().find(|l| l.starts_with("gitlab-runner ")).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..8],
        ["gitlab-runner", "gitlab-runner", "gitlab-runner", "0.77.2", "True", "True", "deployed", "4"],
        "{releases}"
    );

    let wft = ok(&sb.kubectl(&["get", "workflowtemplates", "-A"]));
    assert!(wft.starts_with("NAMESPACE "), "{wft}");
    assert_eq!(wft.lines().count(), 5, "{wft}");
    assert!(wft.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()[..2] == ["data", "etl"]), "{wft}");
}

#[test]
fn kubectl_merge_patch_bumps_generation_and_invalid_operator_is_rejected() {
    let sb = Sandbox::start("kubectl-patch", &[]);
    let before: serde_json::Value =
        serde_json::from_str(&ok(&sb.kubectl(&["get", "nodepool", "spot-pool", "-o", "json"]))).unwrap();
    let out =
        ok(&sb.kubectl(&["patch", "nodepool", "spot-pool", "--type", "merge", "-p", r#"{"spec":{"weight":10}}"#]));
    assert_eq!(out.trim(), "nodepool.karpenter.sh/spot-pool patched");
    let after: serde_json::Value =
        serde_json::from_str(&ok(&sb.kubectl(&["get", "nodepool", "spot-pool", "-o", "json"]))).unwrap();
    assert_eq!(after["spec"]["weight"], 10);
    assert_eq!(after["metadata"]["generation"].as_i64(), before["metadata"]["generation"].as_i64().map(|g| g + 1));
    assert_ne!(after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"]);

    let bad = sb.kubectl(&[
        "patch",
        "nodepool",
        "spot-pool",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/requirements/1/operator","value":"Foo"}]"#,
    ]);
    assert!(!bad.status.success());
    let err = text(&bad.stderr);
    assert!(
        err.contains(r#"The NodePool "spot-pool" is invalid: spec.template.spec.requirements[1].operator: Unsupported value: "Foo": supported values: "#),
        "{err}"
    );
    let wrong_type =
        sb.kubectl(&["patch", "nodepool", "spot-pool", "--type", "merge", "-p", r#"{"spec":{"weight":"heavy"}}"#]);
    assert!(
        text(&wrong_type.stderr).contains(
            "spec.weight: Invalid value: \"string\": spec.weight in body must be of type integer: \"string\""
        ),
        "{}",
        text(&wrong_type.stderr)
    );
}

#[test]
fn kubectl_server_side_apply_conflicts_force_and_dry_run() {
    let sb = Sandbox::start("kubectl-apply", &[]);
    let file = write(
        &sb.dir,
        "spot.yaml",
        "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata:\n  name: spot-pool\nspec:\n  template:\n    spec:\n      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}\n      requirements:\n      - {key: kubernetes.io/arch, operator: In, values: [amd64, arm64]}\n",
    );
    let f = file.to_str().unwrap();
    let conflict = sb.kubectl(&["apply", "--server-side", "-f", f]);
    assert!(!conflict.status.success());
    let err = text(&conflict.stderr);
    assert!(
        err.contains("Apply failed with 1 conflict: conflict with \"archshift-sandbox-seed\" using karpenter.sh/v1"),
        "{err}"
    );
    assert!(err.contains(".spec.template.spec.requirements"), "{err}");

    assert!(ok(&sb.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", f])).contains("serverside-applied"));
    let obj: serde_json::Value = serde_json::from_str(&ok(&sb.kubectl(&[
        "get",
        "nodepool",
        "spot-pool",
        "-o",
        "json",
        "--show-managed-fields",
    ])))
    .unwrap();
    assert_eq!(obj["spec"]["template"]["spec"]["requirements"][0]["values"], serde_json::json!(["amd64", "arm64"]));
    let managers: Vec<&str> =
        obj["metadata"]["managedFields"].as_array().unwrap().iter().filter_map(|m| m["manager"].as_str()).collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");

    let new = write(
        &sb.dir,
        "arm.yaml",
        "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata:\n  name: arm-pool\nspec:\n  template:\n    spec:\n      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}\n      requirements:\n      - {key: kubernetes.io/arch, operator: In, values: [arm64]}\n",
    );
    let n = new.to_str().unwrap();
    assert!(ok(&sb.kubectl(&["apply", "--server-side", "--dry-run=server", "-f", n])).contains("(server dry run)"));
    let missing = sb.kubectl(&["get", "nodepool", "arm-pool"]);
    assert!(text(&missing.stderr).contains(r#"nodepools.karpenter.sh "arm-pool" not found"#), "dry run left a trace");
    ok(&sb.kubectl(&["apply", "--server-side", "-f", n]));
    assert!(ok(&sb.kubectl(&["get", "nodepools"])).contains("arm-pool"));
}

#[test]
fn argo_examples_apply_as_on_a_cluster_with_argo() {
    let sb = Sandbox::start("kubectl-argo", &[]);
    let reference =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/argo-workflows/examples");
    let templates = reference.join("workflow-template_templates.yaml");
    if !templates.exists() {
        // The reference folder sits beside the repository in every checkout this project
        // has; without it, use a template of the same shape.
        write(
            &sb.dir,
            "t.yaml",
            "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {name: workflow-template-print-message}\nspec:\n  entrypoint: m\n  templates: [{name: m, container: {image: alpine}}]\n",
        );
    }
    let file = if templates.exists() { templates } else { sb.dir.join("t.yaml") };
    ok(&sb.kubectl(&["apply", "--server-side", "-n", "ci", "-f", file.to_str().unwrap()]));
    assert!(ok(&sb.kubectl(&["get", "wftmpl", "-n", "ci"])).contains("workflow-template-print-message"));
    let wf = write(
        &sb.dir,
        "wf.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {generateName: hello-}\nspec:\n  entrypoint: m\n  nodeSelector: {kubernetes.io/arch: amd64}\n  templates: [{name: m, container: {image: alpine}}]\n",
    );
    let created = ok(&sb.kubectl(&["create", "-n", "ci", "-f", wf.to_str().unwrap()]));
    assert!(created.starts_with("workflow.argoproj.io/hello-"), "{created}");
    assert_eq!(ok(&sb.kubectl(&["get", "wf", "-n", "ci", "--no-headers"])).lines().count(), 1);
}

#[test]
fn kubectl_works_with_secrets_and_namespaces() {
    let sb = Sandbox::start("kubectl-core", &[]);
    ok(&sb.kubectl(&["create", "secret", "generic", "tok", "-n", "gitlab-runner", "--from-literal=runner-token=abc"]));
    let s: serde_json::Value =
        serde_json::from_str(&ok(&sb.kubectl(&["get", "secret", "tok", "-n", "gitlab-runner", "-o", "json"]))).unwrap();
    assert_eq!(s["data"]["runner-token"], "YWJj");
    let missing_ns = sb.kubectl(&["create", "secret", "generic", "x", "-n", "nope", "--from-literal=a=b"]);
    assert!(text(&missing_ns.stderr).contains(r#"namespaces "nope" not found"#), "{}", text(&missing_ns.stderr));
    assert!(ok(&sb.kubectl(&["get", "ns"])).contains("gitlab-runner"));
    ok(&sb.kubectl(&["create", "configmap", "cfg", "-n", "ci", "--from-literal=concurrent=10"]));
    assert!(ok(&sb.kubectl(&["get", "cm", "cfg", "-n", "ci", "-o", "jsonpath={.data.concurrent}"])) == "10");
    ok(&sb.kubectl(&["delete", "secret", "tok", "-n", "gitlab-runner"]));
    assert!(!sb.kubectl(&["get", "secret", "tok", "-n", "gitlab-runner"]).status.success());
}
