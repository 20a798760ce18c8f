use super::*;

const MINIMAL: &str = "\
apiVersion: archshift/v1
kind: MigrationPlan
runners:
  tagPrefix: sandbox
  scope:
    type: group
    path: platform
pipeline:
  project: platform/kaniko-builder
";

fn parse(text: &str) -> Result<MigrationPlan, SpecError> {
    MigrationPlan::parse(text, "plan.yaml")
}

#[test]
fn minimal_plan_gets_the_migration_plans_defaults() {
    let plan = parse(MINIMAL).unwrap();
    assert_eq!(plan.node_pool.name, "spot-pool");
    assert_eq!(plan.node_pool.architectures, vec![Arch::Amd64, Arch::Arm64]);
    assert_eq!(plan.runners.chart.version, "0.78.1");
    assert_eq!(plan.runners.chart.repository, "https://charts.gitlab.io/");
    assert_eq!(plan.runners.tag(Arch::Arm64), "sandbox-arm64");
    assert_eq!(plan.runners.release_name(Arch::Amd64), "gitlab-runner-amd64");
    // Placement, namespace and branch default to what the baseline and the project have.
    assert!(plan.runners.manager_node_selector.is_empty() && plan.runners.job_node_selector.is_empty());
    assert_eq!(plan.runners.manager_arch, crate::spec::ManagerArch::Follow);
    assert_eq!((plan.runners.namespace.clone(), plan.pipeline.branch.clone()), (None, None));
    assert!(plan.runners.pin_baseline);
    assert_eq!(plan.rollback.reroute_tag, None);
    assert_eq!(plan.pipeline.variables.reference(Arch::Arm64), "$CICD_TAG_ARM64");
    assert_eq!(plan.target.gitlab.token_env, "GITLAB_TOKEN");
    assert_eq!(plan.target.gitlab.url_env, "GITLAB_URL");
    assert_eq!(plan.runners.registration.style, RegistrationStyle::AuthenticationToken);
    assert_eq!(plan.pipeline.delivery.mode, DeliveryMode::MergeRequest);
    assert_eq!(
        plan.workloads.argo.kinds,
        vec![ArgoKind::WorkflowTemplate, ArgoKind::CronWorkflow, ArgoKind::ClusterWorkflowTemplate]
    );
}

#[test]
fn shipped_plans_are_valid() {
    parse(include_str!("../../plans/sandbox.yaml")).unwrap();
    let example = parse(include_str!("../../plans/example.yaml")).unwrap();
    assert_eq!(example.pipeline.jobs.explicit["build_arm64"], Arch::Arm64);
}

#[test]
fn missing_field_names_it_and_points_at_its_mapping() {
    let text = MINIMAL.replace("  tagPrefix: sandbox\n", "");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.message, "runners: missing field `tagPrefix`");
    assert_eq!((err.line, err.column), (4, 3), "{err}");
    assert_eq!(err.file, "plan.yaml");
}

#[test]
fn unknown_field_is_an_error_with_its_position() {
    let text = MINIMAL.replace("  tagPrefix: sandbox\n", "  tagPrefix: sandbox\n  tagPrefx: oops\n");
    let err = parse(&text).unwrap_err();
    assert!(err.message.contains("unknown field `tagPrefx`"), "{err}");
    assert!(err.message.contains("expected one of"), "{err}");
    assert_eq!((err.line, err.column), (5, 3), "{err}");
    assert!(err.to_string().starts_with("plan.yaml:5:3: "), "{err}");
}

#[test]
fn wrong_type_says_what_was_expected() {
    let text = format!("{MINIMAL}nodePool:\n  architectures: arm64\n");
    let err = parse(&text).unwrap_err();
    assert!(err.message.contains("expected a sequence"), "{err}");
    assert_eq!((err.line, err.column), (11, 18), "{err}");
}

#[test]
fn unknown_architecture_lists_the_known_ones() {
    let text = format!("{MINIMAL}nodePool:\n  architectures: [amd64, s390x]\n");
    let err = parse(&text).unwrap_err();
    assert!(err.message.contains("unknown variant `s390x`, expected `amd64` or `arm64`"), "{err}");
    assert_eq!(err.line, 11, "{err}");
}

