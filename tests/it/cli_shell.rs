//! What a shell user expects of the binary: completions, a manual page, `--color` with `NO_COLOR` and
//! `CLICOLOR_FORCE`, `-q` and `-v`.

use crate::project::Project;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn completions_are_printed_for_each_shell_from_the_command_line_definition() {
    let p = Project::new();
    for (shell, marker) in [
        ("bash", "_infra()"),
        ("zsh", "#compdef infra"),
        ("fish", "complete -c infra"),
        ("elvish", "edit:completion:arg-completer[infra]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = p
            .infra()
            .args(["completions", shell])
            .output()
            .expect("infra");
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let t = text(&out.stdout);
        assert!(t.contains(marker), "{shell}: {t}");
        // subcommands and their flags are in it
        assert!(t.contains("logs") && t.contains("follow"), "{shell}: {t}");
    }
    let bad = p
        .infra()
        .args(["completions", "tcsh"])
        .output()
        .expect("infra");
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("possible values"));
}

#[test]
fn the_manual_is_roff_on_stdout_or_one_page_per_command_in_a_directory() {
    let p = Project::new();
    let out = p.infra().arg("man").output().expect("infra");
    assert_eq!(out.status.code(), Some(0));
    let page = text(&out.stdout);
    assert!(page.contains(".TH infra 1"), "{page}");
    assert!(
        page.contains("completions") && page.contains("\\-\\-color"),
        "{page}"
    );

    let dir = p.path().join("man");
    let out = p
        .infra()
        .args(["man", "--out-dir"])
        .arg(&dir)
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for name in [
        "infra.1",
        "infra-run.1",
        "infra-runs-logs.1",
        "infra-state-get.1",
    ] {
        let page =
            std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(page.contains(".TH"), "{name}");
    }
}

/// A runbook file with an error, for output that has colour to give.
fn broken(p: &Project) -> std::path::PathBuf {
    let f = p.path().join("broken.yaml");
    std::fs::write(
        &f,
        "name: b\nsteps:\n  - {id: a, tool: state, needs: [nope], args: {action: get, key: k}}\n",
    )
    .expect("write");
    f
}

#[test]
fn color_follows_the_flag_then_no_color_then_clicolor_force() {
    let p = Project::new();
    let f = broken(&p);
    // (flag, NO_COLOR, CLICOLOR_FORCE) → coloured; stderr is a pipe throughout
    type Case = (
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        bool,
    );
    let cases: [Case; 6] = [
        (None, Some("1"), None, false),
        (None, None, None, false),
        (None, None, Some("1"), true),
        (None, Some("1"), Some("1"), false),
        (Some("always"), Some("1"), None, true),
        (Some("never"), None, Some("1"), false),
    ];
    for (flag, no_color, force, coloured) in cases {
        let mut c = p.infra();
        c.env_remove("NO_COLOR").arg("validate").arg(&f);
        if let Some(w) = flag {
            c.args(["--color", w]);
        }
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        if let Some(v) = force {
            c.env("CLICOLOR_FORCE", v);
        }
        let out = c.output().expect("infra");
        assert_eq!(out.status.code(), Some(1));
        let e = text(&out.stderr);
        assert!(e.contains("unknown-step"), "{e}");
        assert_eq!(
            e.contains("\x1b["),
            coloured,
            "{flag:?} NO_COLOR={no_color:?} CLICOLOR_FORCE={force:?}: {e}"
        );
    }
    let bad = p
        .infra()
        .args(["--color", "sometimes", "list"])
        .output()
        .expect("infra");
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn quiet_drops_progress_and_hints_verbose_adds_the_run_and_its_evidence() {
    let p = Project::new().runbook(
        "one",
        "steps:\n  - {id: s, tool: state, args: {action: set, key: k, value: 1}}\n",
    );
    let normal = p.infra().args(["run", "one"]).output().expect("infra");
    assert_eq!(normal.status.code(), Some(0));
    assert!(text(&normal.stderr).contains("[one] s started"));

    let quiet = p
        .infra()
        .args(["-q", "run", "one"])
        .output()
        .expect("infra");
    assert_eq!(quiet.status.code(), Some(0));
    assert_eq!(text(&quiet.stderr), "", "nothing but errors");
    assert!(
        text(&quiet.stdout).contains("one succeeded in"),
        "the result stays"
    );
    // a hint is quiet too (an empty artifact listing says where artifacts come from)
    let hint = Project::new()
        .infra()
        .args(["artifacts", "list"])
        .output()
        .expect("infra");
    assert!(text(&hint.stderr).contains("no artifacts yet"));
    let hint = Project::new()
        .infra()
        .args(["artifacts", "list", "--quiet"])
        .output()
        .expect("infra");
    assert_eq!(text(&hint.stderr), "");

    let verbose = p
        .infra()
        .args(["run", "one", "-v"])
        .output()
        .expect("infra");
    let e = text(&verbose.stderr);
    assert!(e.contains("evidence in artifact://runs/one/"), "{e}");
    let both = p
        .infra()
        .args(["-q", "-v", "list"])
        .output()
        .expect("infra");
    assert_eq!(
        both.status.code(),
        Some(2),
        "-q and -v contradict each other"
    );
}
