//! The GitLab adapter: REST API v4 over reqwest, read side.
//!
//! Every request goes through [`Http::send`]: a bounded number in flight (a semaphore), a
//! timeout each, retries with backoff on 429 and 5xx (and on timeouts and refused
//! connections) that honour `Retry-After`, and one clear error for 401, 403 and 404 naming
//! the token's source and the path. Retry crates were considered; none reads `Retry-After`,
//! which is what GitLab's rate limiter sends, so the loop is written here.
//!
//! [`GitLabReader`] is the read-only handle: it has no method that writes. The one POST it
//! sends is CI lint, which GitLab evaluates without storing anything.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::secret::Token;
use crate::model::{CiFile, CiVariable, GitLabRunner};
use crate::spec::{RunnerScope, ScopeKind};

/// How the adapter talks to GitLab.
#[derive(Debug, Clone)]
pub struct Options {
    /// Requests in flight at most (`--concurrency`).
    pub concurrency: usize,
    /// For each request, connection to last byte.
    pub timeout: Duration,
    /// Retries after the first attempt, on 429, 5xx, timeouts and refused connections.
    pub retries: u32,
    /// The first backoff; it doubles each retry (with jitter) unless `Retry-After` says more.
    pub backoff: Duration,
    /// The longest wait `Retry-After` may ask for before the adapter gives up instead.
    pub max_retry_after: Duration,
    /// Accept a certificate that does not verify (`--insecure-skip-tls-verify`).
    pub insecure_skip_tls_verify: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 8,
            timeout: Duration::from_secs(30),
            retries: 4,
            backoff: Duration::from_millis(250),
            max_retry_after: Duration::from_secs(60),
            insecure_skip_tls_verify: false,
        }
    }
}

/// Why a GitLab call failed, said so a person can act on it. Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitLabError {
    #[error(
        "GitLab at {url} rejected the token from {source_name} (401 Unauthorized): it is wrong, expired or revoked; create a token with the api scope and set {source_name}"
    )]
    Unauthorized { url: String, source_name: String },
    #[error(
        "the token from {source_name} may not {method} {path} (403 Forbidden): it needs the api scope and the Maintainer role on that project or group"
    )]
    Forbidden { method: String, path: String, source_name: String },
    #[error("{path} was not found on {url} (404), or the token from {source_name} cannot see it: {message}")]
    NotFound { path: String, url: String, source_name: String, message: String },
    #[error("GitLab kept answering {status} to {method} {path} ({attempts} attempts); try again later")]
    Unavailable { method: String, path: String, status: u16, attempts: u32 },
    #[error("GitLab answered {status} to {method} {path}: {message}")]
    Status { method: String, path: String, status: u16, message: String },
    #[error("cannot reach GitLab at {url}: {cause}")]
    Transport { url: String, cause: String },
    #[error("unexpected answer from GitLab to {path}: {cause}")]
    Decode { path: String, cause: String },
    #[error("{path} is larger than archshift reads ({limit} bytes): {what}")]
    TooLarge { path: String, limit: usize, what: String },
}

/// The most of one answer archshift reads: a page of 100 projects or runners is far below it,
/// and it bounds what a hostile or broken server can make it hold.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The largest CI file archshift reads. GitLab refuses CI configuration whose parsed form is
/// over `max_yaml_size_bytes` (2 MB by default since GitLab 17.3, `ApplicationSetting`;
/// `Gitlab::Config::Loader::Yaml` checks it), so a larger file can hardly be a working one.
pub const MAX_CI_FILE_BYTES: usize = 4 << 20;

/// Path segments as GitLab wants them: `group/project` becomes `group%2Fproject`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

pub(crate) fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// The transport: one client, one token, one limit on requests in flight.
#[derive(Clone)]
struct Http {
    client: Client,
    /// `https://gitlab.example.com`, as given.
    url: String,
    /// `…/api/v4`.
    api: String,
    token: Token,
    limit: Arc<Semaphore>,
    opts: Options,
}

