//! PostgreSQL connections: where a call connects (a target's `postgres` section, a `connection`
//! URL, `DATABASE_URL`), pooled clients per connection, and calls bounded on the server:
//! `statement_timeout` for the deadline, and a cancel request when the deadline passes or the call
//! is cancelled, so the backend stops working too.
//!
//! `resolve` picks the target or `profile_name`, `connection`, the only target with a section, then
//! `DATABASE_URL`; passwords join the redactor, and the pool key holds no secret. A call's own
//! `connection` naming a Unix socket is refused without `INFRA_UNSAFE_LOCAL=1`. `Pool` keeps idle
//! clients per key; a pooled client that fails its first statement is replaced. `Pool::with` sets
//! `statement_timeout` to the time left, runs the work while a watcher thread sends a cancel
//! request on cancel or half a second past the deadline, maps SQLSTATE 57014 to
//! `timeout`/`cancelled`, resets the session (`RESET_SESSION`) and pools the client again only if
//! it was not interrupted. `check_read_only_role` reads a `read_only` target's role powers from the
//! catalogs on each new connection and refuses a role that could change what a read-only
//! transaction does not protect; it does not see the role's own other sessions. `db_error` keeps
//! SQLSTATE, detail and hint (class 28: `auth_failed`; 08 and 57P: `connect_failed`; 25006:
//! `refused`). The client runs on the engine's step threads only.

use crate::error::ErrorKind;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use postgres::Client;
use postgres_native_tls::MakeTlsConnector;

use crate::actions::{ActionError, Call};
pub use crate::targets::PgTarget;

/// Where one call connects, resolved.
#[derive(Debug)]
pub struct Resolved {
    /// The pool key: which settings made this connection.
    pub key: String,
    pub config: postgres::Config,
    pub read_only: bool,
    /// The target is read-only: its role is checked to be unable to write before a connection is used.
    pub read_only_role: bool,
    /// Shown in results: `user@host:port/db`.
    pub label: String,
}

fn config_err(msg: String) -> ActionError {
    ActionError::new(ErrorKind::InvalidConfig, msg)
}

/// Where a call asks to connect, from its arguments.
#[derive(Debug, Clone, Copy, Default)]
pub struct Where<'a> {
    /// `target`, else `profile_name`.
    pub target: Option<&'a str>,
    /// A connection URL.
    pub connection: Option<&'a str>,
    /// The call asks for a read-only transaction.
    pub read_only: bool,
}

impl<'a> Where<'a> {
    pub fn new(
        target: &'a Option<String>,
        profile_name: &'a Option<String>,
        connection: &'a Option<String>,
        read_only: Option<bool>,
    ) -> Self {
        Where {
            target: target.as_deref().or(profile_name.as_deref()),
            connection: connection.as_deref(),
            read_only: read_only.unwrap_or(false),
        }
    }
}

