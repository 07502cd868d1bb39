//! Values in shell fields, tried against a real `/bin/sh`: every hostile value either arrives as one
//! intact word or the render is refused; a template inside the author's own quotes is an error at
//! validate time and a refusal at render time, and nothing runs.

use dsl::template::{Mode, Renderer};
use serde_json::json;

/// Values that try to end a quote, run a command or split a word.
fn hostile(canary: &str) -> Vec<String> {
    [
        ";touch CANARY;",
        "';touch CANARY;'",
        "\"; touch CANARY; \"",
        "$(touch CANARY)",
        "`touch CANARY`",
        "'$(touch CANARY)'",
        "\\';touch CANARY;#",
        "a\nb; touch CANARY",
        "'\"'\"';touch CANARY;'\"'\"'",
        "x[$(touch CANARY)]",
        "${IFS}touch${IFS}CANARY",
        "EOF\ntouch CANARY\nEOF",
    ]
    .iter()
    .map(|v| v.replace("CANARY", canary))
    .collect()
}

/// Command shapes: the first ones put the value where the shell reads a word, the rest inside the
/// author's quotes or another region where infra's quotes do not hold.
const WORDS: &[&str] = &[
    "printf '%s' {{ input.v }}",
    "printf '%s' x{{ input.v }}y",
    "printf '%s' {{ input.v | quote }}",
    "printf '%s' \"$(printf '%s' {{ input.v }})\"",
];
const QUOTED: &[&str] = &[
    "echo 'hello {{ input.v }}'",
    "echo \"hello {{ input.v }}\"",
    "echo `echo {{ input.v }}`",
    "echo $'{{ input.v }}'",
    "cat <<EOF\n{{ input.v }}\nEOF",
    "echo $(( {{ input.v }} ))",
    "echo {% if true %}'{% else %}'{% endif %}{{ input.v }}'",
    "echo \"${X:-{{ input.v }}}\"",
];

#[test]
fn hostile_values_never_run_whatever_the_authors_quotes() {
    let dir = tempfile::tempdir().expect("tmp");
    let canary = dir.path().join("pwned");
    let canary_s = canary.display().to_string();
    let r = Renderer::new();
    let (mut tried, mut refused, mut intact) = (0, 0, 0);
    for v in hostile(&canary_s) {
        let ctx = json!({"input": {"v": v}});
        for shape in WORDS.iter().chain(QUOTED) {
            tried += 1;
            let rendered = match r.render(shape, Mode::Shell, &ctx) {
                Ok(c) => c.as_str().expect("a string").to_owned(),
                Err(e) => {
                    assert!(QUOTED.contains(shape), "{shape} with {v:?}: {e}");
                    refused += 1;
                    continue;
                }
            };
            assert!(
                WORDS.contains(shape),
                "{shape} rendered with {v:?}: {rendered}"
            );
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&rendered)
                .current_dir(dir.path())
                .output()
                .expect("sh");
            assert!(!canary.exists(), "{shape} with {v:?} ran: {rendered}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            if *shape == "printf '%s' x{{ input.v }}y" {
                assert_eq!(stdout, format!("x{v}y"), "{shape}");
            } else if shape.starts_with("printf '%s' \"$(") {
                // command substitution drops trailing newlines only
                assert_eq!(stdout, v.trim_end_matches('\n'), "{shape}");
            } else {
                assert_eq!(stdout, v, "{shape}");
            }
            intact += 1;
        }
    }
    assert_eq!(tried, 12 * (WORDS.len() + QUOTED.len()));
    assert_eq!(refused, 12 * QUOTED.len());
    assert_eq!(intact, 12 * WORDS.len());
    assert!(!canary.exists());
}

#[test]
fn validate_points_at_a_template_inside_quotes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("q.yaml");
    std::fs::write(
        &file,
        "name: quoted.greeting\ninputs:\n  v: {type: string}\nsteps:\n  - id: greet\n    tool: local\n    args:\n      action: exec\n      command: \"echo 'hello {{ input.v }}'\"\n",
    )
    .expect("write");
    let out = crate::infra_in(tmp.path(), tmp.path())
        .arg("validate")
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error[quoted-interpolation]"), "{err}");
    assert!(err.contains("q.yaml:9:"), "{err}");
    assert!(err.contains("remove the quotes"), "{err}");

    // and a run of it is refused before anything is spawned
    let canary = tmp.path().join("pwned-q");
    let out = crate::infra_in(tmp.path(), tmp.path())
        .env("INFRA_UNSAFE_LOCAL", "1")
        .arg("run")
        .arg(&file)
        .arg("--input")
        .arg(format!("v=;touch {};", canary.display()))
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    assert!(!canary.exists());
}
