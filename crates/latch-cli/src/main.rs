//! `latch`: the command line of Latch. Thin: parse arguments, run one command, map its
//! result to an exit code. Each command lives in its own module.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

// Every module below prints through `stdout::print`, where a reader that stops early (`| head`)
// ends `latch` quietly rather than in the standard macros' panic. (Declared before the modules
// so that their `println!` is this one.)
macro_rules! println {
    () => {
        $crate::stdout::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::stdout::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod audit;
mod ci_env;
mod client;
mod demo;
mod dev;
mod dev_issuer;
mod doctor;
mod init;
mod local;
mod policy_cmd;
mod runner;
mod stdout;
mod token;

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
    /// Run Latch locally on the emulator until Ctrl-C: grant, revoke and sweep handlers fed as
    /// Lambda feeds them.
    ///
    /// Provisions the table, bus, rules and the example roles, then hands bus deliveries to the
    /// grant handler, the table's stream to the revoke handler, and runs the sweep on a timer.
    /// The emulator never expires TTL items by itself: pass --expire-ttl to delete expired items
    /// as DynamoDB would, so the stream path runs too.
    Dev(dev::DevArgs),
    /// Ask for a grant for this pipeline job (publishes `Pipeline Job Started`).
    ///
    /// The job proves who it is with its CI's OIDC ID token: --token-file, else $LATCH_ID_TOKEN
    /// (GitLab `id_tokens:`), else GitHub Actions' token request (`permissions: id-token: write`),
    /// or --no-token for `identity: claimed` rules. The job's pipeline, run, job, attempt, actor,
    /// commit and ref come from the token and the CI system's variables (GitHub Actions, GitLab
    /// CI, Jenkins, CodeBuild) unless given as flags.
    ///
    /// Prints `session: <name>` on stdout: the role session name to assume the role with when
    /// the rule binds sessions.
    ///
    /// With --wait: exit 0 once active and IAM applies it (the role's credentials pass the
    /// grant's probe; --settle when they cannot be had), 3 if denied (reason on stderr), 4 if
    /// no decision came, or IAM did not apply it, within --timeout.
    Request(Box<client::RequestArgs>),
    /// Ask for more time on this job's active grant (publishes `Pipeline Grant Extension
    /// Requested`), within its rule's max_total. Needs the job's ID token, as request does.
    Extend(Box<client::ExtendArgs>),
    /// End this job's grants now (publishes `Pipeline Job Finished`, with the job's ID token as
    /// proof). Run it when the job ends, whatever its outcome; grants expire by themselves anyway.
    Release(Box<client::ReleaseArgs>),
    /// Check and explain policy files, offline.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// Query a DynamoDB table export of Latch's audit records, offline; write an HTML report.
    ///
    /// Reads an ExportTableToPointInTime export (DYNAMODB_JSON) in one streaming pass, filters
    /// by role, pipeline, time and decision, and prints a table, CSV or JSON lines.
    Audit(Box<audit::AuditArgs>),
    /// Write a starter policy file and samconfig.toml for a first deployment (asks on a
    /// terminal for what no flag gives); what it writes passes `latch policy check`.
    Init(init::InitArgs),
    /// Check a deployed Latch against its policy file, with your AWS credentials (read-only):
    /// the table's layout, TTL, stream and index; the bus's pipeline rule; every role the policy
    /// names exactly (exists, under the elevatable path, carries --boundary). Exit 0 when every
    /// check passes, 1 otherwise.
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script for latch (bash, zsh, fish, elvish, powershell).
    ///
    /// e.g. `latch completions bash > /etc/bash_completion.d/latch`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print latch's manual page (roff), e.g. `latch man | man -l -`.
    Man,
}

/// Wall-clock time for log lines a person reads.
pub fn now() -> String {
    chrono::Utc::now().format("%H:%M:%S").to_string()
}

#[tokio::main]
async fn main() -> ExitCode {
    // Library warnings (a dropped delivery, a retried revoke) go to stderr; RUST_LOG tunes it.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Request(args) => client::request(*args).await,
        Command::Extend(args) => client::extend(*args).await,
        Command::Release(args) => client::release(*args).await,
        Command::Policy(cmd) => policy_cmd::run(cmd),
        Command::Audit(args) => audit::run(*args),
        Command::Doctor(args) => doctor::run(args).await,
        Command::Init(args) => init::run(args),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "latch", &mut script);
            stdout::write_all(&script).map(|()| ExitCode::SUCCESS)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .map_err(|e| CliError::Usage(format!("rendering the manual page: {e}")))
                .and_then(|()| stdout::write_all(&page))
                .map(|()| ExitCode::SUCCESS)
        }
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
