//! Secrets over MCP: never recorded when a call is refused, masked in every channel and form.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_input_of_a_refused_runbook_call_is_never_recorded() {
    let p = Project::new().runbook(
        "with.secret",
        "name: with.secret\ninputs:\n  token: {type: string, secret: true, pattern: '^[a-z]+$'}\n  who: {type: string}\nsteps:\n  - id: s\n    tool: state\n    args: {action: set, key: who, value: '{{ input.who }}'}\n",
    );
    let canary = "Sekret-Canary-4d3c2b1a";
    let s = p.mcp().await;
    let calls = [
        // a value its pattern refuses, a missing input, a misspelt name, an unknown runbook, inline
        json!({"action": "run", "name": "with.secret", "input": {"token": canary, "who": "x"}}),
        json!({"action": "run", "name": "with.secret", "input": {"token": canary}}),
        json!({"action": "plan", "name": "with.secret", "input": {"tokn": canary, "who": "x"}}),
        json!({"action": "run", "name": "no.such.runbook", "input": {"token": canary}}),
        json!({"action": "plan", "name": "no.such.runbook", "input": {"token": canary}}),
        json!({"action": "run", "runbook": {"name": "inline", "inputs": {"t": {"type": "integer"}}, "steps": []}, "input": {"t": canary}}),
    ];
    for args in calls {
        let r = call(&s, "runbook", args.clone()).await;
        assert_eq!(r.is_error, Some(true), "{args}: {:?}", body(&r));
    }
    // a declared, non-secret input is still recorded as given
    let r = call(
        &s,
        "runbook",
        json!({"action": "run", "name": "with.secret", "input": {"who": "visible-name"}}),
    )
    .await;
    assert_eq!(r.is_error, Some(true));
    stop(s).await;
    let leaks = crate::files_containing(p.path(), &[canary]);
    assert!(leaks.is_empty(), "the secret was written to {leaks:?}");
    assert!(
        !crate::files_containing(p.path().join("runs").as_path(), &["visible-name"]).is_empty(),
        "a public input is kept in the record"
    );

    // the CLI's refusal does not print it either
    let out = crate::infra_in(p.path(), p.path())
        .args(["run", "with.secret", "--input"])
        .arg(format!("token={canary}"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(canary), "{all}");
    assert!(crate::files_containing(p.path(), &[canary]).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credential_among_the_arguments_of_a_refused_call_is_never_recorded() {
    let p = Project::new().env("INFRA_MAX_JOBS", "1");
    let canary = "Pass-Canary-7e6f5a4b";
    let url = format!("postgres://u:{canary}@127.0.0.1:1/db");
    let bearer = format!("Bearer {canary}");
    let s = p.mcp().await;
    let calls = [
        // an unknown key, an unknown action, an argument of the wrong type: refused before they run
        (
            "psql",
            json!({"action": "query", "connection": url, "sql": "select 1", "bogus": 1}),
        ),
        ("psql", json!({"action": "nosuch", "connection": url})),
        (
            "psql",
            json!({"action": "query", "connection": url, "sql": 5}),
        ),
        (
            "http",
            json!({"action": "request", "url": "http://127.0.0.1:1/", "headers": {"Authorization": bearer}, "bogus": 1}),
        ),
    ];
    for (tool, args) in calls {
        let r = call(&s, tool, args.clone()).await;
        assert_eq!(r.is_error, Some(true), "{args}: {:?}", body(&r));
        assert!(!body(&r).to_string().contains(canary), "{:?}", body(&r));
    }
    stop(s).await;
    let leaks = crate::files_containing(p.path(), &[canary]);
    assert!(leaks.is_empty(), "the credential was written to {leaks:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_cut_to_its_budget_inside_a_secret_shows_none_of_it() {
    // an output that carries the secret input across the place the budget cuts long strings
    let p = Project::new().runbook(
        "long.out",
        "name: long.out\ninputs:\n  token: {type: string, secret: true}\n  pad: {type: string}\nsteps:\n  - id: s\n    tool: state\n    args: {action: get, key: none}\noutputs:\n  big: '{{ input.pad }}{{ input.token }}{{ input.pad }}{{ input.pad }}'\n",
    );
    let secret = "Cut-Canary-Zq8x-7f3e9d";
    let s = p.mcp().await;
    // the first cut keeps 7,680 bytes of a long string: the secret starts a few bytes before it
    for before in [7660usize, 7670, 7675, 7679] {
        let r = call(
            &s,
            "runbook",
            json!({"action": "run", "name": "long.out", "input": {"token": secret, "pad": "x".repeat(before)}}),
        )
        .await;
        let b = body(&r);
        assert_eq!(b["truncated"], true, "{before}: the budget cut it");
        let shown = b.to_string();
        assert!(
            !shown.contains(&secret[..6]),
            "{before}: {}",
            &shown[..shown.len().min(400)]
        );
        // masked, not dropped: the mask starts where the secret did (cut where the string is)
        let at = shown.find(&"x".repeat(before)).expect("pad") + before;
        assert_eq!(&shown[at..at + 1], "[", "{before}: {}", &shown[at..at + 40]);
    }
    stop(s).await;
}

/// Every form of `secret` the README says is masked: raw, each line, hex (both cases), base64 (the
/// characters that do not depend on what surrounds it, standard and URL-safe), percent-encoded (both
/// cases of hex digits), JSON-escaped.
fn masked_forms(secret: &str) -> Vec<String> {
    fn b64(bytes: &[u8], url: bool) -> String {
        let alphabet: &[u8] = if url {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        } else {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        };
        let mut out = String::new();
        for c in bytes.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..=c.len() {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
    let mut parts: Vec<String> = vec![secret.to_owned()];
    parts.extend(secret.lines().map(str::to_owned));
    let mut forms = Vec::new();
    for p in &parts {
        forms.push(p.clone());
        let hex: String = p.bytes().map(|b| format!("{b:02x}")).collect();
        forms.push(hex.to_uppercase());
        forms.push(hex);
        let pct: String = p
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let b = pct.as_bytes();
        let lower: String = (0..b.len())
            .map(|i| {
                let hex_digit = (i >= 1 && b[i - 1] == b'%') || (i >= 2 && b[i - 2] == b'%');
                if hex_digit {
                    (b[i] as char).to_ascii_lowercase()
                } else {
                    b[i] as char
                }
            })
            .collect();
        forms.push(lower);
        forms.push(pct);
        forms.push(
            serde_json::to_string(p)
                .expect("json")
                .trim_matches('"')
                .to_owned(),
        );
        for url in [false, true] {
            // the middle of the encoding, whatever the alignment
            let e = b64(p.as_bytes(), url);
            if e.len() > 8 {
                forms.push(e[4..e.len() - 4].to_owned());
            }
        }
    }
    forms.retain(|f| f.len() >= 8);
    forms
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_input_is_masked_in_every_channel_and_form() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("runbooks")).expect("mkdir");
    // each step shows the secret in a form: the encodings, a failing step's stderr and error, state
    let script = "import sys, json, base64, urllib.parse as u\nt = sys.argv[1]\nb = t.encode()\nprint(t)\nprint(b.hex(), b.hex().upper())\nprint(base64.b64encode(b).decode(), base64.urlsafe_b64encode(b).decode())\nq = u.quote(t, safe='')\nprint(q, ''.join(c.lower() if i and q[i-1] == '%' or i > 1 and q[i-2] == '%' else c for i, c in enumerate(q)))\nprint(json.dumps(t))\nfor l in t.splitlines(): print(base64.b64encode(l.encode()).decode())\n";
    std::fs::write(dir.path().join("show.py"), script).expect("script");
    std::fs::write(
        dir.path().join("runbooks/canary.yaml"),
        format!(
            "name: canary.all\ninputs:\n  token: {{type: string, secret: true}}\nsteps:\n  - id: show\n    tool: local\n    args: {{action: exec, command: 'python3 {py} {{{{ input.token }}}}'}}\n  - id: fail\n    tool: local\n    continue_on_error: true\n    args: {{action: exec, command: 'echo {{{{ input.token }}}} >&2; exit 3'}}\n  - id: keep\n    tool: state\n    args: {{action: set, scope: persistent, key: tok, value: '{{{{ input.token }}}}'}}\noutputs:\n  said: '{{{{ steps.show.stdout }}}}'\n",
            py = dir.path().join("show.py").display()
        ),
    )
    .expect("runbook");
    let secret = "Canary-Line-One-4f2a9e\nCanary\"Two\\x /9b8c7d";
    let s = start(dir.path(), true).await;
    let r = call(
        &s,
        "runbook",
        json!({"action": "run", "name": "canary.all", "input": {"token": secret}}),
    )
    .await;
    let shown = body(&r).to_string();
    // the script ran and printed each form, each one masked
    assert!(shown.matches("[REDACTED]").count() >= 8, "{shown}");
    // the same as a job, read back through jobs
    let j = call(
        &s,
        "runbook",
        json!({"action": "run", "name": "canary.all", "input": {"token": secret}, "async": true}),
    )
    .await;
    let id = body(&j)["result"]["job_id"]
        .as_str()
        .expect("job")
        .to_owned();
    let waited = call(
        &s,
        "jobs",
        json!({"action": "wait", "job_id": id, "timeout_ms": 20000}),
    )
    .await;
    let mut seen = vec![shown, body(&waited).to_string()];
    for (tool, args) in [
        (
            "state",
            json!({"action": "get", "scope": "persistent", "key": "tok"}),
        ),
        ("audit", json!({"action": "tail", "limit": 50})),
        ("evidence", json!({"action": "list"})),
        ("jobs", json!({"action": "list"})),
    ] {
        seen.push(body(&call(&s, tool, args).await).to_string());
    }
    stop(s).await;
    // a new process, with an empty redactor, reads persistent state
    let out = crate::infra_in(dir.path(), dir.path())
        .args(["state", "get", "tok"])
        .output()
        .expect("state get");
    seen.push(String::from_utf8_lossy(&out.stdout).into_owned());
    seen.push(String::from_utf8_lossy(&out.stderr).into_owned());

    let forms = masked_forms(secret);
    for text in &seen {
        for f in &forms {
            assert!(!text.contains(f.as_str()), "{f:?} shown in {text}");
        }
    }
    let refs: Vec<&str> = forms.iter().map(String::as_str).collect();
    let leaks: Vec<String> = crate::files_containing(dir.path(), &refs)
        .into_iter()
        .filter(|p| !p.ends_with("show.py"))
        .collect();
    assert!(
        leaks.is_empty(),
        "a form of the secret was written to {leaks:?}"
    );
}
