//! The profiles directory: where a project's runbooks, targets, store, runs and audit live.

use std::path::{Path, PathBuf};

/// Finds the profiles directory: `MCP_PROFILES_DIR`; else `.infra` in the working directory or a parent up
/// to the git root; else `$XDG_STATE_HOME/infra` (or `$HOME/.local/state/infra`); else `./.infra`.
///
/// `env` reads one environment variable (the caller decides where the environment comes from).
pub fn profiles_dir(env: &dyn Fn(&str) -> Option<String>, cwd: &Path) -> PathBuf {
    if let Some(p) = env("MCP_PROFILES_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let mut dir = Some(cwd);
    while let Some(d) = dir {
        let candidate = d.join(".infra");
        if candidate.is_dir() {
            return candidate;
        }
        if d.join(".git").exists() {
            break;
        }
        dir = d.parent();
    }
    if let Some(state) = env("XDG_STATE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(state).join("infra");
    }
    if let Some(home) = env("HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(home).join(".local/state/infra");
    }
    cwd.join(".infra")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_dir_wins_then_project_then_state() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("repo/.git")).expect("git");
        std::fs::create_dir_all(root.join("repo/.infra")).expect("infra");
        std::fs::create_dir_all(root.join("repo/a/b")).expect("sub");
        let none = |_: &str| None;
        assert_eq!(
            profiles_dir(&none, &root.join("repo/a/b")),
            root.join("repo/.infra")
        );
        let explicit = |k: &str| (k == "MCP_PROFILES_DIR").then(|| "/x/y".to_owned());
        assert_eq!(
            profiles_dir(&explicit, &root.join("repo/a/b")),
            PathBuf::from("/x/y")
        );
        std::fs::create_dir_all(root.join("other/.git")).expect("git2");
        let state = |k: &str| (k == "XDG_STATE_HOME").then(|| "/s".to_owned());
        assert_eq!(
            profiles_dir(&state, &root.join("other")),
            PathBuf::from("/s/infra")
        );
    }
}