impl Http {
    fn new(url: &str, token: Token, opts: Options) -> Result<Http, GitLabError> {
        let url = url.trim_end_matches('/').to_string();
        let client = Client::builder()
            .timeout(opts.timeout)
            .user_agent(concat!("archshift/", env!("CARGO_PKG_VERSION")))
            .tls_danger_accept_invalid_certs(opts.insecure_skip_tls_verify)
            // The token goes to the configured origin only. reqwest drops `Authorization` on a
            // redirect to another host, but not GitLab's `PRIVATE-TOKEN`: a redirect elsewhere
            // is not followed (its 3xx comes back as an error instead).
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let same_origin =
                    attempt.previous().first().is_some_and(|first| first.origin() == attempt.url().origin());
                if attempt.previous().len() > 5 {
                    attempt.error("more than 5 redirects")
                } else if same_origin {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .build()
            .map_err(|e| GitLabError::Transport { url: url.clone(), cause: e.to_string() })?;
        Ok(Http {
            client,
            api: format!("{url}/api/v4"),
            url,
            token,
            limit: Arc::new(Semaphore::new(opts.concurrency.max(1))),
            opts,
        })
    }

    /// One API call (`path` below `/api/v4`, with its query), retried as [`Options`] says.
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(HeaderMap, Value), GitLabError> {
        let mut attempt = 0u32;
        // An attempt whose outcome is unknown (timed out, or a 5xx): it may have been carried out.
        let mut maybe_done = false;
        loop {
            attempt += 1;
            let outcome = {
                let _permit = self.limit.acquire().await.map_err(|e| self.transport(e))?;
                let mut req = self
                    .client
                    .request(method.clone(), format!("{}{path}", self.api))
                    .header("PRIVATE-TOKEN", self.token.expose());
                if let Some(b) = body {
                    req = req.json(b);
                }
                match req.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        let headers = resp.headers().clone();
                        // A body cut off mid-way is a dropped connection like any other.
                        match read_at_most(resp, MAX_ANSWER_BYTES).await {
                            Ok(Some(bytes)) => Ok((status, headers, bytes)),
                            Ok(None) => {
                                return Err(GitLabError::TooLarge {
                                    path: path_only(path),
                                    limit: MAX_ANSWER_BYTES,
                                    what: "the answer was not read".into(),
                                });
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            };
            let retries_left = attempt <= self.opts.retries;
            // A POST that timed out or got a 5xx may have been carried out: repeating it could
            // create a second runner. Only a 429 (refused before any work) or a connection that
            // never opened is retried; the engine reads back to learn what happened otherwise.
            // A GET changes nothing: any transport failure of one (a connection dropped before
            // or during its answer) is tried again.
            let repeatable = method != Method::POST || path.ends_with("/ci/lint");
            let (status, headers, bytes) = match outcome {
                Ok(x) => x,
                Err(e)
                    if retries_left
                        && !super::tls_refused(&e)
                        && (e.is_connect() || (e.is_timeout() && repeatable) || method == Method::GET) =>
                {
                    maybe_done |= e.is_timeout();
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
                Err(e) if super::tls_refused(&e) => {
                    return Err(self.transport(format!(
                        "{}: its certificate is not one this machine trusts (add its CA to SSL_CERT_FILE)",
                        super::root_cause(&e)
                    )));
                }
                Err(e) => return Err(self.transport(super::root_cause(&e))),
            };
            let json = || -> Value { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
            if status.is_success() {
                let value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes)
                        .map_err(|e| GitLabError::Decode { path: path_only(path), cause: e.to_string() })?
                };
                return Ok((headers, value));
            }
            let transient = status == StatusCode::TOO_MANY_REQUESTS || matches!(status.as_u16(), 500 | 502 | 503 | 504);
            if transient {
                let wait = retry_after(&headers).unwrap_or_else(|| self.backoff(attempt));
                let may_repeat = repeatable || status == StatusCode::TOO_MANY_REQUESTS;
                if retries_left && may_repeat && wait <= self.opts.max_retry_after {
                    maybe_done |= status != StatusCode::TOO_MANY_REQUESTS;
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(GitLabError::Unavailable {
                    method: method.to_string(),
                    path: path_only(path),
                    status: status.as_u16(),
                    attempts: attempt,
                });
            }
            // A DELETE repeated after an attempt that may have been carried out: gone is done.
            if method == Method::DELETE && status == StatusCode::NOT_FOUND && maybe_done {
                return Ok((headers, Value::Null));
            }
            let source_name = self.token.source.clone();
            return Err(match status {
                StatusCode::UNAUTHORIZED => GitLabError::Unauthorized { url: self.url.clone(), source_name },
                StatusCode::FORBIDDEN => {
                    GitLabError::Forbidden { method: method.to_string(), path: path_only(path), source_name }
                }
                StatusCode::NOT_FOUND => GitLabError::NotFound {
                    path: path_only(path),
                    url: self.url.clone(),
                    source_name,
                    message: message_of(&json()),
                },
                _ => GitLabError::Status {
                    method: method.to_string(),
                    path: path_only(path),
                    status: status.as_u16(),
                    message: message_of(&json()),
                },
            });
        }
    }

    fn transport(&self, e: impl std::fmt::Display) -> GitLabError {
        GitLabError::Transport { url: self.url.clone(), cause: e.to_string() }
    }

    /// `backoff * 2^(attempt-1)`, capped at 30 s, with up to 50% jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.opts.backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let base = base.min(Duration::from_secs(30));
        base + base.mul_f64(fastrand::f64() * 0.5)
    }

    async fn get(&self, path: &str) -> Result<Value, GitLabError> {
        self.send(Method::GET, path, None).await.map(|(_, v)| v)
    }

    /// Every page of a list (100 a page), following `X-Next-Page`.
    async fn get_all(&self, path: &str) -> Result<Vec<Value>, GitLabError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let list = |value: Value| match value {
            Value::Array(items) => Ok(items),
            other => Err(GitLabError::Decode {
                path: path_only(path),
                cause: format!("expected a list, got {}", kind_of(&other)),
            }),
        };
        let (headers, value) = self.send(Method::GET, &format!("{path}{sep}per_page=100&page=1"), None).await?;
        let mut out = list(value)?;
        let header =
            |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or("").to_string();
        // GitLab says how many pages there are (up to 10,000 items): fetch the rest at once,
        // within the concurrency limit, in order. Otherwise follow x-next-page.
        if let Ok(total) = header("x-total-pages").parse::<u32>()
            && total > 1
        {
            let mut tasks = tokio::task::JoinSet::new();
            for page in 2..=total {
                let (http, url) = (self.clone(), format!("{path}{sep}per_page=100&page={page}"));
                tasks.spawn(async move { (page, http.send(Method::GET, &url, None).await) });
            }
            let mut pages: Vec<(u32, Vec<Value>)> = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                let (page, result) = joined.map_err(|e| self.transport(e))?;
                pages.push((page, list(result?.1)?));
            }
            pages.sort_by_key(|(p, _)| *p);
            out.extend(pages.into_iter().flat_map(|(_, items)| items));
            return Ok(out);
        }
        let mut next = header("x-next-page");
        while !next.is_empty() {
            let (headers, value) =
                self.send(Method::GET, &format!("{path}{sep}per_page=100&page={next}"), None).await?;
            out.extend(list(value)?);
            next = headers.get("x-next-page").and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or("").to_string();
        }
        Ok(out)
    }
}

/// The body of `resp`, chunk by chunk, `None` as soon as it (or its announced length) is
/// over `limit`: nothing larger is ever held.
async fn read_at_most(mut resp: reqwest::Response, limit: usize) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// `Retry-After` in seconds (GitLab's rate limiter) or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = when.signed_duration_since(chrono::Utc::now()).to_std().unwrap_or_default();
    Some(wait)
}

