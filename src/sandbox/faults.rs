//! Injected faults: `SERVER:KIND[:OPTS]`, e.g. `gitlab:429:rate=0.2`, `k8s:503:rate=0.1`,
//! `k8s:conflict:count=1,path=/apis/karpenter.sh/*`, `gitlab:slow:ms=800`, `k8s:drop:count=2`,
//! `k8s:late:ms=5000,method=PATCH` (carried out, answered late: the client cannot tell).

use std::fmt;
use std::str::FromStr;

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    K8s,
    GitLab,
}

impl Server {
    /// Position in per-server counters.
    pub fn index(self) -> usize {
        match self {
            Server::K8s => 0,
            Server::GitLab => 1,
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Server::K8s => "k8s",
            Server::GitLab => "gitlab",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Reply with this status (429 carries `Retry-After`).
    Status(u16),
    /// Close the connection without answering.
    Drop,
    /// Reply after this many milliseconds.
    Slow(u64),
    /// Carry the request out at once, then hold its answer this many milliseconds: a write
    /// that happened while its client timed out, or died, waiting.
    Late(u64),
    /// A concurrent writer changes the object first.
    Conflict,
    /// Not a request fault: deletions of matching objects never finish (a finalizer that
    /// is never removed, as when provider-helm cannot uninstall).
    Stuck,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub server: Server,
    pub kind: Kind,
    pub rate: f64,
    pub count: Option<u64>,
    /// Matching requests let through before the fault starts (a dry run before its write).
    pub skip: u64,
    pub path: Option<Regex>,
    pub method: Option<String>,
    /// Matching requests seen so far.
    pub seen: u64,
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let mut parts = spec.splitn(3, ':');
        let server = match parts.next() {
            Some("k8s") => Server::K8s,
            Some("gitlab") => Server::GitLab,
            other => {
                return Err(format!("fault {spec:?}: server must be k8s or gitlab, not {:?}", other.unwrap_or("")));
            }
        };
        let kind_text = parts
            .next()
            .ok_or_else(|| format!("fault {spec:?}: missing KIND (429, 5xx, drop, slow, late, conflict, stuck)"))?;
        let mut fault =
            Fault { server, kind: Kind::Drop, rate: 1.0, count: None, skip: 0, path: None, method: None, seen: 0 };
        let mut slow_ms = None;
        for opt in parts.next().unwrap_or("").split(',').filter(|o| !o.is_empty()) {
            let (k, v) =
                opt.split_once('=').ok_or_else(|| format!("fault {spec:?}: option {opt:?} is not KEY=VALUE"))?;
            match k {
                "rate" => {
                    fault.rate = v
                        .parse()
                        .ok()
                        .filter(|r: &f64| (0.0..=1.0).contains(r))
                        .ok_or_else(|| format!("fault {spec:?}: rate must be 0..1"))?
                }
                "count" => {
                    fault.count = Some(v.parse().map_err(|_| format!("fault {spec:?}: count must be a whole number"))?)
                }
                "skip" => fault.skip = v.parse().map_err(|_| format!("fault {spec:?}: skip must be a whole number"))?,
                "path" => fault.path = Some(glob(v)?),
                "method" => fault.method = Some(v.to_ascii_uppercase()),
                "ms" => slow_ms = Some(v.parse().map_err(|_| format!("fault {spec:?}: ms must be a whole number"))?),
                other => {
                    return Err(format!(
                        "fault {spec:?}: unknown option {other:?} (rate, count, skip, path, method, ms)"
                    ));
                }
            }
        }
        fault.kind = match kind_text {
            "drop" => Kind::Drop,
            "conflict" => Kind::Conflict,
            "stuck" => Kind::Stuck,
            "slow" => Kind::Slow(slow_ms.unwrap_or(1000)),
            "late" => Kind::Late(slow_ms.unwrap_or(1000)),
            code => match code.parse::<u16>() {
                Ok(c) if c == 429 || (500..600).contains(&c) => Kind::Status(c),
                _ => {
                    return Err(format!(
                        "fault {spec:?}: KIND must be 429, a 5xx code, drop, slow, late, conflict or stuck"
                    ));
                }
            },
        };
        Ok(fault)
    }
}

fn glob(pattern: &str) -> Result<Regex, String> {
    let re = format!("^{}$", regex::escape(pattern).replace(r"\*", ".*").replace(r"\?", "."));
    Regex::new(&re).map_err(|e| format!("path glob {pattern:?}: {e}"))
}

impl Fault {
    /// Whether deletion of the object at this API path is kept from finishing.
    pub fn keeps_stuck(&self, path: &str) -> bool {
        self.kind == Kind::Stuck && self.server == Server::K8s && self.path.as_ref().is_none_or(|p| p.is_match(path))
    }

    /// Whether this request gets the fault; counts it when it matches.
    pub fn strikes(&mut self, server: Server, method: &str, path: &str) -> bool {
        if self.kind == Kind::Stuck
            || server != self.server
            || self.method.as_deref().is_some_and(|m| m != method)
            || self.path.as_ref().is_some_and(|p| !p.is_match(path))
        {
            return false;
        }
        self.seen += 1;
        if self.seen <= self.skip || self.count.is_some_and(|c| self.seen > self.skip + c) {
            return false;
        }
        self.rate >= 1.0 || fastrand::f64() < self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_lets_the_first_matches_through_and_count_bounds_the_rest() {
        let mut f: Fault = "k8s:late:ms=50,skip=1,count=1,method=PATCH,path=/apis/karpenter.sh/*".parse().unwrap();
        assert_eq!(f.kind, Kind::Late(50));
        let patch = |f: &mut Fault| f.strikes(Server::K8s, "PATCH", "/apis/karpenter.sh/v1/nodepools/spot-pool");
        assert!(!f.strikes(Server::K8s, "GET", "/apis/karpenter.sh/v1/nodepools/spot-pool"), "another method");
        assert!(!patch(&mut f), "the first (a dry run) goes through");
        assert!(patch(&mut f), "the second is struck");
        assert!(!patch(&mut f), "count 1: only once");
        assert!(!f.strikes(Server::GitLab, "PATCH", "/apis/karpenter.sh/v1/nodepools/spot-pool"), "another server");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |s: &str| s.parse::<Fault>().err().unwrap();
        assert!(err("k8s:late:skip=x").contains("skip must be a whole number"));
        assert!(err("k8s:teapot").contains("KIND must be"));
        assert!(err("nfs:drop").contains("server must be k8s or gitlab"));
        assert!(err("k8s:drop:often=1").contains("unknown option"));
    }
}
