//! The error of an action call. It stands below the actions, so the layers they build on (processes,
//! targets) can return it without importing the actions themselves; it imports none of them (the
//! conversion from a target's error is in `targets`).

use serde_json::Value;

/// Why an action call failed: one stable, machine-readable kind. Its snake-case name is what results,
/// journals and the audit log carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The arguments do not fit the action (schema, types, a combination).
    InvalidArgs,
    /// A target, profile or environment setting is missing or wrong.
    InvalidConfig,
    /// Policy, an opt-in, a read-only rule or a safety check refused the call before it acted.
    Refused,
    /// The tool or action is not part of this build or platform.
    NotAvailable,
    /// The named thing (file, key, runbook, target, artifact) does not exist.
    NotFound,
    /// A template in the step could not be rendered.
    Template,
    /// The call ran past its deadline and was stopped.
    Timeout,
    /// The run was cancelled while the call ran.
    Cancelled,
    /// A command exited with a status the step does not accept.
    NonzeroExit,
    /// A local process could not be started.
    SpawnFailed,
    /// An input or output is over its limit.
    TooLarge,
    /// A step's `until` condition stayed false through every attempt.
    UntilNotMet,
    /// Some targets of a batch failed; every result is attached.
    PartialFailure,
    /// A check (HTTP status, body, JSON path) did not hold.
    CheckFailed,
    /// An HTTP answer had a status the call does not accept.
    UnexpectedStatus,
    /// An HTTP request was redirected more often than allowed.
    TooManyRedirects,
    /// A host name did not resolve.
    DnsFailed,
    /// A connection could not be made or was lost.
    ConnectFailed,
    /// The TLS handshake or certificate check failed.
    TlsFailed,
    /// The server refused the credentials.
    AuthFailed,
    /// An HTTP transfer failed in some other way.
    HttpFailed,
    /// An SSH server's host key is not in known_hosts (and `host_key` is `strict`).
    HostKeyUnknown,
    /// An SSH server's host key differs from the one recorded for it.
    HostKeyChanged,
    /// An SSH server's host key differs from the target's pinned fingerprint.
    HostKeyMismatch,
    /// An SSH operation failed in some other way.
    SshFailed,
    /// The database refused the statement (its SQLSTATE is in the message).
    SqlError,
    /// The database client failed in some other way.
    DbFailed,
    /// The state store could not be read or written.
    StoreUnavailable,
    /// The audit log could not be written, so nothing was done.
    AuditUnavailable,
    /// The call acted but its audit outcome could not be written.
    AuditIncomplete,
    /// Any other failure; the message says what.
    Failed,
}

impl ErrorKind {
    /// Every kind, in the order above.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::InvalidArgs,
        ErrorKind::InvalidConfig,
        ErrorKind::Refused,
        ErrorKind::NotAvailable,
        ErrorKind::NotFound,
        ErrorKind::Template,
        ErrorKind::Timeout,
        ErrorKind::Cancelled,
        ErrorKind::NonzeroExit,
        ErrorKind::SpawnFailed,
        ErrorKind::TooLarge,
        ErrorKind::UntilNotMet,
        ErrorKind::PartialFailure,
        ErrorKind::CheckFailed,
        ErrorKind::UnexpectedStatus,
        ErrorKind::TooManyRedirects,
        ErrorKind::DnsFailed,
        ErrorKind::ConnectFailed,
        ErrorKind::TlsFailed,
        ErrorKind::AuthFailed,
        ErrorKind::HttpFailed,
        ErrorKind::HostKeyUnknown,
        ErrorKind::HostKeyChanged,
        ErrorKind::HostKeyMismatch,
        ErrorKind::SshFailed,
        ErrorKind::SqlError,
        ErrorKind::DbFailed,
        ErrorKind::StoreUnavailable,
        ErrorKind::AuditUnavailable,
        ErrorKind::AuditIncomplete,
        ErrorKind::Failed,
    ];

    /// The name results and records carry (`invalid_args`, `refused`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgs => "invalid_args",
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::Refused => "refused",
            ErrorKind::NotAvailable => "not_available",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Template => "template",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::NonzeroExit => "nonzero_exit",
            ErrorKind::SpawnFailed => "spawn_failed",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::UntilNotMet => "until_not_met",
            ErrorKind::PartialFailure => "partial_failure",
            ErrorKind::CheckFailed => "check_failed",
            ErrorKind::UnexpectedStatus => "unexpected_status",
            ErrorKind::TooManyRedirects => "too_many_redirects",
            ErrorKind::DnsFailed => "dns_failed",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::TlsFailed => "tls_failed",
            ErrorKind::AuthFailed => "auth_failed",
            ErrorKind::HttpFailed => "http_failed",
            ErrorKind::HostKeyUnknown => "host_key_unknown",
            ErrorKind::HostKeyChanged => "host_key_changed",
            ErrorKind::HostKeyMismatch => "host_key_mismatch",
            ErrorKind::SshFailed => "ssh_failed",
            ErrorKind::SqlError => "sql_error",
            ErrorKind::DbFailed => "db_failed",
            ErrorKind::StoreUnavailable => "store_unavailable",
            ErrorKind::AuditUnavailable => "audit_unavailable",
            ErrorKind::AuditIncomplete => "audit_incomplete",
            ErrorKind::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<str> for ErrorKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A failed action call: a stable kind, a message, how to fix it, and what the action produced anyway
