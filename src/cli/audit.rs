//! `infra audit tail [-n N] [--json]`, `infra audit verify`.

use super::{FAILED, OK, config};
use crate::render;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// The last records.
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        n: usize,
        /// One JSON record per line.
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain and the log's end against the head the store kept; report the first bad
    /// record, or the records missing from the end.
    Verify {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: Command) -> u8 {
    let audit = engine::record::Audit::new(config().audit_path());
    match cmd {
        Command::Tail { n, json } => match audit.tail(n) {
            Ok(records) => {
                let mut out = String::new();
                for r in records {
                    if json {
                        out.push_str(&r.to_string());
                    } else {
                        let s =
                            |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
                        let what = match (s("tool").as_str(), s("action").as_str()) {
                            ("", _) => s("runbook"),
                            (t, a) => format!("{t}.{a} {}", s("step")),
                        };
                        out.push_str(&format!(
                            "{:>6}  {}  {:12} {}{}",
                            r.get("seq").map(ToString::to_string).unwrap_or_default(),
                            s("ts"),
                            s("kind"),
                            what,
                            r.get("error").map(|e| format!("  {e}")).unwrap_or_default()
                        ));
                    }
                    out.push('\n');
                }
                render::out(&out);
                OK
            }
            Err(e) => {
                render::err(&format!(
                    "error: cannot read `{}`: {e}\n",
                    audit.path().display()
                ));
                FAILED
            }
        },
        Command::Verify { json } => match super::engine().verify_audit() {
            Ok(v) => {
                if json {
                    let mut j = serde_json::json!({"ok": v.problem.is_none()});
                    if let (Some(o), serde_json::Value::Object(rest)) =
                        (j.as_object_mut(), v.to_json())
                    {
                        o.extend(rest);
                    }
                    render::json(&j);
                } else {
                    let mut out = match &v.problem {
                        None => format!(
                            "ok: {} records, chain intact ({})\n",
                            v.records,
                            audit.path().display()
                        ),
                        Some(p) => format!(
                            "BROKEN at line {} (record {}): {}\n{} records before it are intact\n",
                            p.line, p.seq, p.message, v.records
                        ),
                    };
                    for n in &v.notes {
                        out.push_str(&format!("note: {n}\n"));
                    }
                    render::out(&out);
                }
                if v.problem.is_none() { OK } else { FAILED }
            }
            Err(e) => {
                render::err(&format!(
                    "error: cannot read `{}`: {e}\n",
                    audit.path().display()
                ));
                FAILED
            }
        },
    }
}
