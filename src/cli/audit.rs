//! `infra audit tail [-n N] [--json]`, `infra audit verify [--against <checkpoint>] [--json]`,
//! `infra audit checkpoint [--json]`. Each reads the rotated files (`audit.<n>.jsonl`) too.

use engine::record::audit::{Audit, Head};

use super::{FAILED, OK, USAGE, config};
use crate::render;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// The last records.
    Tail {
        /// How many records to show.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Print JSON on stdout: one record per line (JSON Lines), as the log holds them.
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain and the log's end against the head the store kept; report the first bad
    /// record, or the records missing from the end.
    Verify {
        /// Also check that the log still holds a checkpoint's record, with its hash: the `<seq>:<hash>`
        /// `infra audit checkpoint` printed, or a file holding it (or its `--json` form).
        #[arg(long, value_name = "CHECKPOINT")]
        against: Option<String>,
        /// Print JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the log's head (`<seq>:<hash>`) to keep where infra cannot write; `verify --against`
    /// checks it later.
    Checkpoint {
        /// Print JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The largest checkpoint file read.
const MAX_CHECKPOINT_FILE: u64 = 64 * 1024;

pub fn run(cmd: Command) -> u8 {
    let audit = Audit::new(config().audit_path());
    match cmd {
        Command::Tail { limit, json } => match audit.tail(limit) {
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
        Command::Checkpoint { json } => checkpoint(&audit, json),
        Command::Verify { against, json } => {
            let checkpoint = match against.as_deref().map(checkpoint_arg).transpose() {
                Ok(c) => c,
                Err(e) => {
                    render::err(&format!("error: {e}\n"));
                    return USAGE;
                }
            };
            verify(&audit, checkpoint, json)
        }
    }
}

/// A checkpoint given on the command line: a file holding one, or the word itself.
fn checkpoint_arg(arg: &str) -> Result<Head, String> {
    use std::io::Read;
    let path = std::path::Path::new(arg);
    let text = if path.is_file() {
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CHECKPOINT_FILE).read_to_string(&mut text))
            .map_err(|e| format!("cannot read `{arg}`: {e}"))?;
        text
    } else {
        arg.to_owned()
    };
    Head::parse_checkpoint(&text).map_err(|e| format!("`{arg}`: {e}"))
}

fn checkpoint(audit: &Audit, json: bool) -> u8 {
    match super::engine().audit_checkpoint() {
        Ok(head) => {
            if json {
                render::json(&head.to_json());
            } else {
                render::out(&format!("{}\n", head.checkpoint()));
                render::note(&format!(
                    "record {} of `{}`, written {}: keep this line where infra cannot write, and check it later with `infra audit verify --against {}`\n",
                    head.seq,
                    audit.path().display(),
                    head.ts,
                    head.checkpoint()
                ));
            }
            OK
        }
        Err(e) => {
            render::err(&format!("error: {e}\n"));
            FAILED
        }
    }
}

fn verify(audit: &Audit, checkpoint: Option<Head>, json: bool) -> u8 {
    match super::engine().verify_audit(checkpoint) {
        Ok(v) => {
            if json {
                let mut j = serde_json::json!({"ok": v.problem.is_none()});
                if let (Some(o), serde_json::Value::Object(rest)) = (j.as_object_mut(), v.to_json())
                {
                    o.extend(rest);
                }
                render::json(&j);
            } else {
                let mut out = match &v.problem {
                    None if v.files.len() > 1 => format!(
                        "ok: {} records, chain intact across {} files ({} and the rotated files before it)\n",
                        v.records,
                        v.files.len(),
                        audit.path().display()
                    ),
                    None => format!(
                        "ok: {} records, chain intact ({})\n",
                        v.records,
                        audit.path().display()
                    ),
                    Some(p) => format!(
                        "BROKEN at line {} of `{}` (record {}): {}\n{} records before it are intact\n",
                        p.line, p.file, p.seq, p.message, v.records
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
    }
}