/// The connection of a call: `target`/`profile_name`, else `connection`, else the only target with a
/// `postgres` section, else `DATABASE_URL`.
pub fn resolve(call: &Call<'_>, at: Where<'_>) -> Result<Resolved, ActionError> {
    let cfg = call.host.config();
    let redactor = call.host.redactor();
    let mut section: Option<(String, PgTarget)> = None;
    let targets = crate::targets::Targets::load_checked(&cfg.profiles_dir)?;
    if let Some(name) = at.target {
        let t = targets.find(name, &cfg.profiles_dir)?;
        let pg = t
            .postgres
            .clone()
            .ok_or_else(|| config_err(format!("target `{name}` has no `postgres` section")))?;
        section = Some((name.to_owned(), pg));
    } else if at.connection.is_none() {
        let with: Vec<(&String, &PgTarget)> = targets
            .targets
            .iter()
            .filter_map(|(n, t)| t.postgres.as_ref().map(|p| (n, p)))
            .collect();
        if let [(n, p)] = with.as_slice() {
            section = Some(((*n).clone(), (*p).clone()));
        }
    }
    let (key_name, url, pg) = match (&section, at.connection) {
        (Some((n, pg)), _) => {
            let url = match (&pg.url, &pg.url_env) {
                (Some(u), _) => Some(u.clone()),
                (None, Some(var)) => Some(
                    crate::actions::credential(cfg, redactor, var, "URL").map_err(|mut e| {
                        e.message = format!("target `{n}`: {}", e.message);
                        e
                    })?,
                ),
                (None, None) => None,
            };
            (format!("target:{n}"), url, pg.clone())
        }
        (None, Some(c)) => (
            "connection".to_owned(),
            Some(c.to_owned()),
            PgTarget::default(),
        ),
        (None, None) => match cfg.vars.get("DATABASE_URL") {
            Some(u) => ("env:DATABASE_URL".to_owned(), Some(u), PgTarget::default()),
            None => {
                return Err(config_err(
                    "no database given: name a `target` with a `postgres` section, give `connection`, or set DATABASE_URL".into(),
                ));
            }
        },
    };
    let mut config = match &url {
        Some(u) => {
            redactor.add(u);
            u.parse::<postgres::Config>()
                .map_err(|e| config_err(format!("the connection URL is not valid: {e}")))?
        }
        None => postgres::Config::new(),
    };
    // a Unix socket is a file of this host: a call's own URL reaches one only with the opt-in (the
    // server may let in whoever the socket's peer is, infra's own user, with no password)
    if key_name == "connection"
        && !cfg.unsafe_local
        && config
            .get_hosts()
            .iter()
            .any(|h| matches!(h, postgres::config::Host::Unix(_)))
    {
        return Err(ActionError::new(
            ErrorKind::Refused,
            "the connection URL names a Unix socket, a file of the infra host: a call's own URL reaches the database over TCP",
        )
        .hint(
            "give the server's host and port, or a `target` whose `postgres` section names the socket, or start infra with INFRA_UNSAFE_LOCAL=1",
        ));
    }
    if let Some(h) = &pg.host {
        config.host(h);
    }
    if let Some(p) = pg.port {
        config.port(p);
    }
    if let Some(u) = &pg.user {
        config.user(u);
    }
    if let Some(d) = &pg.database {
        config.dbname(d);
    }
    if let Some(var) = &pg.password_env {
        config.password(crate::actions::credential(cfg, redactor, var, "password")?);
    }
    if let Some(pw) = config.get_password() {
        redactor.add(&String::from_utf8_lossy(pw));
    }
    if config.get_hosts().is_empty() {
        config.host("127.0.0.1");
    }
    config.ssl_mode(match pg.sslmode.as_deref() {
        Some("disable") => postgres::config::SslMode::Disable,
        Some("require") => postgres::config::SslMode::Require,
        _ => postgres::config::SslMode::Prefer,
    });
    config.connect_timeout(Duration::from_millis(
        pg.connect_timeout_ms.unwrap_or(10_000),
    ));
    config.application_name("infra");
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    let label = format!(
        "{}@{host}:{}/{}",
        config.get_user().unwrap_or("?"),
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_dbname().unwrap_or("?")
    );
    let read_only = pg.read_only.unwrap_or(false) || at.read_only;
    // the key holds no secret: the settings' shape and a digest of the URL and password
    let digest = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(url.as_deref().unwrap_or_default());
        h.update(config.get_password().unwrap_or_default());
        h.update(format!("{pg:?}"));
        dsl::analyze::hex(&h.finalize()[..8])
    };
    Ok(Resolved {
        key: format!("{key_name}#{digest}"),
        config,
        read_only,
        read_only_role: pg.read_only.unwrap_or(false),
        label,
    })
}

