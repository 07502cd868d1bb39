//! The command line: argument parsing and one module per subcommand.

mod approve;
mod artifacts;
mod audit;
mod doctor;
mod graph;
mod ids;
mod intent;
mod jobs;
mod list;
mod logs;
mod manual;
mod plan;
mod report;
mod run;
mod runs;
mod state;
mod validate;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use dsl::{Code, Diagnostic, Runbook};
use engine::{Catalog, CatalogOptions};

use crate::render;

/// Exit status: success.
pub const OK: u8 = 0;
/// Exit status: the run or check failed.
pub const FAILED: u8 = 1;
/// Exit status: bad usage or input.
pub const USAGE: u8 = 2;
/// Stopped by Ctrl-C (128 + SIGINT, the shell's convention).
pub const INTERRUPTED: u8 = 130;

#[derive(Parser, Debug)]
#[command(
    name = "infra",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("INFRA_COMMIT"), ")"),
    about = "One deterministic, audited engine for agents and humans acting on infrastructure.",
    long_about = "With no arguments, infra serves MCP on stdio (for agents). The subcommands are for people.\n\
                  Runbooks are found by name (built-in and the project's profiles directory) or by path."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// When to colour the output: `auto` (a terminal, unless `NO_COLOR` is set; `CLICOLOR_FORCE=1`
    /// forces it), `always` or `never`.
    #[arg(long, global = true, value_enum, default_value_t, value_name = "WHEN")]
    color: render::ColorChoice,
    /// Print results and errors only: no progress lines, no hints.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Print more detail: a run's id and evidence as it starts, longer output of failing steps.
    #[arg(short, long, global = true)]
    verbose: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve MCP on stdin/stdout (what `infra` with no arguments does when stdin speaks JSON-RPC).
    Mcp,
    /// Check runbook files or named runbooks; with none, every runbook infra can find.
    Validate(validate::Args),
    /// Show the plan a runbook compiles to with the given inputs; nothing runs.
    Plan(plan::Args),
    /// Draw a runbook's step graph (Mermaid, Graphviz or SVG).
    Graph(graph::Args),
    /// List the runbooks infra can find.
    List(list::Args),
    /// Run a runbook: live progress on stderr, a summary at the end.
    Run(run::Args),
    /// One self-contained HTML report of a run: why it ended, graph, timeline, steps.
    Report(report::Args),
    /// Recorded runs: `list`, `show <id>`, `logs <id>`.
    #[command(subcommand)]
    Runs(runs::Command),
    /// Artifacts of runs: `list`, `get <uri>`, `tail <uri>`.
    #[command(subcommand)]
    Artifacts(artifacts::Command),
    /// Background jobs (MCP calls with `async: true`, detached `ssh exec`): `list`, `status`, `wait`,
    /// `logs`, `cancel`.
    #[command(subcommand)]
    Jobs(jobs::Command),
    /// Run a job as its worker (started by the MCP server that took the call; not for people).
    #[command(name = "__worker", hide = true)]
    Worker {
        /// The job's id.
        id: String,
    },
    /// The audit log: `tail`, `verify`, `checkpoint`.
    #[command(subcommand)]
    Audit(audit::Command),
    /// Persistent state: `get`, `set`, `list`, `unset`.
    #[command(subcommand)]
    State(state::Command),
    /// Approve a plan that policy said needs an approval, by its digest (a person, at a terminal).
    Approve(approve::ApproveArgs),
    /// Approvals: `list`, `revoke <id>`, `keygen --out <file>`.
    #[command(subcommand)]
    Approvals(approve::Command),
    /// Check that infra can work here: profiles directory, runbooks, targets, store, audit log;
    /// `--connect` also reaches every target.
    Doctor(doctor::Args),
    /// What the project is: its root, tags (git, k8s, helm, argocd, flux, languages…) and their files.
    Context(intent::ContextArgs),
    /// Ask for an outcome: explain, compile, dry-run or execute an intent (`--apply`, `--confirm`).
    Intent(intent::IntentArgs),
    /// Print a shell completion script (e.g. `infra completions bash > ~/.local/share/bash-completion/completions/infra`).
    Completions(manual::CompletionsArgs),
    /// Print the manual page (roff; `infra man | man -l -`), or write one page per command with `--out-dir`.
    Man(manual::ManArgs),
}

