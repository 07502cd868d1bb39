//! What the engine records: the audit log, each run's evidence journal and artifacts, and the redactor that
//! masks secrets in all of them.

pub mod artifacts;
pub mod audit;
pub mod audit_record;
pub mod digest;
pub mod evidence;
pub mod redact;
mod scan;

pub use audit::{Audit, AuditError};
pub use audit_record::{AuditKind, AuditRecord};
pub use evidence::Journal;
pub use redact::Redactor;

/// A repeatable stream of numbers below the `n` asked for each time (xorshift; tests only).
#[cfg(test)]
pub(crate) fn below(mut seed: u64) -> impl FnMut(usize) -> usize {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    }
}
