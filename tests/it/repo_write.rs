//! `repo` writes on real repositories: a work tree inside the project (made with the `git` CLI), bare
//! remotes over `file://` and over ssh through the test sshd (its throwaway key and known_hosts); the
//! remote is read back after each push. Patches that apply, conflict or escape the root; commits,
//! reverts, branches, `assert_clean`; forced pushes through policy; every call in the audit log.

use std::path::{Path, PathBuf};
use std::process::Command;

use engine::run::{CancelToken, Engine, RunOptions};
use serde_json::{Value, json};

use crate::project::Project;
use crate::support::sshd::Sshd;

/// `git` with a fixed identity and no user or system configuration.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Tester",
            "-c",
            "user.email=tester@example.com",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A project whose `work/` is a repository on `main` with `a.txt` (three lines) committed, its
/// identity in its own config.
fn project() -> (Project, PathBuf) {
    let p = Project::new();
    let work = p.path().join("work");
    std::fs::create_dir(&work).expect("work dir");
    git(&work, &["init", "-q"]);
    git(&work, &["config", "user.name", "Repo Config"]);
    git(&work, &["config", "user.email", "config@example.com"]);
    std::fs::write(work.join("a.txt"), "one\ntwo\nthree\n").expect("a.txt");
    git(&work, &["add", "a.txt"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    (p, work)
}

/// A bare repository outside the project.
fn bare() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tmp");
    let path = d.path().join("remote.git");
    git(d.path(), &["init", "-q", "--bare", "remote.git"]);
    (d, path)
}

/// Runs one `repo` call; its result, or the error's kind and message.
fn call(e: &Engine, args: Value) -> Result<Value, (String, String)> {
    let plan = engine::compile_call("repo", &args, &engine::CompileOptions::default())
        .unwrap_or_else(|d| panic!("{args}: {d:?}"));
    let o = e.execute(
        &plan,
        serde_json::Map::new(),
        &RunOptions {
            cancel: CancelToken::new(),
            depth: 0,
            progress: None,
            followed: false,
        },
    );
    match &o.error {
        None => Ok(o.steps[0].result.clone().unwrap_or(Value::Null)),
        Some(err) => Err((err.kind.clone(), err.message.clone())),
    }
}

fn ok(e: &Engine, args: Value) -> Value {
    call(e, args.clone()).unwrap_or_else(|err| panic!("{args}: {err:?}"))
}

fn err(e: &Engine, args: Value) -> (String, String) {
    call(e, args.clone()).expect_err(&format!("{args} should fail"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn audit(p: &Project) -> Vec<Value> {
    read(&p.path().join("audit.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line"))
        .collect()
}

/// The audit records of calls of `repo.<action>` (the ones that name the action).
fn audited(p: &Project, action: &str) -> Vec<Value> {
    audit(p)
        .into_iter()
        .filter(|r| r["tool"] == "repo" && r["action"] == action)
        .collect()
}

const PATCH: &str = "diff --git a/a.txt b/a.txt
--- a/a.txt
+++ b/a.txt
@@ -1,3 +1,3 @@
 one
-two
+TWO
 three
diff --git a/new.txt b/new.txt
new file mode 100644
--- /dev/null
+++ b/new.txt
@@ -0,0 +1,2 @@
+fresh
+lines
";

#[test]
fn repo_patch_applies_conflicts_whole_or_escapes_refused() {
    let (p, work) = project();
    let e = p.engine();
    let args = |patch: &str| json!({"action": "apply_patch", "repo_path": "work", "patch": patch});

    // A patch whose second file does not apply changes nothing, and names that file.
    let conflicting = PATCH.replace(
        "diff --git a/new.txt",
        "diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -1,2 +1,2 @@\n nope\n-missing\n+x\ndiff --git a/new.txt",
    );
    let (kind, message) = err(&e, args(&conflicting));
    assert_eq!(kind, "check_failed", "{message}");
    assert!(
        message.contains("a.txt") && message.contains("nothing was changed"),
        "{message}"
    );
    assert_eq!(read(&work.join("a.txt")), "one\ntwo\nthree\n");
    assert!(!work.join("new.txt").exists());
    ok(&e, json!({"action": "assert_clean", "repo_path": "work"}));

    // Patches reaching outside the work tree are refused before anything is written.
    let escapes = [
        (
            "../x",
            "diff --git a/../x b/../x\nnew file mode 100644\n--- /dev/null\n+++ b/../x\n@@ -0,0 +1 @@\n+x\n",
        ),
        (
            ".git/config",
            "diff --git a/.git/config b/.git/config\n--- a/.git/config\n+++ b/.git/config\n@@ -1 +1 @@\n-[core]\n+[evil]\n",
        ),
        (
            "sub/.git/x",
            "diff --git a/sub/.git/x b/sub/.git/x\nnew file mode 100644\n--- /dev/null\n+++ b/sub/.git/x\n@@ -0,0 +1 @@\n+x\n",
        ),
    ];
    let config_before = read(&work.join(".git/config"));
    for (what, patch) in escapes {
        let (kind, message) = err(&e, args(patch));
        assert_eq!(kind, "refused", "{what}: {message}");
        assert!(message.contains(&format!("`{what}` (")), "{message}");
        assert!(message.contains("nothing was changed"), "{message}");
    }
    // A directory symlinked out of the work tree is no way out either.
    let elsewhere = tempfile::tempdir().expect("tmp");
    std::os::unix::fs::symlink(elsewhere.path(), work.join("out")).expect("symlink");
    let through = "diff --git a/out/x b/out/x\nnew file mode 100644\n--- /dev/null\n+++ b/out/x\n@@ -0,0 +1 @@\n+x\n";
    let (kind, message) = err(&e, args(through));
    assert_eq!(kind, "refused", "{message}");
    assert!(message.contains("behind a symlink"), "{message}");
    assert!(!elsewhere.path().join("x").exists());
    std::fs::remove_file(work.join("out")).expect("rm link");
    assert_eq!(read(&work.join(".git/config")), config_before);
    assert!(!p.path().join("x").exists());
    assert!(!work.join("sub").exists());
    ok(&e, json!({"action": "assert_clean", "repo_path": "work"}));

    // An absolute name in a patch is read the way git reads it: its prefix stripped, relative to the
    // root, so the file lands inside the work tree and never at the absolute path.
    let absolute = "diff --git a//tmp/infra-abs b//tmp/infra-abs\nnew file mode 100644\n--- /dev/null\n+++ b//tmp/infra-abs\n@@ -0,0 +1 @@\n+x\n";
    let r = ok(&e, args(absolute));
    assert_eq!(r["stat"]["files"][0]["path"], "tmp/infra-abs");
    assert_eq!(read(&work.join("tmp/infra-abs")), "x\n");
    assert!(!Path::new("/tmp/infra-abs").exists());
    std::fs::remove_dir_all(work.join("tmp")).expect("rm");

    // The whole patch applies: both files, with their counts.
    let r = ok(&e, args(PATCH));
    assert_eq!(read(&work.join("a.txt")), "one\nTWO\nthree\n");
    assert_eq!(read(&work.join("new.txt")), "fresh\nlines\n");
    assert_eq!(
        r["stat"]["files"],
        json!([{"path": "a.txt", "insertions": 1, "deletions": 1},
               {"path": "new.txt", "insertions": 2, "deletions": 0}])
    );
    // Now dirty: assert_clean fails naming both paths.
    let (kind, message) = err(&e, json!({"action": "assert_clean", "repo_path": "work"}));
    assert_eq!(kind, "check_failed");
    assert!(message.contains("a.txt, new.txt"), "{message}");

    // Every call, refused or not, is in the audit log.
    let records = audited(&p, "apply_patch");
    for kind in ["intent", "outcome"] {
        assert_eq!(
            records.iter().filter(|r| r["kind"] == kind).count(),
            7,
            "{kind}"
        );
    }
    assert_eq!(records.iter().filter(|r| r["ok"] == true).count(), 2);
}

#[test]
fn repo_commit_paths_diff_against_a_ref_and_revert() {
    let (p, work) = project();
    let e = p.engine();
    std::fs::write(work.join("a.txt"), "one\nTWO\nthree\n").expect("edit");
    std::fs::write(work.join("b.txt"), "b\n").expect("untracked");
    std::fs::write(work.join("c.txt"), "c\n").expect("untracked");

    // Only the named paths; the author from the repository's config.
    let c = ok(
        &e,
        json!({"action": "commit", "repo_path": "work", "message": "add b", "paths": ["b.txt"]}),
    );
    let sha = c["sha"].as_str().expect("sha").to_owned();
    assert_eq!(git(&work, &["rev-parse", "HEAD"]), sha);
    assert_eq!(
        git(
            &work,
            &["show", "--name-only", "--format=%an <%ae>", "HEAD"]
        ),
        "Repo Config <config@example.com>\n\nb.txt"
    );
    assert_eq!(git(&work, &["status", "--porcelain"]), "M a.txt\n?? c.txt");

    // Every tracked change (c.txt stays untracked), with an explicit author.
    let c2 = ok(
        &e,
        json!({"action": "commit", "repo_path": "work", "message": "two", "author": "Ann <ann@example.com>"}),
    );
    assert_eq!(
        c2["stat"]["files"],
        json!([{"path": "a.txt", "insertions": 1, "deletions": 1}])
    );
    assert_eq!(
        git(&work, &["log", "-1", "--format=%an <%ae> %s"]),
        "Ann <ann@example.com> two"
    );
    let (kind, message) = err(
        &e,
        json!({"action": "commit", "repo_path": "work", "message": "again"}),
    );
    assert_eq!(kind, "refused");
    assert!(message.contains("nothing to commit"), "{message}");
    let (kind, _) = err(
        &e,
        json!({"action": "commit", "repo_path": "work", "message": "x", "paths": ["../a.txt"]}),
    );
    assert_eq!(kind, "refused");

    // diff against a ref, with stats.
    let d = ok(
        &e,
        json!({"action": "diff", "repo_path": "work", "rev": sha, "stat_only": true}),
    );
    assert_eq!(
        d["stat"]["files"],
        json!([{"path": "a.txt", "insertions": 1, "deletions": 1}])
    );
    let d = ok(
        &e,
        json!({"action": "diff", "repo_path": "work", "rev": "HEAD~2"}),
    );
    assert_eq!(d["stat"]["files_changed"], 2);
    assert!(
        d["patch"].as_str().is_some_and(|t| t.contains("+b\n")),
        "{d}"
    );

    // Revert with a dirty tree is refused; clean, it commits the inverse.
    let (kind, message) = err(
        &e,
        json!({"action": "revert", "repo_path": "work", "rev": "HEAD"}),
    );
    assert_eq!(kind, "check_failed");
    assert!(message.contains("c.txt"), "{message}");
    std::fs::remove_file(work.join("c.txt")).expect("rm");
    let r = ok(
        &e,
        json!({"action": "revert", "repo_path": "work", "rev": "HEAD"}),
    );
    assert_eq!(read(&work.join("a.txt")), "one\ntwo\nthree\n");
    assert_eq!(
        git(&work, &["rev-parse", "HEAD"]),
        r["sha"].as_str().expect("sha")
    );
    assert_eq!(git(&work, &["log", "-1", "--format=%s"]), "Revert \"two\"");
    assert_eq!(git(&work, &["status", "--porcelain"]), "");

    // A revert that conflicts (`two` edited the line the revert of the revert would...): edit the same
    // line again, then revert `two`: refused, HEAD and tree unchanged.
    std::fs::write(work.join("a.txt"), "one\nzwei\nthree\n").expect("edit");
    ok(
        &e,
        json!({"action": "commit", "repo_path": "work", "message": "zwei"}),
    );
    let head = git(&work, &["rev-parse", "HEAD"]);
    let (kind, message) = err(
        &e,
        json!({"action": "revert", "repo_path": "work", "rev": "HEAD~2"}),
    );
    assert_eq!(kind, "check_failed", "{message}");
    assert!(
        message.contains("conflicts") && message.contains("a.txt"),
        "{message}"
    );
    assert_eq!(git(&work, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&work, &["status", "--porcelain"]), "");
    assert_eq!(
        audited(&p, "commit")
            .iter()
            .filter(|r| r["ok"] == true)
            .count(),
        3
    );
    assert_eq!(
        audited(&p, "revert")
            .iter()
            .filter(|r| r["ok"].is_boolean())
            .count(),
        3
    );
}

#[test]
fn repo_branch_create_switch_and_move_only_with_force() {
    let (p, work) = project();
    let e = p.engine();
    let first = git(&work, &["rev-parse", "HEAD"]);
    let r = ok(
        &e,
        json!({"action": "branch", "repo_path": "work", "name": "fix"}),
    );
    assert_eq!(
        (r["created"].clone(), r["switched"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(git(&work, &["branch", "--show-current"]), "fix");
    std::fs::write(work.join("a.txt"), "fixed\n").expect("edit");
    ok(
        &e,
        json!({"action": "commit", "repo_path": "work", "message": "fix"}),
    );

    // Back to main (existing, not moved); the work tree follows.
    let r = ok(
        &e,
        json!({"action": "branch", "repo_path": "work", "name": "main"}),
    );
    assert_eq!(r["created"], false);
    assert_eq!(git(&work, &["branch", "--show-current"]), "main");
    assert_eq!(read(&work.join("a.txt")), "one\ntwo\nthree\n");

    // Moving `fix` back to main is refused without force; with force it is destructive (approval).
    let (kind, message) = err(
        &e,
        json!({"action": "branch", "repo_path": "work", "name": "fix", "from": "main"}),
    );
    assert_eq!(kind, "refused");
    assert!(message.contains("force"), "{message}");
    let (kind, _) = err(
        &e,
        json!({"action": "branch", "repo_path": "work", "name": "fix", "from": "main", "force": true}),
    );
    assert_eq!(kind, "approval_required");
    assert_ne!(git(&work, &["rev-parse", "fix"]), first);

    // A switch that would overwrite local changes is refused, nothing changed.
    std::fs::write(work.join("a.txt"), "local\n").expect("edit");
    let (kind, message) = err(
        &e,
        json!({"action": "branch", "repo_path": "work", "name": "fix"}),
    );
    assert_eq!(kind, "refused", "{message}");
    assert_eq!(git(&work, &["branch", "--show-current"]), "main");
    assert_eq!(read(&work.join("a.txt")), "local\n");
}

#[test]
fn repo_writes_stay_in_the_project_unless_named() {
    let (p, _work) = project();
    let e = p.engine();
    let outside = tempfile::tempdir().expect("tmp");
    let out = outside.path().canonicalize().expect("canon");
    git(&out, &["init", "-q"]);
    std::fs::create_dir(out.join("sub")).expect("sub");
    std::os::unix::fs::symlink(&out, p.path().join("link")).expect("symlink");

    let branch =
        |path: &str| json!({"action": "branch", "repo_path": path, "name": "x", "from": "HEAD"});
    for path in [
        "link".to_owned(),
        "work/../link".to_owned(),
        out.join("sub").display().to_string(),
    ] {
        let (kind, message) = err(&e, branch(&path));
        assert_eq!(kind, "refused", "{path}: {message}");
    }
    // Named by its root, it is writable (here it fails later: HEAD has no commit yet).
    let (kind, message) = err(&e, branch(&out.display().to_string()));
    assert_eq!(kind, "not_found", "{message}");
    // Reads are not contained.
    ok(
        &e,
        json!({"action": "status", "repo_path": out.join("sub").display().to_string()}),
    );
}

#[test]
fn repo_push_over_file_verified_on_the_remote_non_fast_forward_and_force() {
    let (p, work) = project();
    let e = p.engine();
    let (_d, remote) = bare();
    let url = format!("file://{}", remote.display());
    git(&work, &["remote", "add", "origin", &url]);

    let head = git(&work, &["rev-parse", "HEAD"]);
    let r = ok(&e, json!({"action": "push", "repo_path": "work"}));
    assert_eq!(
        r["updated"],
        json!([{"ref": "refs/heads/main", "old": null, "new": head}])
    );
    assert_eq!(git(&remote, &["rev-parse", "refs/heads/main"]), head);

    std::fs::write(work.join("b.txt"), "bee\n").expect("b");
    let c = ok(
        &e,
        json!({"action": "commit", "repo_path": "work", "message": "b", "paths": ["b.txt"]}),
    );
    let second = c["sha"].as_str().expect("sha").to_owned();
    // a repository on this host named by the call itself is a host path: refused without the opt-in,
    // whichever way it is written
    for named in [url.clone(), remote.display().to_string()] {
        for action in ["push", "fetch"] {
            let (kind, message) = err(
                &e,
                json!({"action": action, "repo_path": "work", "remote": named}),
            );
            assert_eq!(kind, "refused", "{action} {named}: {message}");
            assert!(message.contains("on the infra host"), "{message}");
        }
    }
    assert_eq!(
        git(&remote, &["rev-parse", "main"]),
        head,
        "nothing was pushed"
    );
    let mut c = engine::ctx::Config::at(p.path());
    c.unsafe_local = true;
    let r = ok(
        &Engine::new(c, e.catalog()),
        json!({"action": "push", "repo_path": "work", "remote": url}),
    );
    assert_eq!(r["updated"][0]["old"], head);
    assert_eq!(r["updated"][0]["new"], second);
    assert_eq!(git(&remote, &["rev-parse", "main"]), second);
    assert_eq!(git(&remote, &["show", "main:b.txt"]), "bee");

    // Diverge: the remote's main is not an ancestor of the new local main.
    git(&work, &["reset", "-q", "--hard", &head]);
    std::fs::write(work.join("c.txt"), "sea\n").expect("c");
    let c = ok(
        &e,
        json!({"action": "commit", "repo_path": "work", "message": "c", "paths": ["c.txt"]}),
    );
    let third = c["sha"].as_str().expect("sha").to_owned();
    let (kind, message) = err(&e, json!({"action": "push", "repo_path": "work"}));
    assert_eq!(kind, "refused", "{message}");
    assert!(message.contains("fast-forward"), "{message}");
    assert_eq!(git(&remote, &["rev-parse", "main"]), second);

    // force is destructive: approval required by default, nothing pushed…
    let force = json!({"action": "push", "repo_path": "work", "force": true});
    assert_eq!(err(&e, force.clone()).0, "approval_required");
    assert_eq!(err(&e, json!({"action": "push", "repo_path": "work", "refspecs": ["+refs/heads/main:refs/heads/main"]})).0, "approval_required");
    assert_eq!(git(&remote, &["rev-parse", "main"]), second);
    // …and allowed by a policy that allows destructive effects.
    std::fs::write(
        p.path().join("policy.yaml"),
        "effects: {destructive: allow}\n",
    )
    .expect("policy");
    let e = p.engine();
    let r = ok(&e, force);
    assert_eq!(
        r["updated"][0],
        json!({"ref": "refs/heads/main", "old": second, "new": third})
    );
    assert_eq!(git(&remote, &["rev-parse", "main"]), third);

    // fetch: another clone's push comes back as a remote-tracking ref update.
    let other = tempfile::tempdir().expect("tmp");
    git(other.path(), &["clone", "-q", &url, "c"]);
    let clone = other.path().join("c");
    std::fs::write(clone.join("d.txt"), "dee\n").expect("d");
    git(&clone, &["add", "d.txt"]);
    git(&clone, &["commit", "-q", "-m", "d"]);
    git(&clone, &["push", "-q", "origin", "main"]);
    let fourth = git(&clone, &["rev-parse", "HEAD"]);
    let r = ok(&e, json!({"action": "fetch", "repo_path": "work"}));
    assert!(
        r["updated"].as_array().is_some_and(|u| u
            .iter()
            .any(|x| x["ref"] == "refs/remotes/origin/main" && x["new"] == fourth)),
        "{r}"
    );
    assert_eq!(git(&work, &["rev-parse", "origin/main"]), fourth);

    let pushes = audited(&p, "push");
    assert!(
        pushes
            .iter()
            .any(|r| r["effect"] == "destructive" && r["ok"] == true),
        "{pushes:?}"
    );
    assert!(pushes.iter().any(|r| r["effect"] == "write"), "{pushes:?}");
}

#[test]
fn repo_push_and_fetch_over_ssh_with_a_key_and_known_hosts() {
    let (p, work) = project();
    let sshd = Sshd::start();
    let (_d, remote) = bare();
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        sshd.user,
        sshd.port,
        remote.display()
    );
    let targets = json!({"gitbox": {"host": "127.0.0.1", "key_file": sshd.key,
        "known_hosts": sshd.known_hosts}});
    std::fs::write(p.path().join("targets.json"), targets.to_string()).expect("targets");
    let e = p.engine();

    // Unknown host (no known_hosts for it in the profiles directory): refused before any credential.
    let (kind, message) = err(
        &e,
        json!({"action": "push", "repo_path": "work", "remote": url, "key_file": sshd.key}),
    );
    assert_eq!(kind, "host_key_unknown", "{message}");
    assert_eq!(git(&remote, &["for-each-ref"]), "");

    let head = git(&work, &["rev-parse", "HEAD"]);
    let r = ok(
        &e,
        json!({"action": "push", "repo_path": "work", "remote": url, "target": "gitbox"}),
    );
    assert_eq!(
        r["updated"],
        json!([{"ref": "refs/heads/main", "old": null, "new": head}])
    );
    assert_eq!(git(&remote, &["rev-parse", "main"]), head);
    assert_eq!(git(&remote, &["show", "main:a.txt"]), "one\ntwo\nthree");

    // With the server's line in <profiles>/known_hosts, the key_file argument alone does.
    std::fs::copy(&sshd.known_hosts, p.path().join("known_hosts")).expect("known_hosts");
    let r = ok(
        &e,
        json!({"action": "fetch", "repo_path": "work", "remote": url, "key_file": sshd.key,
               "refspecs": ["refs/heads/main:refs/remotes/box/main"]}),
    );
    assert_eq!(
        r["updated"],
        json!([{"ref": "refs/remotes/box/main", "old": null, "new": head}])
    );

    // A key no target gives for this host is a host file the call may not sign in with: refused
    // before it is read, whether it exists or not, and through a symbolic link too.
    let link = p.path().join("work/innocent.pem");
    std::os::unix::fs::symlink(&sshd.wrong_key, &link).expect("symlink");
    for key in [
        sshd.wrong_key.display().to_string(),
        "/nonexistent/id_ed25519".to_owned(),
        link.display().to_string(),
    ] {
        let (kind, message) = err(
            &e,
            json!({"action": "fetch", "repo_path": "work", "remote": url, "key_file": key}),
        );
        assert_eq!(kind, "refused", "{key}: {message}");
        assert!(
            message.contains("no target's key for 127.0.0.1"),
            "{message}"
        );
    }
    // nor the key of a target of another host
    let targets = json!({"gitbox": {"host": "git.example.org", "key_file": sshd.key,
        "known_hosts": sshd.known_hosts}});
    std::fs::write(p.path().join("targets.json"), targets.to_string()).expect("targets");
    let (kind, message) = err(
        &e,
        json!({"action": "fetch", "repo_path": "work", "remote": url, "key_file": sshd.key}),
    );
    assert_eq!(kind, "refused", "{message}");
    // With INFRA_UNSAFE_LOCAL=1 any host key file may be used, and an unauthorized one fails
    // authentication.
    let mut c = engine::ctx::Config::at(p.path());
    c.unsafe_local = true;
    let unsafe_engine = Engine::new(c, e.catalog());
    let (kind, message) = err(
        &unsafe_engine,
        json!({"action": "fetch", "repo_path": "work", "remote": url, "key_file": sshd.wrong_key}),
    );
    assert!(
        kind == "auth_failed" || kind == "ssh_failed",
        "{kind}: {message}"
    );

    // The private key never reaches the audit log.
    let key = read(&sshd.key);
    let body = key.lines().nth(1).expect("a key line");
    assert!(!read(&p.path().join("audit.jsonl")).contains(body));
}

/// A loopback HTTP server that answers every request `401` asking for Basic credentials, and keeps
/// each request's `Authorization` header.
fn basic_auth_wall() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/repo.git", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(v) = line.strip_prefix("Authorization: ") {
                    let _ = tx.send(v.trim().to_owned());
                }
                line.clear();
            }
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (url, rx)
}

#[test]
fn repo_https_token_is_sent_but_never_shown_or_audited() {
    const TOKEN: &str = "tok-4f9a1c77e2d0secret";
    let (p, _work) = project();
    let config = engine::ctx::Config::at(p.path())
        .with_vars(engine::ctx::Vars::from_pairs([("GIT_TOKEN", TOKEN)]));
    let e = Engine::new(config, std::sync::Arc::new(engine::Catalog::builtin()));
    let (url, sent) = basic_auth_wall();

    // Without `token_env` the remote's question is answered with a clear error.
    let (kind, message) = err(
        &e,
        json!({"action": "fetch", "repo_path": "work", "remote": url}),
    );
    assert_eq!(kind, "invalid_config", "{message}");
    assert!(message.contains("token_env"), "{message}");

    // A variable no target names is infra's environment, not a token for this host; nor is a
    // target's variable for another host: neither is sent.
    let fetch =
        json!({"action": "fetch", "repo_path": "work", "remote": url, "token_env": "GIT_TOKEN"});
    for targets in [
        json!({}),
        json!({"forge": {"http": {"base_url": "https://git.example.com/", "bearer_env": "GIT_TOKEN"}}}),
    ] {
        std::fs::write(p.path().join("targets.json"), targets.to_string()).expect("targets");
        let (kind, message) = err(&e, fetch.clone());
        assert_eq!(kind, "refused", "{targets}: {message}");
        assert!(
            sent.try_iter().all(|h| !h.contains("Basic")),
            "{targets}: a token was sent"
        );
    }
    // The target of this host names it: it is sent.
    let base = url.trim_end_matches("/repo.git");
    std::fs::write(
        p.path().join("targets.json"),
        json!({"forge": {"http": {"base_url": base, "bearer_env": "GIT_TOKEN"}}}).to_string(),
    )
    .expect("targets");
    let (kind, message) = err(&e, fetch);
    assert_eq!(kind, "auth_failed", "{message}");
    assert!(
        message.contains("refused the credentials offered for user `x-access-token`"),
        "{message}"
    );
    // The token went to the server, as the password of a Basic header…
    let expected = format!(
        "Basic {}",
        base64(format!("x-access-token:{TOKEN}").as_bytes())
    );
    assert!(
        sent.try_iter().any(|h| h == expected),
        "no Basic header with the token"
    );
    // …and nowhere in the error or the audit log.
    assert!(!message.contains(TOKEN));
    assert!(!read(&p.path().join("audit.jsonl")).contains(TOKEN));
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn repo_writes_never_touch_infras_own_files_in_the_work_tree() {
    // The profiles directory is the repository's root here: its policy, targets, audit and runs are
    // in the work tree.
    let p = Project::new();
    let root = p.path();
    git(root, &["init", "-q"]);
    std::fs::write(root.join("notes.txt"), "n\n").expect("notes");
    git(root, &["add", "notes.txt"]);
    git(root, &["commit", "-q", "-m", "notes"]);
    let e = p.engine();
    let add = |path: &str| {
        format!(
            "diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+effects: {{destructive: allow}}\n"
        )
    };
    for path in ["policy.yaml", "targets.json", "audit.jsonl"] {
        let (kind, message) = err(
            &e,
            json!({"action": "apply_patch", "repo_path": ".", "patch": add(path)}),
        );
        assert_eq!(kind, "refused", "{path}: {message}");
        assert!(message.contains("one of infra's own files"), "{message}");
        assert!(!root.join(path).exists() || path == "audit.jsonl");
    }
    // A branch whose tree holds a policy is not switched to.
    git(root, &["checkout", "-q", "-b", "loose"]);
    std::fs::write(root.join("policy.yaml"), "effects: {destructive: allow}\n").expect("policy");
    git(root, &["add", "policy.yaml"]);
    git(root, &["commit", "-q", "-m", "loosen"]);
    git(root, &["checkout", "-q", "main"]);
    assert!(!root.join("policy.yaml").exists());
    let (kind, message) = err(
        &e,
        json!({"action": "branch", "repo_path": ".", "name": "loose"}),
    );
    assert_eq!(kind, "refused", "{message}");
    assert!(message.contains("policy.yaml"), "{message}");
    assert!(!root.join("policy.yaml").exists());
    assert_eq!(git(root, &["branch", "--show-current"]), "main");
}