#[test]
fn semantic_errors_point_at_the_offending_field() {
    let text = MINIMAL.replace("tagPrefix: sandbox", "tagPrefix: \"bad tag\"");
    let err = parse(&text).unwrap_err();
    assert!(err.message.starts_with("runners.tagPrefix: `bad tag` is not a usable runner tag prefix"), "{err}");
    assert_eq!((err.line, err.column), (4, 3), "{err}");

    let text = MINIMAL.replace("    path: platform\n", "");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.message, "runners.scope: missing field `path` (the group or project path)");
    assert_eq!((err.line, err.column), (5, 3), "{err}");

    let text = MINIMAL.replace("apiVersion: archshift/v1", "apiVersion: archshift/v2");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.message, "apiVersion: expected `archshift/v1`, found `archshift/v2`");
    assert_eq!((err.line, err.column), (1, 1), "{err}");
}

#[test]
fn release_prefix_may_not_overwrite_the_rollback_target() {
    let text =
        MINIMAL.replace("  tagPrefix: sandbox\n", "  tagPrefix: sandbox\n  baselineRelease: gitlab-runner-arm64\n");
    let err = parse(&text).unwrap_err();
    assert!(
        err.message
            .starts_with("runners.baselineRelease: `gitlab-runner-arm64` is also the name of the new arm64 Release"),
        "{err}"
    );
    assert_eq!((err.line, err.column), (5, 3), "{err}");
}

#[test]
fn instance_runners_take_no_path_and_legacy_registration_needs_its_token_variable() {
    let text = MINIMAL.replace("type: group", "type: instance");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.message, "runners.scope.path: an instance runner has no path; remove it");
    assert_eq!(err.line, 7, "{err}");

    let text = MINIMAL
        .replace("  tagPrefix: sandbox\n", "  tagPrefix: sandbox\n  registration:\n    style: registrationToken\n");
    let err = parse(&text).unwrap_err();
    assert!(err.message.contains("registrationTokenEnv"), "{err}");
    assert_eq!((err.line, err.column), (5, 3), "{err}");
}

#[test]
fn variable_keys_are_checked_like_gitlab_does() {
    let text = format!("{MINIMAL}  variables:\n    arm64: CICD-TAG-ARM64\n");
    let err = parse(&text).unwrap_err();
    assert!(
        err.message.starts_with("pipeline.variables.arm64: `CICD-TAG-ARM64` is not a valid CI/CD variable key"),
        "{err}"
    );
    assert_eq!(err.line, 11, "{err}");
}

#[test]
fn a_plan_round_trips_through_serde() {
    let plan = parse(include_str!("../../plans/example.yaml")).unwrap();
    let text = yaml_serde::to_string(&plan).unwrap();
    assert_eq!(parse(&text).unwrap(), plan);
}

#[test]
fn names_that_reach_paths_and_urls_are_checked_as_the_apis_check_them() {
    let sandbox = include_str!("../../plans/sandbox.yaml");
    let cases = [
        ("  name: sandbox\n", "  name: ../../x\n", "metadata.name"),
        ("  project: platform/kaniko-builder\n", "  project: platform/../admin\n", "pipeline.project"),
        ("    namespaces: []\n", "    namespaces: [\"..\"]\n", "workloads.argo.namespaces"),
        ("    group: platform\n    delivery:", "    group: -platform\n    delivery:", "workloads.gitlab.group"),
    ];
    for (from, to, field) in cases {
        assert!(sandbox.contains(from), "{from}");
        let err = parse(&sandbox.replacen(from, to, 1)).unwrap_err();
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
}

#[test]
fn a_hostile_plan_is_refused_before_the_parser_sees_it() {
    let deep =
        format!("apiVersion: archshift/v1\nkind: MigrationPlan\nx: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let err = parse(&deep).unwrap_err();
    assert!(err.to_string().contains("nested deeper than 64 levels"), "{err}");
    let big = "# padding\n".repeat(200_000);
    assert!(parse(&big).unwrap_err().to_string().contains("at most"), "a 2 MB plan is refused");
    let indented: String = (0..200).map(|i| format!("{}a{i}:\n", " ".repeat(i * 2))).collect();
    assert!(parse(&indented).unwrap_err().to_string().contains("nested deeper"));
}
