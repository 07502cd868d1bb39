//! `infra report` and `infra graph --format svg` on real runs: a failing step with hostile stderr,
//! a retried step, `finally` and a rollback; the run's own `report.html`, read back as an artifact.

use std::path::Path;
use std::process::Command as Std;

use crate::project::Project;

const HOSTILE: &str = r#"<script>alert("x")</script> ]]> & 'q'"#;

fn failing() -> Project {
    Project::new().unsafe_local().runbook(
        "deploy",
        &format!(
            "steps:\n  - id: build\n    tool: local\n    args: {{action: exec, command: 'echo built'}}\n    rollback: {{tool: local, args: {{action: exec, command: 'echo undo'}}}}\n  - id: flaky\n    needs: [build]\n    tool: local\n    retry: {{attempts: 2, delay_ms: 1, on: [nonzero_exit]}}\n    args: {{action: exec, command: 'for i in $(seq 1 30); do echo \"noise $i\" >&2; done; printf \"%s\\n\" {} >&2; exit 3'}}\n  - id: after\n    needs: [flaky]\n    tool: local\n    args: {{action: exec, command: 'echo never'}}\nfinally:\n  - id: cleanup\n    tool: local\n    args: {{action: exec, command: 'echo clean'}}\n",
            shell_single(HOSTILE)
        ),
    )
}

/// `s` as one single-quoted shell word, written inside a YAML single-quoted scalar.
fn shell_single(s: &str) -> String {
    // YAML doubles a single quote; the shell ends, escapes and reopens one
    format!("''{}''", s.replace('\'', r"''\''''"))
}

/// Checks well-formedness with Python's XML parser (CI has `python3` for the MCP end-to-end suite).
fn parses_as_xml(path: &Path) {
    let out = Std::new("python3")
        .args([
            "-c",
            "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])",
        ])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{} is not well-formed XML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cli_report_of_a_failing_run() {
    let p = failing();
    let out = p
        .infra()
        .args(["run", "deploy", "--json"])
        .output()
        .expect("run");
    let v = crate::stdout_json(&out);
    assert_eq!(v["status"], "failed", "{v}");
    let run_id = v["run_id"].as_str().expect("id").to_owned();
    let report_uri = v["report"].as_str().expect("a report URI");
    assert!(report_uri.ends_with("/report.html"), "{report_uri}");
    let rel = report_uri.strip_prefix("artifact://").expect("scheme");
    let own = std::fs::read_to_string(p.path().join(rel)).expect("the run's report.html");
    assert!(p.path().join(rel).with_file_name("plan.json").is_file());

    // `infra report` makes the same report from the records
    let file = p.path().join("out/r.html");
    std::fs::create_dir_all(file.parent().expect("dir")).expect("mkdir");
    let out = p
        .infra()
        .args(["report", &run_id[..8], "-o"])
        .arg(&file)
        .output()
        .expect("report");
    assert!(out.status.success(), "{out:?}");
    let html = std::fs::read_to_string(&file).expect("written");
    for h in [&html, &own] {
        let at = |s: &str| h.find(s).unwrap_or_else(|| panic!("no {s}"));
        assert!(at("id=\"summary\"") < at("id=\"why\""));
        assert!(at("id=\"why\"") < at("id=\"graph\""));
        assert!(at("id=\"graph\"") < at("id=\"timeline\""));
        assert!(at("id=\"timeline\"") < at("id=\"steps\""));
        assert!(h.contains("http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'sha256-"));
        assert!(!h.to_lowercase().contains("<script"), "no script at all");
        assert!(!h.contains("https://"));
        // the failing step, its error, the last 20 lines of its stderr, escaped
        assert!(h.contains("<code>flaky</code>"));
        assert!(h.contains("nonzero_exit"));
        assert!(h.contains("noise 30") && h.contains("noise 12\n"));
        assert!(!h.contains("noise 11\n"), "only the last 20 lines");
        assert!(h.contains(
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; ]]&gt; &amp; &#39;q&#39;"
        ));
        // retried, skipped with a reason, finally and rollback shown
        assert!(h.contains("failed · 2 attempts"));
        assert!(h.contains("bar s-failed retry"));
        assert!(h.contains("skipped: "));
        assert!(h.contains("finally · local.exec"));
        assert!(h.contains("rollback of build"));
    }
    // links: relative in the run's directory, absolute elsewhere
    assert!(own.contains("href=\"./flaky/stderr\""));
    assert!(html.contains("href=\"file:///"));
    parses_as_xml(&file);

    // to stdout, the same bytes again
    let again = p
        .infra()
        .args(["report", &run_id, "-o", "-"])
        .output()
        .expect("report");
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        html.replace(
            &format!(
                "file://{}/",
                engine::report::html::percent(
                    &p.path().join(rel).parent().expect("dir").to_string_lossy()
                )
            ),
            "./",
        )
    );

    // the report the run wrote at its end, from what it held in memory, is the one its records on
    // disk draw
    assert_eq!(String::from_utf8_lossy(&again.stdout), own);

    // the text summary names the report
    let out = p.infra().args(["run", "deploy"]).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("report: ") && text.contains("report.html"),
        "{text}"
    );

    // and it is an artifact
    let out = p
        .infra()
        .args(["artifacts", "get", report_uri, "--max-bytes", "2000000"])
        .output()
        .expect("get");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("<!DOCTYPE html>"));
}

