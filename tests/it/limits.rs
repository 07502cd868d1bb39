use std::fmt::Write;

use crate::check_source;

fn generated(steps: usize, dag: bool) -> String {
    let mut s = format!(
        "name: big\nflow: {}\ninputs: [x]\nsteps:\n",
        if dag { "dag" } else { "sequence" }
    );
    for i in 0..steps {
        let _ = write!(s, "  - id: s{i}\n    tool: state\n");
        if dag && i > 0 {
            let _ = writeln!(s, "    needs: [s{}]", i / 2);
        }
        let _ = writeln!(
            s,
            "    args: {{ action: set, key: \"k{i}\", value: \"{{{{ input.x }}}}\" }}"
        );
    }
    s
}

/// Runs on the test thread's 2 MiB stack on purpose: nothing may recurse once per step.
#[test]
fn ten_thousand_steps_are_accepted() {
    for dag in [false, true] {
        let file = dsl::SourceFile::new("big.yaml", generated(10_000, dag));
        let (compiled, diags) = check_source(&file, None);
        assert!(diags.iter().all(|d| !d.is_error()), "{:?}", diags.first());
        assert_eq!(compiled, 1);
    }
}

#[test]
fn a_ten_thousand_step_cycle_is_reported_whole() {
    let mut text = generated(10_000, false);
    // the first step reads the last one: with `flow: sequence` every step is in the cycle
    text = text.replacen(
        "key: \"k0\", value: \"{{ input.x }}\"",
        "key: \"k0\", value: \"{{ steps.s9999.value }}\"",
        1,
    );
    let (_, diags) = check_source(&dsl::SourceFile::new("ring.yaml", text), None);
    let cycle = diags
        .iter()
        .find(|d| d.code == dsl::Code::DependencyCycle)
        .expect("cycle");
    assert!(
        cycle.message.contains("`s0`")
            && cycle.message.contains("`s5000`")
            && cycle.message.contains("`s9999`")
    );
}

#[test]
fn a_yaml_alias_bomb_is_refused_before_it_expands() {
    let bomb =
        std::fs::read_to_string(crate::data_dir().join("err/input-too-large.yaml")).expect("bomb");
    let (_, diags) = check_source(&dsl::SourceFile::new("bomb.yaml", bomb), None);
    assert_eq!(
        diags.first().map(|d| d.code),
        Some(dsl::Code::InputTooLarge),
        "{diags:?}"
    );
}

#[test]
fn a_one_mebibyte_template_is_refused() {
    let big = "{{ input.x }}".repeat(1024 * 1024 / 13 + 1);
    let text = format!(
        "name: huge\ninputs: [x]\nsteps:\n  - id: a\n    tool: state\n    args: {{ action: set, key: k, value: \"{big}\" }}\n"
    );
    assert!(text.len() > 1024 * 1024);
    let (compiled, diags) = check_source(&dsl::SourceFile::new("huge.yaml", text), None);
    assert_eq!(compiled, 0);
    let d = diags
        .iter()
        .find(|d| d.code == dsl::Code::InputTooLarge)
        .expect("too large");
    assert!(d.message.contains("limit"), "{}", d.message);
}

#[test]
fn a_file_over_the_size_limit_is_refused_unread() {
    let text = format!(
        "name: x\ndescription: \"{}\"\nsteps: []\n",
        "a".repeat(dsl::parse::MAX_FILE_BYTES)
    );
    let (_, diags) = check_source(&dsl::SourceFile::new("x.yaml", text), None);
    assert_eq!(
        diags.first().map(|d| d.code),
        Some(dsl::Code::InputTooLarge)
    );
}
