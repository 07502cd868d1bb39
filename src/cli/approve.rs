//! `infra approve <digest>` and `infra approvals list|revoke|keygen`: a person approving a plan that
//! policy said needs an approval.
//!
//! `approve` finds the plan a refused run asked approval for (by digest or a unique prefix), checks
//! that the stored plan still has that digest, shows it, and signs an approval with the approver's
//! Ed25519 key (`--key` or `INFRA_APPROVER_KEY_FILE`), opened with its passphrase, read from the
//! terminal (`/dev/tty`, not echoed) or, with `--passphrase-stdin`, from standard input. The
//! approval is stored and audited (`approved`: who, when, until when, digest, note). Nothing the
//! agent holds can make one: it needs the key file and its passphrase, and the engine checks the
//! signature against the policy's `approvers` when a run uses it (see `engine::approval`).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use engine::approval;
use engine::record::{AuditKind, AuditRecord};
use serde_json::json;

use super::{FAILED, OK, USAGE, engine};
use crate::render;

/// The variable naming the approver's key file, set in the person's shell (never the server's).
pub const KEY_FILE_VAR: &str = "INFRA_APPROVER_KEY_FILE";

#[derive(clap::Args, Debug)]
pub struct ApproveArgs {
    /// The plan digest an `approval_required` result gave (or a unique prefix of it).
    digest: String,
    /// How long the approval stays valid if unused (`90s`, `15m`, `2h`; at most 7 days).
    #[arg(long, default_value = "15m")]
    ttl: String,
    /// Why, for the audit log.
    #[arg(long, default_value = "")]
    note: String,
    /// The approver key file (else `INFRA_APPROVER_KEY_FILE`).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Read the key's passphrase from standard input instead of the terminal.
    #[arg(long)]
    passphrase_stdin: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Plans waiting for an approval, and approvals given (newest first).
    List {
        /// How many of each to show.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Print JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an approval that has not been used.
    Revoke {
        /// The approval's id, or a unique prefix of it.
        id: String,
    },
    /// Make an approver key: the private key (encrypted with a passphrase) in a new file, and the
    /// public key to list under `approvers` in the policy.
    Keygen {
        /// Where to write the private key (it must not exist yet).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Read the passphrase from standard input instead of the terminal.
        #[arg(long)]
        passphrase_stdin: bool,
    },
}

fn fail(message: &str, code: u8) -> u8 {
    render::err(&format!("error: {message}\n"));
    code
}

/// Reads a passphrase: one line of standard input, or from the terminal without echo.
fn passphrase(from_stdin: bool, prompt: &str) -> Result<String, String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the passphrase from standard input: {e}"))?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_owned());
    }
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| {
            format!("a passphrase is asked on the terminal, and there is none ({e}); a person runs this at a terminal (or pipes it with --passphrase-stdin)")
        })?;
    let old = tcgetattr(&tty).map_err(|e| format!("cannot set up the terminal: {e}"))?;
    let mut quiet = old.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&tty, SetArg::TCSANOW, &quiet)
        .map_err(|e| format!("cannot set up the terminal: {e}"))?;
    let mut w = &tty;
    let _ = write!(w, "{prompt}");
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(&tty, SetArg::TCSANOW, &old);
    let _ = writeln!(w);
    read.map_err(|e| format!("cannot read the passphrase: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

pub fn approve(a: ApproveArgs) -> u8 {
    let ttl = match approval::parse_ttl(&a.ttl) {
        Ok(t) => t,
        Err(e) => return fail(&e, USAGE),
    };
    let engine = engine();
    let policy = engine.policy();
    if !policy.errors.is_empty() {
        render::diagnostics(&policy.errors);
        return fail("the policy has errors; fix it before approving", FAILED);
    }
    let store = match engine.store() {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string(), FAILED),
    };
    let digest = a.digest.trim_start_matches("sha256:");
    let found = match approval::requests(store, digest, 2) {
        Ok(f) => f,
        Err(e) => return fail(&e.to_string(), FAILED),
    };
    let req = match found.as_slice() {
        [r] => r,
        [] => {
            return fail(
                &format!(
                    "no run asked for an approval of plan `{digest}`: approve the digest an `approval_required` result gave (`infra approvals list` shows them)"
                ),
                USAGE,
            );
        }
        _ => {
            return fail(
                &format!("`{digest}` names several plans; give more of the digest"),
                USAGE,
            );
        }
    };
    if engine::plan::digest_of(&req.plan) != req.digest {
        return fail(
            &format!(
                "the stored plan does not have digest {} (the store was changed): nothing was approved",
                req.digest
            ),
            FAILED,
        );
    }
    let Some(key_file) = a
        .key
        .or_else(|| std::env::var_os(KEY_FILE_VAR).map(PathBuf::from))
    else {
        return fail(
            &format!(
                "name your approver key with --key or {KEY_FILE_VAR} (`infra approvals keygen` makes one)"
            ),
            USAGE,
        );
    };
    let pem = match std::fs::read(&key_file) {
        Ok(p) => p,
        Err(e) => {
            return fail(
                &format!("cannot read `{}`: {e}", key_file.display()),
                FAILED,
            );
        }
    };
    render::err(&format!(
        "{}why: {} (rule `{}`), asked by run {}\n",
        super::plan::human(&req.plan),
        req.reason,
        req.rule,
        req.run_id.as_deref().unwrap_or("?")
    ));
    let pass = match passphrase(
        a.passphrase_stdin,
        "passphrase of your approver key (approves the plan above): ",
    ) {
        Ok(p) => p,
        Err(e) => return fail(&e, FAILED),
    };
    let key = match approval::SigningKey::open(&pem, &pass) {
        Ok(k) => k,
        Err(e) => return fail(&e, FAILED),
    };
    let n = approval::NewApproval {
        digest: &req.digest,
        ttl,
        note: &a.note,
    };
    let made = match approval::approve(store, policy.approvers(), &key, &n, engine::ctx::now_utc())
    {
        Ok(m) => m,
        Err(e) => return fail(&e, FAILED),
    };
    let rec = AuditRecord {
        front_end: Some("cli".into()),
        plan_digest: Some(made.digest.clone()),
        effects: Some(req.effects.clone()),
        approval: Some(json!({
            "id": made.id, "approver": made.approver, "digest": made.digest,
            "created_at": made.created_at, "expires_at": made.expires_at, "note": made.note,
        })),
        ..AuditRecord::new(AuditKind::Approved)
    };
    if let Err(e) = engine.audit().record(&rec, true) {
        // not audited, not valid
        let _ = approval::revoke(store, &made.id, engine::ctx::now_utc());
        return fail(&format!("{e}; the approval was withdrawn"), FAILED);
    }
    render::out(&format!(
        "approved plan {} as {} until {} (approval {}); it can be used once\n",
        made.digest, made.approver, made.expires_at, made.id
    ));
    OK
}

pub fn run(cmd: Command) -> u8 {
    match cmd {
        Command::Keygen {
            out,
            passphrase_stdin,
        } => keygen(&out, passphrase_stdin),
        Command::List { limit, json } => list(limit, json),
        Command::Revoke { id } => {
            let engine = engine();
            let store = match engine.store() {
                Ok(s) => s,
                Err(e) => return fail(&e.to_string(), FAILED),
            };
            match approval::revoke(store, &id, engine::ctx::now_utc()) {
                Ok(a) => {
                    let rec = AuditRecord {
                        front_end: Some("cli".into()),
                        plan_digest: Some(a.digest.clone()),
                        approval: Some(
                            json!({"id": a.id, "approver": a.approver, "digest": a.digest}),
                        ),
                        ..AuditRecord::new(AuditKind::Revoked)
                    };
                    let _ = engine.audit().record(&rec, true);
                    render::out(&format!("revoked approval {}\n", a.id));
                    OK
                }
                Err(e) => fail(&e, FAILED),
            }
        }
    }
}

fn keygen(out: &std::path::Path, from_stdin: bool) -> u8 {
    if out.exists() {
        return fail(
            &format!("`{}` exists; name a new file", out.display()),
            USAGE,
        );
    }
    let pass = match passphrase(from_stdin, "passphrase for the new approver key: ") {
        Ok(p) => p,
        Err(e) => return fail(&e, FAILED),
    };
    if !from_stdin {
        match passphrase(false, "the same passphrase again: ") {
            Ok(again) if again == pass => {}
            Ok(_) => return fail("the passphrases differ; nothing was written", FAILED),
            Err(e) => return fail(&e, FAILED),
        }
    }
    let (pem, public) = match approval::keygen(&pass) {
        Ok(k) => k,
        Err(e) => return fail(&e, USAGE),
    };
    use std::os::unix::fs::OpenOptionsExt;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .and_then(|mut f| f.write_all(&pem));
    if let Err(e) = written {
        return fail(&format!("cannot write `{}`: {e}", out.display()), FAILED);
    }
    render::out(&format!(
        "{public}\nwrote the private key to {} (encrypted with your passphrase).\n\
         Add the public key to the policy (`<profiles>/policy.yaml`):\n  approvers:\n    - {{name: <you>, key: \"{public}\"}}\n\
         and set {KEY_FILE_VAR}={} in your own shell only, never in the agent's or the MCP server's environment.\n",
        out.display(),
        out.display()
    ));
    OK
}

fn list(limit: usize, as_json: bool) -> u8 {
    let engine = engine();
    let store = match engine.store() {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string(), FAILED),
    };
    let now = engine::ctx::now_utc();
    let (reqs, given) = match (
        approval::requests(store, "", limit),
        approval::list(store, limit),
    ) {
        (Ok(r), Ok(g)) => (r, g),
        (Err(e), _) | (_, Err(e)) => return fail(&e.to_string(), FAILED),
    };
    if as_json {
        render::json(&json!({
            "requests": reqs.iter().map(|r| json!({
                "digest": r.digest, "effects": r.effects, "rule": r.rule, "reason": r.reason,
                "run_id": r.run_id, "requested_at": r.requested_at,
                "runbook": r.plan["runbook"],
            })).collect::<Vec<_>>(),
            "approvals": given.iter().map(|a| a.to_json(now)).collect::<Vec<_>>(),
        }));
        return OK;
    }
    let mut out = String::from("asked for (approve with `infra approve <digest>`):\n");
    for r in &reqs {
        out.push_str(&format!(
            "  {}  {}  {}  {}  ({})\n",
            &r.digest[..16.min(r.digest.len())],
            r.requested_at,
            r.plan["runbook"].as_str().unwrap_or("?"),
            r.effects,
            r.rule
        ));
    }
    out.push_str("approvals:\n");
    for a in &given {
        out.push_str(&format!(
            "  {}  {}  {}  {}  until {}  {}\n",
            &a.id[..8.min(a.id.len())],
            &a.digest[..16.min(a.digest.len())],
            a.approver,
            a.state(now),
            a.expires_at,
            a.note
        ));
    }
    render::out(&out);
    OK
}
