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
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
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
