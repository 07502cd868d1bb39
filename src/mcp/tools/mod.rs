//! The front end's own tools, one file each. Each has a `Params` struct (`#[derive(Deserialize,
//! JsonSchema)]`, with an `Action` enum when it has actions), which is its listed input schema, and a
//! `call` that answers with a `Reply` in plain data. The dispatcher (`catalogue::call`) reads the
//! arguments into `Params` (`schema::parse`, which refuses those that do not fit), then records and
//! audits the call.

pub mod artifacts;
pub mod audit;
pub mod context;
pub mod evidence;
pub mod help;
pub mod intent;
pub mod jobs;
pub mod runbook;
pub mod workspace;
