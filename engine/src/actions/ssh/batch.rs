//! `ssh.batch`: one command on several targets, named or by label. Every target and the command are
//! checked before anything connects; then a bounded pool of threads (`parallel`, 4 by default) runs
//! the command on each target through its pooled session, with per-target artifacts under
//! `<step>/<target>/`. One result per target, the named ones first, then the label's; any failure
//! makes the call a `partial_failure` that still carries every result.

use crate::error::ErrorKind;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::args::BatchArgs;
use super::session::Cx;
use super::{BATCH_CAP, capture, remote_command, run_on};
use crate::actions::{ActionError, Call};

pub(super) fn batch(call: &Call<'_>, cx: &Cx<'_>, args: &BatchArgs) -> Result<Value, ActionError> {
    let command = args.command_args();
    let mut names: Vec<String> = args.targets.clone().unwrap_or_default();
    if let Some(label) = &args.label {
        for (n, t) in &cx.targets.targets {
            if t.labels.iter().any(|l| l == label) && !names.contains(n) {
                names.push(n.clone());
            }
        }
        if names.is_empty() {
            return Err(ActionError::new(
                ErrorKind::NotFound,
                format!("no target has the label `{label}`"),
            )
            .hint("`context {action: targets}` lists targets and their labels"));
        }
    }
    if names.is_empty() {
        return Err(ActionError::new(
            ErrorKind::InvalidArgs,
            "give `targets` (names) or `label`",
        ));
    }
    for n in &names {
        cx.endpoint(n)?;
    }
    remote_command(call, &command)?;
    let parallel = args.parallel.unwrap_or(4).clamp(1, 32) as usize;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Value>>> = Mutex::new(vec![None; names.len()]);
    std::thread::scope(|s| {
        for _ in 0..parallel.min(names.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(name) = names.get(i) else { break };
                    let cap = capture(call, args.max_bytes, BATCH_CAP, Some(name));
                    let r = remote_command(call, &command)
                        .and_then(|cmd| run_on(call, cx, name, cmd, &cap));
                    let v = match r {
                        Ok(v) => v,
                        Err(e) => {
                            let mut v = e.result.clone().unwrap_or_else(|| json!({}));
                            v["target"] = name.as_str().into();
                            v["ok"] = false.into();
                            v["error"] = e.to_json();
                            v
                        }
                    };
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(v);
                }
            });
        }
    });
    let results: Vec<Value> = results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect();
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r["ok"] != true)
        .filter_map(|r| r["target"].as_str())
        .collect();
    let artifacts: Vec<Value> = results
        .iter()
        .flat_map(|r| r["artifacts"].as_array().cloned().unwrap_or_default())
        .collect();
    let out = json!({
        "targets": names,
        "succeeded": results.len() - failed.len(),
        "failed": failed,
        "results": results,
        "artifacts": artifacts,
        "ok": failed.is_empty(),
    });
    if failed.is_empty() {
        Ok(out)
    } else {
        Err(ActionError::new(
            ErrorKind::PartialFailure,
            format!(
                "{} of {} targets failed: {}",
                failed.len(),
                names.len(),
                failed.join(", ")
            ),
        )
        .hint("see `results` for each target's error and output")
        .with_result(out))
    }
}