#[test]
fn cli_graph_as_svg() {
    let p = failing();
    let out = p
        .infra()
        .args(["graph", "deploy", "--format", "svg"])
        .output()
        .expect("graph");
    assert!(out.status.success(), "{out:?}");
    let svg = String::from_utf8(out.stdout).expect("utf-8");
    assert!(svg.starts_with("<?xml"));
    // four steps and a rollback, no statuses
    assert_eq!(svg.matches("class=\"n s-plan\"").count(), 5);
    assert!(svg.contains("rollback of build") && svg.contains("finally · local.exec"));
    assert!(!svg.contains("<script"));
    let file = p.path().join("g.svg");
    std::fs::write(&file, &svg).expect("write");
    parses_as_xml(&file);
}

#[test]
fn cli_single_calls_get_no_report() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let o = crate::call_tool(
        &e,
        "local",
        serde_json::json!({"action": "exec", "command": "echo out; echo err >&2; exit 1"}),
        &engine::run::CancelToken::new(),
    );
    assert_eq!(o.status.as_str(), "failed");
    let found = walk(&p.path().join("runs"));
    assert!(found.iter().any(|f| f.ends_with("/stderr")), "{found:?}");
    assert!(
        !found
            .iter()
            .any(|f| f.ends_with("report.html") || f.ends_with("plan.json")),
        "{found:?}"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

/// Decodes a PNG (8-bit RGB or RGBA, as Chromium writes) with Python's zlib and prints how many
/// pixels have each of the given colours, one count a line.
const PNG_COLOURS: &str = r#"
import sys, zlib, struct
d = open(sys.argv[1], 'rb').read()
assert d[:8] == b'\x89PNG\r\n\x1a\n'
i, idat = 8, b''
while i < len(d):
    n, = struct.unpack('>I', d[i:i+4]); t = d[i+4:i+8]; c = d[i+8:i+8+n]; i += 12 + n
    if t == b'IHDR': w, h, bd, ct = struct.unpack('>IIBB', c[:10])
    elif t == b'IDAT': idat += c
assert bd == 8 and ct in (2, 6)
bpp = 3 if ct == 2 else 4
raw = zlib.decompress(idat); stride = w * bpp; prev = bytearray(stride); p = 0
want = [bytes.fromhex(x) for x in sys.argv[2:]]; counts = [0] * len(want)
for y in range(h):
    f = raw[p]; p += 1; line = bytearray(raw[p:p+stride]); p += stride
    for x in range(stride):
        a = line[x-bpp] if x >= bpp else 0; b = prev[x]; c = prev[x-bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        px = bytes(line[x:x+3])
        for k, col in enumerate(want):
            if px == col: counts[k] += 1
    prev = line
print('\n'.join(map(str, counts)))
"#;

/// What the browser checks in a copy of the report with this script added (the report itself runs
/// none): every label inside its box, the page no wider than the window.
const GEOMETRY: &str = r#"<script>
const bad = [];
for (const g of document.querySelectorAll('g.n')) {
  const r = g.querySelector('rect.b').getBoundingClientRect();
  for (const t of g.querySelectorAll('text')) {
    const b = t.getBoundingClientRect();
    if (b.left < r.left || b.right > r.right || b.top < r.top || b.bottom > r.bottom) bad.push(t.textContent);
  }
}
for (const t of document.querySelectorAll('.tl .lbl')) {
  const b = t.getBoundingClientRect(), s = t.ownerSVGElement.getBoundingClientRect();
  if (b.right > s.left + 228) bad.push(t.textContent);
}
document.body.setAttribute('data-overflow', JSON.stringify(bad));
document.body.setAttribute('data-nodes', String(document.querySelectorAll('g.n').length));
document.body.setAttribute('data-wide', String(document.documentElement.scrollWidth > window.innerWidth));
</script>"#;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Std::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// The report of a real failing run in headless Chromium: a screenshot with the status colours, and
/// no label outside its box or the window. `.ci/run` installs Chromium and sets
/// `INFRA_REQUIRE_BROWSER=1`; elsewhere the test says it was skipped.
#[test]
#[allow(clippy::print_stderr)] // says so when there is no browser
fn cli_report_in_a_browser() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("INFRA_REQUIRE_BROWSER").is_none(),
            "no chromium: install it (`.ci/run` does)"
        );
        eprintln!("cli_report_in_a_browser: no chromium here, not checked");
        return;
    };
    let long = "a-step-whose-identifier-is-far-too-long-for-any-box_mmmmwwww";
    let p = failing().runbook(
        "wide",
        &format!(
            "flow: dag\nsteps:\n{}  - {{id: {long}, tool: local, args: {{action: exec, command: 'echo x >&2; exit 1'}}}}\n",
            (0..14)
                .map(|i| format!("  - {{id: par-{i}, tool: local, args: {{action: exec, command: 'true'}}}}\n"))
                .collect::<String>()
        ),
    );
    let mut reports = Vec::new();
    for rb in ["deploy", "wide"] {
        let out = p.infra().args(["run", rb, "--json"]).output().expect("run");
        let v = crate::stdout_json(&out);
        let rel = v["report"]
            .as_str()
            .expect("report")
            .strip_prefix("artifact://")
            .expect("uri")
            .to_owned();
        reports.push(p.path().join(rel));
    }
    let run = |args: &[&str], page: &Path| {
        let out = Std::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .arg("--virtual-time-budget=3000")
            .args(args)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    for (k, report) in reports.iter().enumerate() {
        // the geometry, measured by the browser in a copy that may run the check
        let html = std::fs::read_to_string(report).expect("report");
        let csp = html
            .find("<meta http-equiv=\"Content-Security-Policy\"")
            .expect("csp");
        let end = html[csp..].find("/>").expect("meta ends") + csp + 2;
        let checked = format!("{}{}", &html[..csp], &html[end..])
            .replace("</body>", &format!("{GEOMETRY}</body>"));
        let copy = p.path().join(format!("checked-{k}.html"));
        std::fs::write(&copy, checked).expect("copy");
        let dom = String::from_utf8_lossy(&run(&["--window-size=1400,900", "--dump-dom"], &copy))
            .into_owned();
        assert!(
            dom.contains("data-overflow=\"[]\""),
            "labels overflow: {}",
            &dom[dom.find("data-overflow").unwrap_or(0)..][..300.min(dom.len())]
        );
        assert!(
            dom.contains("data-wide=\"false\""),
            "the page is wider than the window"
        );
        assert!(!dom.contains("data-nodes=\"0\""), "no node drawn");
        // screenshots of the report itself (its CSP on): the first screen shows the failure (red
        // fill and border on white); the whole page also has the succeeded steps' green
        for (size, colours) in [
            ("1400,900", &["ffebee", "c62828", "ffffff"][..]),
            ("1400,2000", &["ffebee", "c62828", "e8f5e9", "ffffff"][..]),
        ] {
            let shot = p.path().join(format!("shot-{k}-{size}.png"));
            run(
                &[
                    &format!("--window-size={size}"),
                    &format!("--screenshot={}", shot.display()),
                ],
                report,
            );
            let out = Std::new("python3")
                .args(["-c", PNG_COLOURS])
                .arg(&shot)
                .args(colours)
                .output()
                .expect("python3");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let counts: Vec<u64> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim().parse().expect("a count"))
                .collect();
            for (c, n) in colours.iter().zip(&counts) {
                assert!(*n > 50, "colour #{c}: {n} pixels in {}", shot.display());
            }
        }
    }
}
