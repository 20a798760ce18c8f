"""Migrates the sandbox by hand, the way an operator would without archshift.

Reads the plan archshift printed (`archshift plan --format json`) only for the object bodies
an operator would copy from the diff, and makes every write with kubectl and python-gitlab.
Usage: migrate.py KUBECONFIG PLAN_JSON PHASE... (phases: nodepool runners pipeline workloads)
"""
import json
import os
import subprocess
import sys

import gitlab

kubeconfig, plan_path, phases = sys.argv[1], sys.argv[2], set(sys.argv[3:])
plan = json.load(open(plan_path))
changes = {c["id"]: c for p in plan["phases"] for c in p["changes"]}
gl = gitlab.Gitlab(os.environ["GITLAB_URL"], private_token=os.environ["GITLAB_TOKEN"])
gl.auth()


def kubectl(*args, stdin=None):
    out = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, *args],
        input=stdin, capture_output=True, text=True,
    )
    if out.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def after(change_id):
    return changes[change_id]["after"]["value"]


def kube_patch(change_id, kind):
    """The JSON patch the plan shows, sent with kubectl like a person pasting it."""
    change = changes[change_id]
    name = change["target"]["name"]
    ns = change["target"].get("namespace")
    ops = [op for op in change["method"]["patch"]]
    args = ["patch", kind, name, "--type", "json", "-p", json.dumps(ops)]
    if ns:
        args += ["-n", ns]
    kubectl(*args)


if "runners" in phases:
    kube_patch("release/gitlab-runner", "releases.helm.crossplane.io")
    for arch in ["amd64", "arm64"]:
        runner = after(f"runner/sandbox-{arch}")
        created = gl.user.runners.create(
            {
                "runner_type": runner["runner_type"],
                "group_id": runner["group_id"],
                "description": runner["description"],
                "tag_list": ",".join(runner["tag_list"]),
                "run_untagged": runner["run_untagged"],
                "locked": runner["locked"],
            }
        )
        kubectl(
            "create", "secret", "generic", f"gitlab-runner-{arch}-token", "-n", "gitlab-runner",
            f"--from-literal=runner-token={created.token}", "--from-literal=runner-registration-token=",
        )
        kubectl("create", "-f", "-", stdin=json.dumps(after(f"release/gitlab-runner-{arch}")))

if "pipeline" in phases:
    project = gl.projects.get("platform/kaniko-builder")
    for arch in ["AMD64", "ARM64"]:
        var = after(f"variable/platform/kaniko-builder/CICD_TAG_{arch}")
        project.variables.create({"key": var["key"], "value": var["value"]})
    ci = changes["cifile/platform/kaniko-builder/.gitlab-ci.yml"]
    f = project.files.get(file_path=".gitlab-ci.yml", ref="main")
    f.content = ci["after"]["value"]
    f.save(branch="main", commit_message="ci: tag build jobs per architecture (by hand)")

if "workloads" in phases:
    for cid, c in changes.items():
        if cid.startswith("argo/"):
            kubectl("apply", "--server-side", "--field-manager", "archshift", "-f", "-",
                    stdin=json.dumps(c["method"]["patch"]))
    group = gl.groups.get("platform")
    var = after("group-variable/platform/CICD_TAG_AMD64")
    group.variables.create({"key": var["key"], "value": var["value"]})
    for cid, c in changes.items():
        if cid.startswith("cifile/") and c["phase"] == "workloads":
            project = gl.projects.get(c["target"]["project"])
            f = project.files.get(file_path=c["target"]["path"], ref="main")
            f.content = c["after"]["value"]
            f.save(branch="main", commit_message="ci: pin jobs to amd64 (by hand)")

if "nodepool" in phases:
    kube_patch("nodepool/spot-pool", "nodepools.karpenter.sh")

print("done:", " ".join(sorted(phases)))
