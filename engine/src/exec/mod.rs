//! Processes and cancellation, below the actions and the executor: a local process run in its own group
//! with its output streamed to artifacts (`process`), and the shared cancel flag (`cancel`). Nothing
//! here knows about plans, runs or the engine.

pub mod cancel;
pub mod process;

pub use cancel::CancelToken;