/// The clap definition of the whole command line (for completions, the manual and the help test).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Output format of checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Text for people.
    #[default]
    Human,
    /// JSON on stdout.
    Json,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { USAGE } else { OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let verbosity = if cli.quiet {
        render::Verbosity::Quiet
    } else if cli.verbose {
        render::Verbosity::Verbose
    } else {
        render::Verbosity::Normal
    };
    render::init(cli.color, verbosity);
    let code = match cli.command {
        None => {
            if std::io::stdin().is_terminal() {
                render::err(
                    "infra serves MCP on stdio when an MCP client starts it; nothing to do on a terminal.\n\
                     Try `infra list`, `infra validate`, `infra plan <runbook>` or `infra --help`.\n",
                );
                OK
            } else if stdin_speaks_json_rpc() {
                mcp()
            } else {
                render::err(
                    "infra: standard input is not JSON-RPC, so there is no MCP client to serve.\n\
                     Name a command (`infra list`, `infra run <runbook>`, `infra --help`), or start the \
                     server with `infra mcp`.\n",
                );
                USAGE
            }
        }
        Some(Command::Mcp) => mcp(),
        Some(Command::Validate(a)) => validate::run(a),
        Some(Command::Plan(a)) => plan::run(a),
        Some(Command::Graph(a)) => graph::run(a),
        Some(Command::List(a)) => list::run(a),
        Some(Command::Run(a)) => run::run(a),
        Some(Command::Report(a)) => report::run(a),
        Some(Command::Runs(c)) => runs::run(c),
        Some(Command::Artifacts(c)) => artifacts::run(c),
        Some(Command::Audit(c)) => audit::run(c),
        Some(Command::Jobs(c)) => jobs::run(c),
        Some(Command::Worker { id }) => jobs::work(&id),
        Some(Command::State(c)) => state::run(c),
        Some(Command::Doctor(a)) => doctor::run(a),
        Some(Command::Approve(a)) => approve::approve(a),
        Some(Command::Approvals(c)) => approve::run(c),
        Some(Command::Context(a)) => intent::context(a),
        Some(Command::Intent(a)) => intent::intent(a),
        Some(Command::Completions(a)) => manual::completions(a),
        Some(Command::Man(a)) => manual::man(a),
    };
    ExitCode::from(code)
}

/// Whether what waits on standard input looks like an MCP client: its first byte past blank space opens
/// a JSON object or array, or the input is already closed (a probe). The bytes stay buffered for the
/// server to read.
fn stdin_speaks_json_rpc() -> bool {
    use std::io::BufRead;
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    loop {
        let buf = match lock.fill_buf() {
            Ok(b) => b,
            Err(_) => return true,
        };
        let Some(&first) = buf.first() else {
            return true;
        };
        match first {
            b' ' | b'\t' | b'\r' | b'\n' => lock.consume(1),
            b'{' | b'[' => return true,
            _ => return false,
        }
    }
}

/// This process's configuration, from its environment and working directory (read once, here).
pub fn config() -> engine::ctx::Config {
    let env = |k: &str| std::env::var(k).ok();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    engine::ctx::Config::from_env(&env, &cwd).with_vars(engine::ctx::Vars::process())
}

/// Where this process finds project runbooks.
pub fn catalog_options() -> CatalogOptions {
    let c = config();
    CatalogOptions {
        profiles_dir: Some(c.profiles_dir),
        runbooks_path: c.runbooks_path,
    }
}

/// The engine of this process.
pub fn engine() -> engine::run::Engine {
    let c = config();
    let catalog = Catalog::load(&CatalogOptions {
        profiles_dir: Some(c.profiles_dir.clone()),
        runbooks_path: c.runbooks_path.clone(),
    });
    engine::run::Engine::new(c, Arc::new(catalog))
}

/// Whether a command-line word names a file rather than a runbook.
fn looks_like_path(arg: &str) -> bool {
    let p = Path::new(arg.split('#').next().unwrap_or(arg));
    arg.contains('/') || engine::catalog::is_runbook_file(p) || p.is_file()
}

/// A runbook chosen on the command line, by name or by `path[#name]`.
pub fn find_runbook(catalog: &Catalog, arg: &str) -> Result<Arc<Runbook>, Vec<Diagnostic>> {
    let which = if looks_like_path(arg) {
        engine::request::Which::File(arg)
    } else {
        engine::request::Which::Name(arg)
    };
    engine::request::find(catalog, which)
}

/// `infra mcp`: serves MCP on stdio until the client closes it.
fn mcp() -> u8 {
    if crate::mcp::serve(engine(), engine) {
        OK
    } else {
        FAILED
    }
}

/// Prints diagnostics for a failed lookup or compile and returns the exit status: `USAGE` when the
/// runbook could not be found, else `FAILED`.
pub fn report(diags: &[Diagnostic]) -> u8 {
    render::diagnostics(diags);
    if diags.iter().any(|d| {
        d.code == Code::UnknownRunbook || d.code == Code::InputTooLarge && d.file.is_none()
    }) {
        USAGE
    } else {
        FAILED
    }
}

#[cfg(test)]
mod tests {
    /// Every argument and subcommand says what it is for in `--help` (and so in the manual and the
    /// completions).
    #[test]
    fn every_argument_and_subcommand_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} <{id}>"));
                }
            }
            for sub in cmd.get_subcommands() {
                let here = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(here.clone());
                }
                walk(sub, &here, missing);
            }
        }
        let mut missing = Vec::new();
        let cmd = super::command();
        cmd.clone().debug_assert();
        walk(&cmd, "infra", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
