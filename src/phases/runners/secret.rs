//! The Secret holding a runner's token, which the chart mounts. The token is bound from the
//! GitLab call that returns it, at apply time: it is never in the plan.

use serde_json::json;

use crate::model::{Action, Change, ChangeId, Document, ObjectRef, Output, Phase, Precondition, Reversal, WriteMethod};
use crate::spec::{RegistrationStyle, RunnersSpec};
use crate::vocab::{Arch, FIELD_MANAGER, MANAGED_BY, SECRET};

/// Secret keys the chart projects into the runner pod; both must exist.
pub const TOKEN_KEY: &str = "runner-token";
pub const REGISTRATION_KEY: &str = "runner-registration-token";

/// Creates the Secret, or (after a token reset) replaces its token. `token_from` is the change
/// whose output fills `runner-token`, when there is one.
pub fn secret_change(
    r: &RunnersSpec,
    arch: Arch,
    namespace: &str,
    existing_rv: Option<&str>,
    token_from: Option<ChangeId>,
) -> Change {
    let name = r.token_secret_name(arch);
    let target = ObjectRef::kube(SECRET, Some(namespace), &name);
    let obj = json!({
        "apiVersion": SECRET.api_version,
        "kind": SECRET.kind,
        "metadata": {"name": name, "namespace": namespace, "labels": {MANAGED_BY: FIELD_MANAGER, "archshift.io/arch": arch.as_str()}},
        "type": "Opaque",
        // Filled at apply time: the token by its binding, the legacy registration token from
        // the environment variable the plan names. Empty values keep both keys the chart mounts.
        "stringData": {TOKEN_KEY: "", REGISTRATION_KEY: ""},
    });
    let sensitive = [format!("/stringData/{TOKEN_KEY}"), format!("/stringData/{REGISTRATION_KEY}")];
    let source = match r.registration.style {
        RegistrationStyle::AuthenticationToken => "the runner's authentication token".to_string(),
        RegistrationStyle::RegistrationToken => {
            format!("the registration token from ${}", r.registration.registration_token_env.as_deref().unwrap_or(""))
        }
    };
    let mut change = match existing_rv {
        None => Change::new(
            ChangeId::secret(namespace, &name),
            Phase::Runners,
            target,
            Action::Create,
            format!("create Secret {}/{name} with {source}", namespace),
            WriteMethod::KubeCreate,
        )
        .after(Document::Object(obj)),
        Some(rv) => {
            let patch = json!({
                "apiVersion": SECRET.api_version,
                "kind": SECRET.kind,
                "metadata": {"name": name, "namespace": namespace},
                "stringData": {TOKEN_KEY: ""},
            });
            Change::new(
                ChangeId::secret(namespace, &name),
                Phase::Runners,
                target,
                Action::Update,
                format!("put the new token of the {arch} runner in Secret {}/{name}", namespace),
                WriteMethod::KubeApply { field_manager: FIELD_MANAGER.into(), patch },
            )
            .after(Document::Object(obj))
            .precondition(Precondition::ResourceVersion { resource_version: rv.to_string() })
            .reversal(Reversal::Irreversible {
                reason: "the Secret's old value is never read, and the old token was invalidated by the reset; rollback deletes the runner and this Secret instead".into(),
            })
        }
    }
    .sensitive(sensitive);
    if let Some(from) = token_from {
        let source = format!("token of runner {}, from GitLab at apply time", r.tag(arch));
        change = change.bind(&format!("/stringData/{TOKEN_KEY}"), from, Output::RunnerToken, source);
    }
    change
}