/// (e.g. the output of a command that exited non-zero).
#[derive(Debug, Clone, PartialEq)]
pub struct ActionError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
    pub result: Option<Value>,
}

impl ActionError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ActionError {
            kind,
            message: message.into(),
            hint: None,
            result: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_result(mut self, result: Value) -> Self {
        self.result = Some(result);
        self
    }

    /// The status a step ends with when its call failed this way: the one mapping from kinds to run
    /// statuses.
    pub fn status(&self) -> crate::record::evidence::Status {
        use crate::record::evidence::Status;
        match self.kind {
            ErrorKind::Timeout => Status::TimedOut,
            ErrorKind::Cancelled => Status::Cancelled,
            ErrorKind::Refused | ErrorKind::AuditUnavailable => Status::Refused,
            _ => Status::Failed,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({"kind": self.kind.as_str(), "message": self.message});
        if let Some(h) = &self.hint {
            v["hint"] = h.as_str().into();
        }
        v
    }
}

impl std::fmt::Display for ActionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_distinct_snake_case_names() {
        let mut seen = std::collections::HashSet::new();
        for k in ErrorKind::ALL {
            let n = k.as_str();
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
            assert!(seen.insert(n), "{n} twice");
            assert_eq!(serde_json::to_value(k).expect("serialises"), n);
        }
        // `as_str` is an exhaustive match; this one counts the variants so `ALL` cannot miss one.
        let count = |k: ErrorKind| match k {
            ErrorKind::InvalidArgs
            | ErrorKind::InvalidConfig
            | ErrorKind::Refused
            | ErrorKind::NotAvailable
            | ErrorKind::NotFound
            | ErrorKind::Template
            | ErrorKind::Timeout
            | ErrorKind::Cancelled
            | ErrorKind::NonzeroExit
            | ErrorKind::SpawnFailed
            | ErrorKind::TooLarge
            | ErrorKind::UntilNotMet
            | ErrorKind::PartialFailure
            | ErrorKind::CheckFailed
            | ErrorKind::UnexpectedStatus
            | ErrorKind::TooManyRedirects
            | ErrorKind::DnsFailed
            | ErrorKind::ConnectFailed
            | ErrorKind::TlsFailed
            | ErrorKind::AuthFailed
            | ErrorKind::HttpFailed
            | ErrorKind::HostKeyUnknown
            | ErrorKind::HostKeyChanged
            | ErrorKind::HostKeyMismatch
            | ErrorKind::SshFailed
            | ErrorKind::SqlError
            | ErrorKind::DbFailed
            | ErrorKind::StoreUnavailable
            | ErrorKind::AuditUnavailable
            | ErrorKind::AuditIncomplete
            | ErrorKind::Failed => 1,
        };
        assert_eq!(ErrorKind::ALL.iter().map(|k| count(*k)).sum::<usize>(), 31);
        assert_eq!(ErrorKind::ALL.len(), 31);
    }

    #[test]
    fn status_follows_kind() {
        use crate::record::evidence::Status;
        let s = |k| ActionError::new(k, "m").status();
        assert_eq!(s(ErrorKind::Timeout), Status::TimedOut);
        assert_eq!(s(ErrorKind::Cancelled), Status::Cancelled);
        assert_eq!(s(ErrorKind::Refused), Status::Refused);
        assert_eq!(s(ErrorKind::AuditUnavailable), Status::Refused);
        assert_eq!(s(ErrorKind::NonzeroExit), Status::Failed);
    }
}