/// What a role may do that a read-only transaction does not stop, from the server's own catalogs:
/// superuser, the built-in roles that write server files, run programs or signal other sessions,
/// replication, relations it owns or may write (through a second connection), and large objects it
/// owns or may update (the large-object functions ignore read-only transactions).
const ROLE_POWERS: &str = "
WITH me AS (SELECT oid, rolname, rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user),
rel AS (
  SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, me
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast%'
    AND (pg_has_role(me.oid, c.relowner, 'USAGE')
         OR has_table_privilege(me.oid, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE'))
),
lo AS (
  SELECT l.oid FROM pg_largeobject_metadata l, me
  WHERE pg_has_role(me.oid, l.lomowner, 'USAGE')
     OR current_setting('lo_compat_privileges')::bool
     OR EXISTS (SELECT 1 FROM aclexplode(l.lomacl) a
                WHERE a.grantee IN (0, me.oid) AND a.privilege_type = 'UPDATE')
)
SELECT me.rolname::text, me.rolsuper, me.rolreplication,
  ARRAY(SELECT p FROM unnest(ARRAY['pg_write_server_files', 'pg_execute_server_program',
          'pg_signal_backend', 'pg_write_all_data', 'pg_read_server_files']) p
        WHERE to_regrole(p) IS NOT NULL AND pg_has_role(me.oid, to_regrole(p), 'USAGE')) AS powers,
  (SELECT count(*) FROM rel) AS relations,
  ARRAY(SELECT name FROM rel ORDER BY name LIMIT 3) AS some_relations,
  (SELECT count(*) FROM lo) AS large_objects
FROM me";

/// Refuses a connection of a read-only target whose role the server lets change anything a read-only
/// transaction does not protect; nothing has run on it yet.
fn check_read_only_role(c: &mut Client, label: &str) -> Result<(), ActionError> {
    let row = c
        .query_one(ROLE_POWERS, &[])
        .map_err(|e| db_error(&e, "reading what the target's role may do"))?;
    let name: String = row.get(0);
    let mut why = Vec::new();
    if row.get::<_, bool>(1) {
        why.push("it is a superuser".to_owned());
    }
    if row.get::<_, bool>(2) {
        why.push("it has REPLICATION".to_owned());
    }
    let powers: Vec<String> = row.get(3);
    if !powers.is_empty() {
        why.push(format!("it is a member of {}", powers.join(", ")));
    }
    let relations: i64 = row.get(4);
    if relations > 0 {
        let some: Vec<String> = row.get(5);
        let more = if relations > some.len() as i64 {
            ", …"
        } else {
            ""
        };
        why.push(format!(
            "it owns or may write {relations} relation(s) ({}{more})",
            some.join(", ")
        ));
    }
    let large_objects: i64 = row.get(6);
    if large_objects > 0 {
        why.push(format!(
            "it may change or delete {large_objects} large object(s)"
        ));
    }
    if why.is_empty() {
        return Ok(());
    }
    Err(ActionError::new(
        ErrorKind::Refused,
        format!(
            "the target is read-only, but the server lets its role `{name}` ({label}) write: {}; nothing was run",
            why.join("; ")
        ),
    )
    .hint("connect as a role that can only read (README, Safety: a read-only PostgreSQL role), or drop `read_only` from the target"))
}

/// Returns a session to how it started, short of its prepared statements (the driver keeps those):
/// what `DISCARD ALL` does, so settings, role, advisory locks, listeners, cursors and temporary tables
/// do not pass from one call to the next.
const RESET_SESSION: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
     SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES";

fn tls() -> Result<MakeTlsConnector, ActionError> {
    let c = native_tls::TlsConnector::new()
        .map_err(|e| ActionError::new(ErrorKind::Failed, format!("TLS setup failed: {e}")))?;
    Ok(MakeTlsConnector::new(c))
}

/// SQLSTATE classes that mean the credentials were refused.
fn is_auth(code: &str) -> bool {
    code.starts_with("28")
}

/// An error of the driver or the server as an action error, with the server's code, detail and hint.
pub fn db_error(e: &postgres::Error, what: &str) -> ActionError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let kind = if is_auth(code) {
            ErrorKind::AuthFailed
        } else if code.starts_with("08") || code.starts_with("57P") {
            // connection exceptions, and the server shutting down
            ErrorKind::ConnectFailed
        } else if code == "25006" {
            ErrorKind::Refused
        } else {
            ErrorKind::SqlError
        };
        let mut err = ActionError::new(kind, format!("{what}: {} (SQLSTATE {code})", db.message()));
        let mut hint = Vec::new();
        if let Some(d) = db.detail() {
            hint.push(d.to_owned());
        }
        if let Some(h) = db.hint() {
            hint.push(h.to_owned());
        }
        if !hint.is_empty() {
            err = err.hint(hint.join(" "));
        }
        return err;
    }
    let text = e.to_string();
    let kind = if e.is_closed() || text.contains("connect") || text.contains("Connection refused") {
        ErrorKind::ConnectFailed
    } else if text.contains("timed out") {
        ErrorKind::Timeout
    } else {
        ErrorKind::DbFailed
    };
    ActionError::new(kind, format!("{what}: {text}"))
}

/// Idle clients by connection key.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Client>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("psql::Pool")
    }
}

/// Clients kept idle per connection.
const IDLE: usize = 4;

