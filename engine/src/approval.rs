//! Approvals bound to a rendered plan's digest, signed by a person, single-use, expiring.
//!
//! The trust boundary: an approval counts only with an Ed25519 signature that verifies under a key
//! listed in the policy's `approvers`. The private key lives in a file encrypted with a passphrase
//! (`keygen`), which `infra approve` asks the person for; the engine only ever holds public keys. So
//! nothing infra gives an agent (MCP tools, `local`, the store) can make an approval: running
//! `infra approve` needs the passphrase, and a row written into the store without a signature by an
//! approver's key is ignored.
//!
//! The store keeps `approval_requests` (the rendered plan a refused run asked approval for, so a person
//! sees it before approving; its digest is checked again against the plan) and `approvals` (id,
//! digest, approver, times, note, signature, and when and by which run it was used or revoked).
//! `consume` takes the first valid approval of a digest and marks it used in one conditional update,
//! so two runs cannot use one approval.
//!
//! Secret inputs and credential arguments are placeholders in the rendered plan, so a digest does
//! not depend on their values. A nested runbook known when the plan is compiled is in its parent's
//! digest by its definition digest (its text and its own children's), and the [`Grant`] a run holds
//! covers only those nested plans: a child whose text changed since, or one known only when it
//! runs, needs an approval of its own. Single use is kept by the store and by the engine that used
//! it (a store set back is refused by that engine, not by a new one).

use chrono::{DateTime, Duration, Utc};
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::sign::{Signer, Verifier};
use rusqlite::{OptionalExtension, params};
use serde_json::{Value, json};

use crate::policy::Approver;
use crate::store::{Store, StoreError};

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS approval_requests (
    digest TEXT PRIMARY KEY NOT NULL,
    plan TEXT NOT NULL,
    effects TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    run_id TEXT,
    requested_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY NOT NULL,
    digest TEXT NOT NULL,
    approver TEXT NOT NULL,
    key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    note TEXT NOT NULL,
    signature TEXT NOT NULL,
    used_at TEXT,
    used_by TEXT,
    revoked_at TEXT
);
CREATE INDEX IF NOT EXISTS approvals_digest ON approvals(digest);
";

/// The shortest passphrase `keygen` accepts.
pub const MIN_PASSPHRASE: usize = 12;

/// The proof that a run was approved, handed by the engine to the run's nested runs.
#[derive(Clone, Debug)]
pub struct Grant {
    pub(crate) id: String,
    pub(crate) approver: String,
    /// The definition digests of the runbooks the approved plan nests: a nested run is covered only
    /// when its plan is one of them (`Plan::definition_digest`).
    pub(crate) covers: Vec<String>,
}

impl Grant {
    /// Whether a nested run whose plan has this definition digest is covered.
    pub(crate) fn covers(&self, definition: &str) -> bool {
        self.covers.iter().any(|d| d == definition)
    }

    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "approver": self.approver})
    }
}

/// One approval as stored.
#[derive(Clone, Debug)]
pub struct Approval {
    pub id: String,
    pub digest: String,
    pub approver: String,
    pub key: String,
    pub created_at: String,
    pub expires_at: String,
    pub note: String,
    pub signature: String,
    pub used_at: Option<String>,
    pub used_by: Option<String>,
    pub revoked_at: Option<String>,
}

impl Approval {
    /// The bytes the approver signs.
    fn message(&self) -> Vec<u8> {
        format!(
            "infra-approval-v1\n{}\n{}\n{}\n{}\n{}\n{}",
            self.id, self.digest, self.created_at, self.expires_at, self.approver, self.note
        )
        .into_bytes()
    }

    /// Its state at `now`: `valid`, `used`, `revoked` or `expired`.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.used_at.is_some() {
            "used"
        } else if expired(&self.expires_at, now) {
            "expired"
        } else {
            "valid"
        }
    }

    pub fn to_json(&self, now: DateTime<Utc>) -> Value {
        json!({
            "id": self.id, "digest": self.digest, "approver": self.approver,
            "created_at": self.created_at, "expires_at": self.expires_at, "note": self.note,
            "state": self.state(now), "used_at": self.used_at, "used_by": self.used_by,
            "revoked_at": self.revoked_at,
        })
    }
}

fn expired(expires_at: &str, now: DateTime<Utc>) -> bool {
    DateTime::parse_from_rfc3339(expires_at).map_or(true, |t| now >= t)
}

/// A plan a refused run asked approval for.
#[derive(Clone, Debug)]
pub struct Request {
    pub digest: String,
    pub plan: Value,
    pub effects: String,
    pub rule: String,
    pub reason: String,
    pub run_id: Option<String>,
    pub requested_at: String,
}

