//! The front end's own tools, one file each. Each answers a call with a `Reply` in plain data; the
//! dispatcher (`catalogue::call`) checks the arguments first, then records and audits the call.

pub mod artifacts;
pub mod audit;
pub mod context;
pub mod evidence;
pub mod help;
pub mod jobs;
pub mod runbook;