impl Drop for Pool {
    /// Each client owns a small runtime, which may not be dropped inside an async context (the MCP
    /// server drops its engine in one): the clients end on a thread of their own.
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|p| p.into_inner()));
        if idle.is_empty() {
            return;
        }
        let _ = std::thread::spawn(move || drop(idle)).join();
    }
}

impl Pool {
    /// A pooled client that still answers, or a new one; with `SET statement_timeout` applied.
    fn take(&self, r: &Resolved, timeout_ms: u64) -> Result<Client, ActionError> {
        let set = format!("SET statement_timeout = {timeout_ms}");
        loop {
            let pooled = self
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&r.key)
                .and_then(Vec::pop);
            let Some(mut c) = pooled else { break };
            // a server restart ends pooled sessions: the first statement says so
            if !c.is_closed() && c.batch_execute(&set).is_ok() {
                return Ok(c);
            }
        }
        let mut c = self.connect(r)?;
        if r.read_only_role {
            check_read_only_role(&mut c, &r.label)?;
        }
        c.batch_execute(&set)
            .map_err(|e| db_error(&e, "setting the statement timeout"))?;
        Ok(c)
    }

    fn connect(&self, r: &Resolved) -> Result<Client, ActionError> {
        r.config.connect(tls()?).map_err(|e| {
            let mut err = db_error(&e, &format!("cannot connect to {}", r.label));
            if err.kind == ErrorKind::DbFailed {
                err.kind = ErrorKind::ConnectFailed;
            }
            if err.hint.is_none() {
                err = err
                    .hint("check that the server is up and the host, port and database are right");
            }
            err
        })
    }

    fn give_back(&self, key: &str, c: Client) {
        if c.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let v = idle.entry(key.to_owned()).or_default();
        if v.len() < IDLE {
            v.push(c);
        }
    }

    /// Runs `f` on a client of this connection, bounded by the call's deadline and cancel token on the
    /// server side. The client goes back to the pool unless the call was interrupted or failed at the
    /// connection level.
    pub fn with<T>(
        &self,
        call: &Call<'_>,
        r: &Resolved,
        f: impl FnOnce(&mut Client) -> Result<T, ActionError>,
    ) -> Result<T, ActionError> {
        let timeout_ms = call.deadline.map_or(0, |d| {
            d.saturating_duration_since(Instant::now())
                .as_millis()
                .max(1) as u64
        });
        let mut client = self.take(r, timeout_ms)?;
        let token = client.cancel_token();
        // 0: running, 1: finished, 2: cancel sent (deadline), 3: cancel sent (cancelled)
        let state = AtomicU8::new(0);
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                // statement_timeout ends a statement at the deadline; this also covers a cancel, the
                // time between statements, and a server that did not apply the timeout
                let grace = Duration::from_millis(500);
                loop {
                    if state.load(Ordering::SeqCst) != 0 {
                        return;
                    }
                    let why = if call.cancel.is_cancelled() {
                        3
                    } else if call.deadline.is_some_and(|d| Instant::now() >= d + grace) {
                        2
                    } else {
                        0
                    };
                    if why != 0
                        && state
                            .compare_exchange(0, why, Ordering::SeqCst, Ordering::SeqCst)
                            .is_ok()
                    {
                        if let Ok(t) = tls() {
                            let _ = token.cancel_query(t);
                        }
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let r = f(&mut client);
            let _ = state.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst);
            r
        });
        let interrupted = state.load(Ordering::SeqCst);
        let result = result.map_err(|mut e| {
            // the server's "canceling statement due to statement timeout/user request" (57014)
            if e.message.contains("57014") || interrupted >= 2 {
                if interrupted == 3 || (call.cancel.is_cancelled() && interrupted != 2) {
                    e.kind = ErrorKind::Cancelled;
                    e.message = format!(
                        "cancelled; the server stopped the statement ({})",
                        e.message
                    );
                } else {
                    e.kind = ErrorKind::Timeout;
                    e.message = format!(
                        "the statement ran past its timeout and the server stopped it ({})",
                        e.message
                    );
                    e.hint = Some("raise `timeout_ms`, or make the statement cheaper".into());
                }
            }
            e
        });
        if interrupted < 2 && client.batch_execute(RESET_SESSION).is_ok() {
            self.give_back(&r.key, client);
        }
        result
    }
}
