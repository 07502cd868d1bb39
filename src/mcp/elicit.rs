//! Approvals asked of a person in the MCP client (elicitation): what the request says and what an
//! answer means, in plain data.
//!
//! When a call ends `approval_required`, the policy has `elicitation: true`, the client declared form
//! elicitation and the call is not a job (no one waits for a job), `mod.rs` sends `elicitation/create`
//! with [`Ask::message`] and [`schema`]. The person sees the plan's steps (tool, action, target,
//! effect and rendered arguments, bounded), its effects, the rule that asked for approval and the
//! digest, and answers `approve` (required) and an optional `note`. Only an accepted answer with
//! `approve: true` approves ([`answer`]): the engine then holds and audits the approval
//! (`Engine::approve_elicited`) and the same call is made once more, which runs only if its plan
//! still has that digest. A declined, cancelled, unanswered or failed request leaves the refusal as it
//! was, with `result.approval.elicitation` saying what happened (`declined`, `cancelled`,
//! `not_approved`, `unanswered`). The agent cannot answer: the request goes to the client, and no tool
//! argument reaches the engine's approval.

use serde_json::{Value, json};

/// The longest message sent: a plan's steps beyond it are counted, not shown.
const MESSAGE_BUDGET: usize = 4096;

/// What to ask the person, read from a refusal.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub digest: String,
    pub effects: String,
    pub message: String,
}

/// The request for an `approval_required` reply body; `None` for any other reply.
pub fn ask(body: &Value) -> Option<Ask> {
    if body["error"]["kind"] != "approval_required" {
        return None;
    }
    let a = &body["result"]["approval"];
    let digest = a["digest"].as_str()?.to_owned();
    let effects = a["effects"].as_str().unwrap_or("destructive").to_owned();
    let mut m = format!(
        "infra asks you to approve a plan before it runs.\n\nWhy: {} (policy rule `{}`)\nEffects: {effects}\nDigest: {digest}\n",
        a["reason"]
            .as_str()
            .unwrap_or("the policy asks for an approval"),
        a["rule"].as_str().unwrap_or("?"),
    );
    let plan = &a["plan"];
    if let Some(rb) = plan["runbook"].as_str() {
        m.push_str(&format!("Runbook: {rb}\n"));
    }
    m.push_str("Steps:\n");
    let nodes = plan["nodes"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for (i, n) in nodes.iter().enumerate() {
        let args = &n["args"];
        let target = args["target"]
            .as_str()
            .or_else(|| args["profile_name"].as_str())
            .map(|t| format!(" on {t}"))
            .unwrap_or_default();
        let line = format!(
            "- {}: {}.{}{target} ({})\n  {}\n",
            n["id"].as_str().unwrap_or("?"),
            n["tool"].as_str().unwrap_or("?"),
            n["action"].as_str().unwrap_or("?"),
            n["effect"].as_str().unwrap_or("?"),
            shorten(&args.to_string(), 600),
        );
        if m.len() + line.len() > MESSAGE_BUDGET {
            m.push_str(&format!(
                "… and {} more step(s): see the whole plan with `infra approvals list`\n",
                nodes.len() - i
            ));
            break;
        }
        m.push_str(&line);
    }
    m.push_str(
        "\nApprove runs exactly this plan, once, now. Any change to it needs a new approval.",
    );
    Some(Ask {
        digest,
        effects,
        message: m,
    })
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The form the person fills in (an elicitation `requestedSchema`).
pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "approve": {
                "type": "boolean",
                "title": "Approve this plan",
                "description": "Run exactly this plan once, now",
                "default": false,
            },
            "note": {
                "type": "string",
                "title": "Note",
                "description": "Why, for the audit log (a ticket, a reason)",
                "maxLength": 500,
            },
        },
        "required": ["approve"],
    })
}

/// What an answer means: `Ok(note)` when the person approved, else why not (the word put in
/// `result.approval.elicitation`).
pub fn answer(action: &str, content: Option<&Value>) -> Result<String, &'static str> {
    match action {
        "accept" => {
            let c = content.unwrap_or(&Value::Null);
            if c["approve"] == true {
                Ok(shorten(c["note"].as_str().unwrap_or(""), 500))
            } else {
                Err("not_approved")
            }
        }
        "decline" => Err("declined"),
        _ => Err("cancelled"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(nodes: Vec<Value>) -> Value {
        json!({
            "ok": false,
            "error": {"kind": "approval_required", "message": "…"},
            "result": {"approval": {
                "digest": "d1", "effects": "destructive", "rule": "default.destructive",
                "reason": "destructive needs an approval",
                "plan": {"runbook": "call", "nodes": nodes},
            }},
        })
    }

    #[test]
    fn asks_only_for_an_approval_required_reply() {
        assert_eq!(ask(&json!({"ok": true, "result": {}})), None);
        let mut other = refusal(vec![]);
        other["error"]["kind"] = "refused".into();
        assert_eq!(ask(&other), None);
        let mut no_digest = refusal(vec![]);
        no_digest["result"]["approval"]["digest"] = Value::Null;
        assert_eq!(ask(&no_digest), None);
    }

    #[test]
    fn the_message_names_the_steps_rule_and_digest_and_stays_bounded() {
        let a = ask(&refusal(vec![json!({
            "id": "call", "tool": "psql", "action": "exec", "effect": "destructive",
            "args": {"target": "db", "sql": "delete from events"},
        })]))
        .expect("ask");
        assert_eq!(
            (a.digest.as_str(), a.effects.as_str()),
            ("d1", "destructive")
        );
        for part in [
            "psql.exec on db (destructive)",
            "delete from events",
            "default.destructive",
            "Digest: d1",
        ] {
            assert!(a.message.contains(part), "{part} in {}", a.message);
        }
        let many: Vec<Value> = (0..200)
            .map(|i| json!({"id": format!("s{i}"), "tool": "ssh", "action": "exec", "effect": "write", "args": {"command": "x".repeat(900)}}))
            .collect();
        let a = ask(&refusal(many)).expect("ask");
        assert!(
            a.message.len() <= MESSAGE_BUDGET + 200,
            "{}",
            a.message.len()
        );
        assert!(a.message.contains("more step(s)"), "{}", a.message);
    }

    #[test]
    fn only_an_accepted_yes_approves() {
        assert_eq!(
            answer("accept", Some(&json!({"approve": true, "note": "t-1"}))),
            Ok("t-1".into())
        );
        assert_eq!(
            answer("accept", Some(&json!({"approve": "true"}))),
            Err("not_approved")
        );
        assert_eq!(
            answer("accept", Some(&json!({"approve": false}))),
            Err("not_approved")
        );
        assert_eq!(answer("accept", None), Err("not_approved"));
        assert_eq!(
            answer("decline", Some(&json!({"approve": true}))),
            Err("declined")
        );
        assert_eq!(answer("cancel", None), Err("cancelled"));
    }
}