fn hex(b: &[u8]) -> String {
    dsl::analyze::hex(b)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A new approver key: the private key as PKCS#8 PEM encrypted with `passphrase`, and the public key
/// as the policy names it (`ed25519:<hex>`).
pub fn keygen(passphrase: &str) -> Result<(Vec<u8>, String), String> {
    if passphrase.chars().count() < MIN_PASSPHRASE {
        return Err(format!(
            "the passphrase must have at least {MIN_PASSPHRASE} characters"
        ));
    }
    let key = PKey::generate_ed25519().map_err(|e| e.to_string())?;
    let pem = key
        .private_key_to_pem_pkcs8_passphrase(
            openssl::symm::Cipher::aes_256_cbc(),
            passphrase.as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    Ok((pem, public_name(&key)?))
}

fn public_name<T: openssl::pkey::HasPublic>(key: &PKey<T>) -> Result<String, String> {
    Ok(format!(
        "ed25519:{}",
        hex(&key.raw_public_key().map_err(|e| e.to_string())?)
    ))
}

/// An approver's private key, opened with its passphrase.
#[derive(Debug)]
pub struct SigningKey {
    key: PKey<Private>,
    /// `ed25519:<hex>`.
    pub public: String,
}

impl SigningKey {
    pub fn open(pem: &[u8], passphrase: &str) -> Result<SigningKey, String> {
        let key = PKey::private_key_from_pem_passphrase(pem, passphrase.as_bytes())
            .map_err(|_| "the key cannot be opened: wrong passphrase, or not an approver key")?;
        if key.id() != Id::ED25519 {
            return Err("the key is not an Ed25519 approver key".into());
        }
        let public = public_name(&key)?;
        Ok(SigningKey { key, public })
    }
}

fn verifying_key(name: &str) -> Option<PKey<Public>> {
    let raw = unhex(name.strip_prefix("ed25519:")?)?;
    PKey::public_key_from_raw_bytes(&raw, Id::ED25519).ok()
}

fn verifies(a: &Approval) -> bool {
    let (Some(key), Some(sig)) = (verifying_key(&a.key), unhex(&a.signature)) else {
        return false;
    };
    Verifier::new_without_digest(&key)
        .and_then(|mut v| v.verify_oneshot(&sig, &a.message()))
        .unwrap_or(false)
}

/// What `approve` makes.
#[derive(Debug)]
pub struct NewApproval<'a> {
    pub digest: &'a str,
    pub ttl: Duration,
    pub note: &'a str,
}

/// Signs an approval of `digest` with `key`, whose public key must be an approver of the policy,
/// and stores it.
pub fn approve(
    store: &Store,
    approvers: &[Approver],
    key: &SigningKey,
    n: &NewApproval<'_>,
    now: DateTime<Utc>,
) -> Result<Approval, String> {
    let Some(who) = approvers.iter().find(|a| a.key == key.public) else {
        return Err(format!(
            "this key is not an approver in the policy: add `approvers: [{{name: <you>, key: \"{}\"}}]` to policy.yaml",
            key.public
        ));
    };
    let mut a = Approval {
        id: crate::ctx::new_id(),
        digest: n.digest.to_owned(),
        approver: who.name.clone(),
        key: key.public.clone(),
        created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        expires_at: (now + n.ttl).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        note: n.note.to_owned(),
        signature: String::new(),
        used_at: None,
        used_by: None,
        revoked_at: None,
    };
    let sig = Signer::new_without_digest(&key.key)
        .and_then(|mut s| s.sign_oneshot_to_vec(&a.message()))
        .map_err(|e| e.to_string())?;
    a.signature = hex(&sig);
    store
        .with_tables(TABLES, |c| {
            c.execute(
                "INSERT INTO approvals(id, digest, approver, key, created_at, expires_at, note, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![a.id, a.digest, a.approver, a.key, a.created_at, a.expires_at, a.note, a.signature],
            )
        })
        .map_err(|e| e.to_string())?;
    Ok(a)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Approval> {
    Ok(Approval {
        id: r.get(0)?,
        digest: r.get(1)?,
        approver: r.get(2)?,
        key: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        note: r.get(6)?,
        signature: r.get(7)?,
        used_at: r.get(8)?,
        used_by: r.get(9)?,
        revoked_at: r.get(10)?,
    })
}

const COLUMNS: &str = "id, digest, approver, key, created_at, expires_at, note, signature, used_at, used_by, revoked_at";

/// Approvals, newest first.
pub fn list(store: &Store, limit: usize) -> Result<Vec<Approval>, StoreError> {
    store.with_tables(TABLES, |c| {
        let mut st = c.prepare(&format!(
            "SELECT {COLUMNS} FROM approvals ORDER BY created_at DESC LIMIT ?1"
        ))?;
        let rows = st.query_map(params![limit as i64], row)?;
        rows.collect()
    })
}

/// Revokes an approval (by id or unique prefix) that has not been used. Returns it.
pub fn revoke(store: &Store, id: &str, now: DateTime<Utc>) -> Result<Approval, String> {
    let ts = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let found: Vec<Approval> = store
        .with_tables(TABLES, |c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM approvals WHERE substr(id, 1, length(?1)) = ?1"
            ))?;
            let rows = st.query_map(params![id], row)?;
            rows.collect()
        })
        .map_err(|e| e.to_string())?;
    let a = match found.as_slice() {
        [a] => a.clone(),
        [] => return Err(format!("there is no approval `{id}`")),
        _ => {
            return Err(format!(
                "`{id}` names several approvals; give more of the id"
            ));
        }
    };
    if a.used_at.is_some() || a.revoked_at.is_some() {
        return Err(format!("approval `{}` is {} already", a.id, a.state(now)));
    }
    store
        .with_tables(TABLES, |c| {
            c.execute(
                "UPDATE approvals SET revoked_at = ?2 WHERE id = ?1 AND used_at IS NULL",
                params![a.id, ts],
            )
        })
        .map_err(|e| e.to_string())?;
    Ok(Approval {
        revoked_at: Some(ts),
        ..a
    })
}

