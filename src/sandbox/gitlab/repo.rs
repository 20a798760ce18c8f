//! A tiny git: commits as full snapshots, branches as pointers, blob and commit ids computed
//! the way git computes them.

use std::collections::{BTreeMap, HashMap};

use sha1::{Digest, Sha1};

#[derive(Debug, Clone)]
pub struct Commit {
    pub id: String,
    pub parent_ids: Vec<String>,
    pub title: String,
    pub message: String,
    pub author_name: String,
    pub author_email: String,
    pub created_at: String,
    pub files: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
pub struct Repo {
    pub branches: BTreeMap<String, String>,
    pub commits: HashMap<String, Commit>,
    pub protected: Vec<String>,
}

pub fn blob_id(content: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    hex(&h.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Repo {
    /// A repository with one commit on `branch`.
    pub fn init(branch: &str, files: BTreeMap<String, Vec<u8>>, now: &str) -> Repo {
        let mut r = Repo { protected: vec![branch.to_string()], ..Default::default() };
        let id = r.commit_id(&[], "Initial commit", &files, now);
        r.commits.insert(
            id.clone(),
            Commit {
                id: id.clone(),
                parent_ids: vec![],
                title: "Initial commit".into(),
                message: "Initial commit".into(),
                author_name: "Administrator".into(),
                author_email: "admin@sandbox.test".into(),
                created_at: now.into(),
                files,
            },
        );
        r.branches.insert(branch.into(), id);
        r
    }

    fn commit_id(&self, parents: &[String], message: &str, files: &BTreeMap<String, Vec<u8>>, now: &str) -> String {
        let mut h = Sha1::new();
        for p in parents {
            h.update(p.as_bytes());
        }
        h.update(message.as_bytes());
        h.update(now.as_bytes());
        h.update(self.commits.len().to_le_bytes());
        for (path, content) in files {
            h.update(path.as_bytes());
            h.update(blob_id(content).as_bytes());
        }
        hex(&h.finalize())
    }

    /// Resolves a branch name or a commit sha (full or short).
    pub fn resolve(&self, reference: &str) -> Option<&Commit> {
        if let Some(id) = self.branches.get(reference) {
            return self.commits.get(id);
        }
        if reference.len() >= 7 {
            return self.commits.values().find(|c| c.id.starts_with(reference));
        }
        None
    }

    /// The last commit reachable from `head` that changed `path` (GitLab's `last_commit_id`).
    pub fn last_commit_for(&self, head: &str, path: &str) -> Option<String> {
        let mut c = self.commits.get(head)?;
        let content = c.files.get(path)?;
        loop {
            let Some(parent) = c.parent_ids.first().and_then(|p| self.commits.get(p)) else {
                return Some(c.id.clone());
            };
            if parent.files.get(path) != Some(content) {
                return Some(c.id.clone());
            }
            c = parent;
        }
    }

    /// Commits a new snapshot onto `branch` (created from `start` when given).
    pub fn commit(
        &mut self,
        branch: &str,
        start: Option<&str>,
        files: BTreeMap<String, Vec<u8>>,
        message: &str,
        author: (&str, &str),
        now: &str,
    ) -> Result<Commit, String> {
        let parent = match (self.branches.get(branch), start) {
            (Some(head), _) => head.clone(),
            (None, Some(s)) => {
                self.resolve(s).map(|c| c.id.clone()).ok_or_else(|| "Invalid start branch".to_string())?
            }
            (None, None) => return Err("You can only create or edit files when you are on a branch".into()),
        };
        let id = self.commit_id(std::slice::from_ref(&parent), message, &files, now);
        let commit = Commit {
            id: id.clone(),
            parent_ids: vec![parent],
            title: message.lines().next().unwrap_or("").to_string(),
            message: message.into(),
            author_name: author.0.into(),
            author_email: author.1.into(),
            created_at: now.into(),
            files,
        };
        self.commits.insert(id.clone(), commit.clone());
        self.branches.insert(branch.into(), id);
        Ok(commit)
    }

    pub fn head(&self, branch: &str) -> Option<&Commit> {
        self.branches.get(branch).and_then(|id| self.commits.get(id))
    }
}
