//! `infra`: one binary for agents (MCP over stdio) and humans (CLI, YAML runbooks) acting on infrastructure
//! through one deterministic, audited engine.

mod cli;
mod mcp;
mod render;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