/// The path without its query, for messages.
fn path_only(path: &str) -> String {
    path.split('?').next().unwrap_or(path).to_string()
}

fn message_of(v: &Value) -> String {
    match (&v["message"], &v["error"]) {
        (Value::String(s), _) | (_, Value::String(s)) => s.clone(),
        (Value::Null, Value::Null) => "no message".into(),
        (m, Value::Null) => m.to_string(),
        (_, e) => e.to_string(),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A project as the planners need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectInfo {
    pub id: u64,
    pub path: String,
    pub default_branch: String,
    /// The project's CI configuration when not `.gitlab-ci.yml` (`None` when unset).
    pub ci_config: Option<CiConfigPath>,
}

/// Where a project's CI configuration lives, from its `ci_config_path` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CiConfigPath {
    /// A file in the project's own repository.
    Local(String),
    /// `file@group/project[:ref]` or a URL: somewhere archshift does not rewrite.
    Elsewhere(String),
}

impl CiConfigPath {
    fn parse(setting: &str) -> Option<CiConfigPath> {
        let s = setting.trim();
        if s.is_empty() {
            None
        } else if s.contains('@') || s.starts_with("http://") || s.starts_with("https://") {
            Some(CiConfigPath::Elsewhere(s.to_string()))
        } else {
            Some(CiConfigPath::Local(s.trim_start_matches("./").to_string()))
        }
    }
}

/// The token's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser {
    pub id: u64,
    pub username: String,
    pub is_admin: bool,
}