/// Uses the first valid approval of `digest` for run `run_id`: not revoked, not used, not expired,
/// signed by a key the policy lists under the approver's name. `Err` says why none counts.
pub fn consume(
    store: &Store,
    approvers: &[Approver],
    digest: &str,
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<Grant, String> {
    let found: Vec<Approval> = store
        .with_tables(TABLES, |c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM approvals WHERE digest = ?1 ORDER BY created_at"
            ))?;
            let rows = st.query_map(params![digest], row)?;
            rows.collect()
        })
        .map_err(|e| e.to_string())?;
    if found.is_empty() {
        return Err("no approval was given for this plan".into());
    }
    let mut why = Vec::new();
    for a in found {
        let listed = approvers
            .iter()
            .any(|x| x.name == a.approver && x.key == a.key);
        let reason = match a.state(now) {
            "revoked" => Some(format!("approval {} was revoked", short(&a.id))),
            "used" => Some(format!(
                "approval {} was already used by run {}",
                short(&a.id),
                a.used_by.as_deref().unwrap_or("?")
            )),
            "expired" => Some(format!(
                "approval {} expired at {}",
                short(&a.id),
                a.expires_at
            )),
            _ if !listed => Some(format!(
                "approval {} is not by an approver of the policy",
                short(&a.id)
            )),
            _ if !verifies(&a) => Some(format!("approval {} has no valid signature", short(&a.id))),
            _ => None,
        };
        if let Some(r) = reason {
            why.push(r);
            continue;
        }
        let ts = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let taken = store
            .with_tables(TABLES, |c| {
                c.execute(
                    "UPDATE approvals SET used_at = ?2, used_by = ?3
                     WHERE id = ?1 AND used_at IS NULL AND revoked_at IS NULL",
                    params![a.id, ts, run_id],
                )
            })
            .map_err(|e| e.to_string())?;
        if taken == 1 {
            return Ok(Grant {
                id: a.id,
                approver: a.approver,
                covers: Vec::new(),
            });
        }
        why.push(format!(
            "approval {} was taken by another run",
            short(&a.id)
        ));
    }
    Err(why.join("; "))
}

fn short(id: &str) -> &str {
    &id[..8.min(id.len())]
}

/// Keeps the plan a refused run asked approval for (the newest request of a digest wins).
pub fn request(store: &Store, r: &Request) -> Result<(), StoreError> {
    store.with_tables(TABLES, |c| {
        c.execute(
            "INSERT INTO approval_requests(digest, plan, effects, rule, reason, run_id, requested_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(digest) DO UPDATE SET plan = excluded.plan, effects = excluded.effects,
               rule = excluded.rule, reason = excluded.reason, run_id = excluded.run_id,
               requested_at = excluded.requested_at",
            params![
                r.digest,
                r.plan.to_string(),
                r.effects,
                r.rule,
                r.reason,
                r.run_id,
                r.requested_at
            ],
        )
        .map(|_| ())
    })
}

