//! `latch`: the command line of Latch. Thin: parse arguments, run one command, map its
//! result to an exit code. Each command lives in its own module.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod demo;
mod local;
mod policy_cmd;
mod runner;

/// Latch: just-in-time, self-expiring IAM privileges for CI/CD pipeline jobs.
///
/// Pipelines announce job start and finish on EventBridge; Latch checks each request against
/// the policy file, attaches a scoped policy that expires by itself, and takes it away when the
/// job finishes or the grant expires. Every decision is audited.
#[derive(Debug, Parser)]
#[command(name = "latch", version, propagate_version = true, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scripted scenario on the local emulator and print its timeline.
    ///
    /// Starts the emulator (infra/local/emulator) when it is not answering, provisions the
    /// table, bus, rules and example roles, then drives real events through the bus and the
    /// grant function's handler. Needs nothing but this repository.
    Demo(demo::DemoArgs),
    /// Check and explain policy files, offline.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// Query a DynamoDB table export of Latch's audit records, offline; write an HTML report.
    ///
    /// Reads an ExportTableToPointInTime export (DYNAMODB_JSON) in one streaming pass, filters
    /// by role, pipeline, time and decision, and prints a table, CSV or JSON lines.
    Audit(Box<audit::AuditArgs>),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Policy(cmd) => policy_cmd::run(cmd),
        Command::Audit(args) => audit::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// A failure the user can act on: what went wrong, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{message}")]
    Emulator { message: String },
    #[error("{0}")]
    Policy(#[from] latch_core::policy::LoadError),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Aws(String),
}

impl CliError {
    fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Usage(_) => Some("see `latch --help`"),
            Self::Emulator { .. } => {
                Some("start it with `infra/local/emulator start`, or set AWS_ENDPOINT_URL to where it listens")
            }
            Self::Policy(_) => Some("fix the lines above; `latch policy check FILE` re-checks without AWS"),
            Self::Read { .. } => Some("check the path"),
            Self::Aws(_) => Some("is the emulator still running? `infra/local/emulator status`"),
        }
    }

    fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Policy(_) => 1,
            _ => 1,
        }
    }
}
