//! The error of an action call. It stands below the actions, so the layers they build on (processes,
//! targets) can return it without importing the actions themselves.

use serde_json::Value;

/// A failed action call: a stable kind, a message, how to fix it, and what the action produced anyway
/// (e.g. the output of a command that exited non-zero).
#[derive(Debug, Clone, PartialEq)]
pub struct ActionError {
    /// `invalid_args`, `refused`, `nonzero_exit`, `timeout`, `cancelled`, `not_found`, `failed`, …
    pub kind: String,
    pub message: String,
    pub hint: Option<String>,
    pub result: Option<Value>,
}

impl ActionError {
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        ActionError {
            kind: kind.to_owned(),
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
        match self.kind.as_str() {
            "timeout" => Status::TimedOut,
            "cancelled" => Status::Cancelled,
            "refused" | "audit_unavailable" => Status::Refused,
            _ => Status::Failed,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({"kind": self.kind, "message": self.message});
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

impl From<crate::targets::TargetError> for ActionError {
    fn from(e: crate::targets::TargetError) -> Self {
        ActionError::new(e.kind, e.message).hint(e.hint)
    }
}