/// Requests whose digest starts with `prefix`, newest first.
pub fn requests(store: &Store, prefix: &str, limit: usize) -> Result<Vec<Request>, StoreError> {
    store.with_tables(TABLES, |c| {
        let mut st = c.prepare(
            "SELECT digest, plan, effects, rule, reason, run_id, requested_at FROM approval_requests
             WHERE substr(digest, 1, length(?1)) = ?1 ORDER BY requested_at DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![prefix, limit as i64], |r| {
            let plan: String = r.get(1)?;
            Ok(Request {
                digest: r.get(0)?,
                plan: serde_json::from_str(&plan).unwrap_or(Value::Null),
                effects: r.get(2)?,
                rule: r.get(3)?,
                reason: r.get(4)?,
                run_id: r.get(5)?,
                requested_at: r.get(6)?,
            })
        })?;
        rows.collect()
    })
}

/// Approval requests made before `before`, and approvals that expired before it (an expired
/// approval can never be used again, so forgetting it cannot let it be used twice): counted, or
/// deleted when `delete`. Retention's, with its `max_age_days`.
pub fn prune(store: &Store, before: &str, delete: bool) -> Result<u64, StoreError> {
    store.with_tables(TABLES, |c| {
        let mut n = 0;
        for (table, column) in [
            ("approval_requests", "requested_at"),
            ("approvals", "expires_at"),
        ] {
            n += if delete {
                c.execute(
                    &format!("DELETE FROM {table} WHERE {column} < ?1"),
                    params![before],
                )?
            } else {
                c.query_row(
                    &format!("SELECT count(*) FROM {table} WHERE {column} < ?1"),
                    params![before],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| usize::try_from(n).unwrap_or(0))?
            };
        }
        Ok(n as u64)
    })
}

/// One approval by id.
pub fn get(store: &Store, id: &str) -> Result<Option<Approval>, StoreError> {
    store.with_tables(TABLES, |c| {
        c.query_row(
            &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
            params![id],
            row,
        )
        .optional()
    })
}

/// A duration as people write it: `90s`, `15m`, `2h`, `1d`.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: write e.g. `15m`, `90s`, `2h`"))?;
    let d = match unit {
        "s" => Duration::seconds(n),
        "m" | "" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        _ => return Err(format!("`{s}`: the unit is one of s, m, h, d")),
    };
    if d <= Duration::zero() || d > Duration::days(7) {
        return Err(format!("`{s}`: an approval lasts from 1 s to 7 days"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approvers(public: &str) -> Vec<Approver> {
        vec![Approver {
            name: "alice".into(),
            key: public.into(),
        }]
    }

    #[test]
    fn approvals_are_signed_single_use_and_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store.sqlite3")).expect("store");
        let (pem, public) = keygen("correct horse battery").expect("keygen");
        assert!(SigningKey::open(&pem, "wrong passphrase!").is_err());
        let key = SigningKey::open(&pem, "correct horse battery").expect("open");
        let now = Utc::now();
        let ap = approvers(&public);
        let n = NewApproval {
            digest: "d1",
            ttl: Duration::minutes(15),
            note: "ok",
        };
        // a key the policy does not list cannot approve
        assert!(approve(&store, &[], &key, &n, now).is_err());
        approve(&store, &ap, &key, &n, now).expect("approve");
        assert!(
            consume(&store, &ap, "d2", "r0", now).is_err(),
            "another digest"
        );
        let g = consume(&store, &ap, "d1", "r1", now).expect("valid once");
        assert_eq!(g.approver, "alice");
        let e = consume(&store, &ap, "d1", "r2", now).expect_err("reused");
        assert!(e.contains("already used by run r1"), "{e}");
        // expired
        approve(&store, &ap, &key, &NewApproval { digest: "d3", ..n }, now).expect("approve");
        let e = consume(&store, &ap, "d3", "r3", now + Duration::minutes(16)).expect_err("expired");
        assert!(e.contains("expired"), "{e}");
        // a forged row (signature of another message) is ignored
        let a = approve(&store, &ap, &key, &NewApproval { digest: "d4", ..n }, now).expect("ok");
        store
            .with_tables(TABLES, |c| {
                c.execute(
                    "UPDATE approvals SET digest = 'd5' WHERE id = ?1",
                    params![a.id],
                )
            })
            .expect("tamper");
        let e = consume(&store, &ap, "d5", "r5", now).expect_err("forged");
        assert!(e.contains("no valid signature"), "{e}");
    }

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("15m"), Ok(Duration::minutes(15)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::seconds(90)));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("8d").is_err());
        assert!(parse_ttl("soon").is_err());
    }
}
