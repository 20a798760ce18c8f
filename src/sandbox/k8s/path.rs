//! One parser for resource URLs, used by routing, watches and the conflict fault:
//! `/api/v1/[namespaces/NS/]PLURAL[/NAME[/SUB]]` and the same under `/apis/GROUP/VERSION`.
//! `/api/v1/namespaces/NAME` is the namespace itself, and `status`/`finalize` after it its
//! subresources (no core resource has those plurals).

use super::exchange_decode;

/// A parsed resource URL, its segments decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl ResourcePath {
    /// `None` when `path` is not a resource URL (discovery, OpenAPI, something unknown).
    pub fn parse(path: &str) -> Option<ResourcePath> {
        let seg: Vec<String> =
            path.trim_matches('/').split('/').filter(|s| !s.is_empty()).map(exchange_decode).collect();
        let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
        let (group, version, rest) = match seg.as_slice() {
            ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
            ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
            _ => return None,
        };
        let own = |s: &str| Some(s.to_string());
        let (namespace, plural, name, subresource) = match rest {
            ["namespaces", n] if group.is_empty() => (None, "namespaces", own(n), None),
            ["namespaces", n, sub @ ("status" | "finalize")] if group.is_empty() => {
                (None, "namespaces", own(n), own(sub))
            }
            ["namespaces", ns, plural] => (own(ns), *plural, None, None),
            ["namespaces", ns, plural, name] => (own(ns), *plural, own(name), None),
            ["namespaces", ns, plural, name, sub] => (own(ns), *plural, own(name), own(sub)),
            [plural] => (None, *plural, None, None),
            [plural, name] => (None, *plural, own(name), None),
            [plural, name, sub] => (None, *plural, own(name), own(sub)),
            _ => return None,
        };
        Some(ResourcePath {
            group: group.into(),
            version: version.into(),
            namespace,
            plural: plural.into(),
            name,
            subresource,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `namespace|plural|name|subresource`, `-` for what is absent.
    fn p(path: &str) -> Option<String> {
        let o = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".into());
        ResourcePath::parse(path)
            .map(|r| format!("{}|{}|{}|{}", o(&r.namespace), r.plural, o(&r.name), o(&r.subresource)))
    }

    #[test]
    fn resource_urls_parse_once_for_every_user() {
        let s = |x: &str| Some(x.to_string());
        assert_eq!(p("/apis/karpenter.sh/v1/nodepools/spot-pool/status"), s("-|nodepools|spot-pool|status"));
        assert_eq!(p("/api/v1/namespaces/gitlab-runner/secrets"), s("gitlab-runner|secrets|-|-"));
        assert_eq!(p("/api/v1/namespaces/gitlab-runner"), s("-|namespaces|gitlab-runner|-"));
        assert_eq!(p("/api/v1/namespaces/x/finalize"), s("-|namespaces|x|finalize"));
        assert_eq!(p("/api/v1/namespaces/ns/configmaps/a%3Ab"), s("ns|configmaps|a:b|-"));
        assert_eq!(p("/apis/karpenter.sh/v1"), None, "discovery, not a resource");
        assert_eq!(p("/version"), None);
    }
}