/// A group as the planners need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub id: u64,
    pub path: String,
}

/// The read-only GitLab handle: what an audit holds. It cannot write.
#[derive(Clone)]
pub struct GitLabReader {
    http: Http,
}

impl GitLabReader {
    pub fn new(url: &str, token: Token, opts: Options) -> Result<GitLabReader, GitLabError> {
        Ok(GitLabReader { http: Http::new(url, token, opts)? })
    }

    /// The base URL, as given (no trailing slash).
    pub fn url(&self) -> &str {
        &self.http.url
    }

    /// `GET /version`: which GitLab, and that the token works.
    pub async fn version(&self) -> Result<String, GitLabError> {
        let v = self.http.get("/version").await?;
        Ok(v["version"].as_str().unwrap_or_default().to_string())
    }

    /// `GET /user`: who the token is.
    pub async fn current_user(&self) -> Result<CurrentUser, GitLabError> {
        let v = self.http.get("/user").await?;
        Ok(CurrentUser {
            id: v["id"].as_u64().ok_or_else(|| decode("/user", "a user without id"))?,
            username: v["username"].as_str().unwrap_or_default().to_string(),
            is_admin: v["is_admin"].as_bool().unwrap_or(false),
        })
    }

    /// `GET /{groups,projects}/:id/members/all/:user_id`: the user's effective access level
    /// there (inherited memberships included), `None` when not a member.
    pub async fn access_level(&self, project: bool, path: &str, user_id: u64) -> Result<Option<u8>, GitLabError> {
        let kind = if project { "projects" } else { "groups" };
        match self.http.get(&format!("/{kind}/{}/members/all/{user_id}", encode(path))).await {
            Ok(v) => Ok(Some(v["access_level"].as_u64().unwrap_or(0).min(u64::from(u8::MAX)) as u8)),
            // The member is missing, or the group or project is invisible to the token.
            Err(GitLabError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn project(&self, path: &str) -> Result<ProjectInfo, GitLabError> {
        let v = self.http.get(&format!("/projects/{}", encode(path))).await?;
        project_info(&v).ok_or_else(|| decode(path, "a project without id or path"))
    }

    pub async fn group(&self, path: &str) -> Result<GroupInfo, GitLabError> {
        let v = self.http.get(&format!("/groups/{}", encode(path))).await?;
        Ok(GroupInfo {
            id: v["id"].as_u64().ok_or_else(|| decode(path, "a group without id"))?,
            path: v["full_path"].as_str().unwrap_or(path).to_string(),
        })
    }

    /// The runners of the plan's scope, each with its detail (tags, `run_untagged`, paused,
    /// locked) and its managers' architectures; detail calls run concurrently, within the limit.
    pub async fn runners(&self, scope: &RunnerScope) -> Result<Vec<GitLabRunner>, GitLabError> {
        let list_path = match (scope.kind, scope.path.as_deref()) {
            (ScopeKind::Instance, _) => "/runners/all?type=instance_type".to_string(),
            (ScopeKind::Group, Some(p)) => format!("/groups/{}/runners?type=group_type", encode(p)),
            (ScopeKind::Project, Some(p)) => format!("/projects/{}/runners?type=project_type", encode(p)),
            (_, None) => return Err(decode("runners.scope", "a group or project scope without a path")),
        };
        let items = self.http.get_all(&list_path).await?;
        let mut tasks = tokio::task::JoinSet::new();
        for (i, item) in items.iter().enumerate() {
            let Some(id) = item["id"].as_u64() else { continue };
            let http = self.http.clone();
            tasks.spawn(async move {
                let detail = http.get(&format!("/runners/{id}")).await?;
                let managers = http.get_all(&format!("/runners/{id}/managers")).await?;
                Ok::<_, GitLabError>((i, runner_of(&detail, &managers)))
            });
        }
        let mut out = Vec::with_capacity(items.len());
        while let Some(joined) = tasks.join_next().await {
            let (i, runner) = joined.map_err(|e| self.http.transport(e))??;
            out.push((i, runner.ok_or_else(|| decode("/runners/:id", "a runner without id"))?));
        }
        out.sort_by_key(|(i, _)| *i);
        Ok(out.into_iter().map(|(_, r)| r).collect())
    }

    /// A project's CI/CD variables; masked and hidden values are dropped here.
    pub async fn project_variables(&self, project: &str) -> Result<Vec<CiVariable>, GitLabError> {
        let items = self.http.get_all(&format!("/projects/{}/variables", encode(project))).await?;
        Ok(items.iter().filter_map(CiVariable::from_json).collect())
    }

    /// A group's CI/CD variables; masked and hidden values are dropped here.
    pub async fn group_variables(&self, group: &str) -> Result<Vec<CiVariable>, GitLabError> {
        let items = self.http.get_all(&format!("/groups/{}/variables", encode(group))).await?;
        Ok(items.iter().filter_map(CiVariable::from_json).collect())
    }

    /// A file at a branch with its blob and last commit ids; `None` when the project has no
    /// such file (a missing project or branch is an error).
    pub async fn ci_file(&self, project: &str, path: &str, branch: &str) -> Result<Option<CiFile>, GitLabError> {
        let api = format!(
            "/projects/{}/repository/files/{}?ref={}",
            encode(project),
            encode(path),
            utf8_percent_encode(branch, SEGMENT)
        );
        let v = match self.http.get(&api).await {
            Ok(v) => v,
            Err(GitLabError::NotFound { message, .. }) if message.contains("File Not Found") => return Ok(None),
            Err(e) => return Err(e),
        };
        let raw = v["content"].as_str().unwrap_or_default();
        let size = v["size"].as_u64().map_or(raw.len() / 4 * 3, |n| usize::try_from(n).unwrap_or(usize::MAX));
        if size > MAX_CI_FILE_BYTES {
            return Err(GitLabError::TooLarge {
                path: format!("{project}:{path}"),
                limit: MAX_CI_FILE_BYTES,
                what: format!(
                    "it is {size} bytes, more than GitLab takes as CI configuration by default; check its jobs by hand"
                ),
            });
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw.replace(['\n', '\r'], ""))
            .map_err(|e| decode(&api, &format!("file content is not base64: {e}")))?;
        let content = String::from_utf8(bytes).map_err(|_| decode(&api, "the file is not UTF-8 text"))?;
        Ok(Some(CiFile {
            project: project.to_string(),
            path: path.to_string(),
            branch: branch.to_string(),
            content,
            blob_id: v["blob_id"].as_str().unwrap_or_default().to_string(),
            last_commit_id: v["last_commit_id"].as_str().unwrap_or_default().to_string(),
        }))
    }

    /// The group's projects, its subgroups' included, archived ones left out.
    pub async fn group_projects(&self, group: &str) -> Result<Vec<ProjectInfo>, GitLabError> {
        let items = self
            .http
            .get_all(&format!(
                "/groups/{}/projects?include_subgroups=true&archived=false&order_by=id&sort=asc",
                encode(group)
            ))
            .await?;
        Ok(items.iter().filter_map(project_info).collect())
    }

    /// `POST /projects/:id/ci/lint` with `dry_run` (tags expanded with the project's
    /// variables, as a pipeline would see them). Nothing is stored.
    pub async fn ci_lint(&self, project: &str, content: &str) -> Result<Value, GitLabError> {
        let body = serde_json::json!({"content": content, "dry_run": true, "include_jobs": true});
        self.http
            .send(Method::POST, &format!("/projects/{}/ci/lint", encode(project)), Some(&body))
            .await
            .map(|(_, v)| v)
    }
}

fn decode(path: &str, cause: &str) -> GitLabError {
    GitLabError::Decode { path: path_only(path), cause: cause.to_string() }
}

fn project_info(v: &Value) -> Option<ProjectInfo> {
    Some(ProjectInfo {
        id: v["id"].as_u64()?,
        path: v["path_with_namespace"].as_str()?.to_string(),
        default_branch: v["default_branch"].as_str().unwrap_or("main").to_string(),
        ci_config: v["ci_config_path"].as_str().and_then(CiConfigPath::parse),
    })
}

/// A runner from `GET /runners/:id` and `GET /runners/:id/managers`.
fn runner_of(detail: &Value, managers: &[Value]) -> Option<GitLabRunner> {
    let mut archs: Vec<String> = managers
        .iter()
        .filter_map(|m| m["architecture"].as_str())
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    archs.sort();
    archs.dedup();
    Some(GitLabRunner {
        id: detail["id"].as_u64()?,
        description: detail["description"].as_str().unwrap_or_default().to_string(),
        runner_type: detail["runner_type"].as_str().unwrap_or_default().to_string(),
        status: detail["status"].as_str().unwrap_or_default().to_string(),
        paused: detail["paused"].as_bool().unwrap_or(!detail["active"].as_bool().unwrap_or(true)),
        tag_list: detail["tag_list"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default(),
        run_untagged: detail["run_untagged"].as_bool().unwrap_or(false),
        locked: detail["locked"].as_bool().unwrap_or(false),
        manager_architectures: archs,
        access_level: detail["access_level"].as_str().map(str::to_string),
        maximum_timeout: detail["maximum_timeout"].as_u64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_as_gitlab_wants() {
        assert_eq!(encode("platform/kaniko-builder"), "platform%2Fkaniko-builder");
        assert_eq!(encode(".gitlab-ci.yml"), ".gitlab-ci.yml");
        assert_eq!(encode("ci/a b.yml"), "ci%2Fa%20b.yml");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past means now");
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn messages_come_from_message_or_error() {
        assert_eq!(message_of(&serde_json::json!({"message": "404 Project Not Found"})), "404 Project Not Found");
        assert_eq!(message_of(&serde_json::json!({"error": "group_id is invalid"})), "group_id is invalid");
        assert_eq!(message_of(&serde_json::json!({"message": {"key": ["taken"]}})), "{\"key\":[\"taken\"]}");
    }

    #[test]
    fn a_runner_carries_its_managers_architectures_once_each() {
        let detail = serde_json::json!({"id": 3, "description": "d", "runner_type": "group_type", "status": "online",
            "paused": false, "tag_list": ["a"], "run_untagged": false, "locked": true, "access_level": "not_protected"});
        let managers = [serde_json::json!({"architecture": "arm64"}), serde_json::json!({"architecture": "arm64"})];
        let r = runner_of(&detail, &managers).unwrap();
        assert_eq!(
            (r.id, r.manager_architectures.clone(), r.tag_list.clone()),
            (3, vec!["arm64".into()], vec!["a".into()])
        );
        assert!(r.is_online() && r.locked && !r.run_untagged);
    }
}

/// The GitLab handle that may write: what `apply` and `rollback` hold, never `audit`.
#[derive(Clone)]
pub struct GitLabWriter {
    reader: GitLabReader,
}

impl GitLabWriter {
    pub fn new(url: &str, token: Token, opts: Options) -> Result<GitLabWriter, GitLabError> {
        Ok(GitLabWriter { reader: GitLabReader::new(url, token, opts)? })
    }

    /// The read side of the same connection.
    pub fn reader(&self) -> &GitLabReader {
        &self.reader
    }

    /// `GET path`, `None` on 404.
    pub async fn get(&self, path: &str) -> Result<Option<Value>, GitLabError> {
        match self.reader.http.get(path).await {
            Ok(v) => Ok(Some(v)),
            Err(GitLabError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every page of `GET path`.
    pub async fn get_all(&self, path: &str) -> Result<Vec<Value>, GitLabError> {
        self.reader.http.get_all(path).await
    }

    /// One write (`POST`, `PUT` or `DELETE`) with a JSON body. A POST is never repeated after
    /// a timeout or a 5xx: it may have been carried out.
    pub async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, GitLabError> {
        let method = Method::from_bytes(method.as_bytes()).map_err(|e| decode(path, &e.to_string()))?;
        self.reader.http.send(method, path, body).await.map(|(_, v)| v)
    }
}
