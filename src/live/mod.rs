//! Adapters to the live systems. They fill the core's plain types (`model`) from a real
//! GitLab and a real Kubernetes API server, and are the only code that talks to them.
//!
//! Read-only by construction: a reader type has no method that writes, so an audit that only
//! holds readers cannot change anything, whatever its flags say.

pub mod gitlab;
pub mod kube;
pub mod observe;
pub mod secret;

/// The innermost cause of a transport error ("Connection refused (os error 111)", "invalid
/// peer certificate: UnknownIssuer"), which is what a person can act on; the outer layers only
/// say which library noticed it.
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    // Every message on the way is scrubbed: an exec plugin's failure may sit at any level.
    let mut exec_failed = without_exec_details(&cause.to_string());
    while let Some(next) = cause.source() {
        cause = next;
        if exec_failed.is_none() {
            exec_failed = without_exec_details(&cause.to_string());
        }
    }
    exec_failed.unwrap_or_else(|| cause.to_string())
}

/// kube-rs reports a failed kubeconfig exec plugin (`auth exec command '{cmd}' failed with
/// status {status}: {out:?}`, kube-client `client/auth/mod.rs`) with the command's Debug form,
/// which holds the environment it was given (a `VAULT_TOKEN`, an AWS secret) and its output.
/// Said without them.
fn without_exec_details(message: &str) -> Option<String> {
    let rest = message.split_once("auth exec command '")?.1;
    let status = rest
        .rsplit_once("' failed with status ")
        .map(|(_, s)| s.split(':').next().unwrap_or("").trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    Some(format!(
        "the kubeconfig's exec plugin failed ({status}); its command line, environment and output are not shown, as they may hold credentials: run it by hand to see why"
    ))
}

/// Whether a transport error is a failed TLS verification: trying again cannot help.
pub(crate) fn tls_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    // `io::Error::source` skips the error it wraps, and hyper wraps rustls's in two of them.
    fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
        if let Some(rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>() {
            return true;
        }
        let inner = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        inner.is_some_and(|i| refused(i)) || e.source().is_some_and(refused)
    }
    refused(e)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_exec_plugin_failure_is_reported_without_its_environment_or_output() {
        let kube = "auth exec command 'VAULT_TOKEN=\"s.hunter2\" \"vault-login\" \"--role\" \"ci\"' failed with status exit status: 1: Output { stdout: \"token=abc\" }";
        let said = super::without_exec_details(kube).unwrap();
        assert!(said.contains("exit status") && said.contains("exec plugin failed"), "{said}");
        assert!(!said.contains("hunter2") && !said.contains("token=abc") && !said.contains("vault-login"), "{said}");
        assert_eq!(super::without_exec_details("connection refused"), None);
    }
}
