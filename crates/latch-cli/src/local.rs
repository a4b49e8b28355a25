//! The local emulator, as the CLI reaches it: loopback only, started on demand through
//! `infra/local/emulator`, with test credentials when none are set.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use aws_config::{Region, SdkConfig};
use aws_sdk_iam::config::Credentials;
use latch_core::grant::GrantService;
use latch_core::ports::{Ports, SystemClock};

use crate::CliError;

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4566";

/// The repository root: `LATCH_REPO`, else the tree this binary was built from.
pub fn repo_root() -> PathBuf {
    std::env::var_os("LATCH_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
}

fn socket(endpoint: &str) -> Result<SocketAddr, CliError> {
    let host_port = endpoint
        .strip_prefix("http://")
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    let addr = host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| CliError::Usage(format!("endpoint {endpoint:?} is not http://HOST:PORT")))?;
    if !addr.ip().is_loopback() {
        return Err(CliError::Usage(format!(
            "endpoint {endpoint} is not on loopback; the local commands only talk to 127.0.0.1"
        )));
    }
    Ok(addr)
}

fn answers(addr: &SocketAddr) -> bool {
    TcpStream::connect_timeout(addr, Duration::from_millis(300)).is_ok()
}

/// Makes sure the emulator answers at `endpoint`, starting it when it does not.
pub fn ensure_emulator(endpoint: &str) -> Result<(), CliError> {
    let addr = socket(endpoint)?;
    if answers(&addr) {
        return Ok(());
    }
    let script = repo_root().join("infra/local/emulator");
    eprintln!(
        "emulator not answering on {endpoint}; starting it with {}",
        script.display()
    );
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .env("LATCH_EMULATOR_PORT", addr.port().to_string())
        .status()
        .map_err(|e| CliError::Emulator {
            message: format!("cannot run {}: {e}", script.display()),
        })?;
    if status.success() && answers(&addr) {
        Ok(())
    } else {
        Err(CliError::Emulator {
            message: format!("the emulator did not start on {endpoint}"),
        })
    }
}

/// The endpoint to use: the flag, else `AWS_ENDPOINT_URL`, else the emulator's default.
pub fn endpoint(flag: Option<String>) -> String {
    flag.or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
}

/// One SDK configuration for every client: the emulator's endpoint, the environment's region
/// and credentials or harmless test ones.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    let mut loader = latch_aws::config::sdk_loader().endpoint_url(endpoint);
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
        loader = loader.region(Region::new("us-east-1"));
    }
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        loader = loader.credentials_provider(Credentials::new("test", "test", None, None, "latch-local"));
    }
    loader.load().await
}

/// Where the local Latch runs: table, bus and the account the emulator's envelopes get.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalTarget {
    /// The emulator's endpoint [default: $AWS_ENDPOINT_URL or http://127.0.0.1:4566]
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The policy file the handlers load, as the functions would from their layer.
    #[arg(long, default_value = "infra/policies.yaml")]
    pub policy: PathBuf,
    /// The grants and audit table.
    #[arg(long, env = "LATCH_TABLE", default_value = "latch-grants")]
    pub table: String,
    /// The event bus pipelines publish on and audit events go to.
    #[arg(long, env = "LATCH_BUS", default_value = "latch")]
    pub bus: String,
    /// The account envelopes carry when the emulator leaves it out (never taken from `detail`).
    #[arg(long, default_value = "123456789012")]
    pub account: String,
}

/// What [`start_latch`] brings up.
pub struct Started {
    pub latch: crate::runner::LocalLatch,
    pub provisioned: latch_aws::provision::Provisioned,
    pub sdk: SdkConfig,
    /// The local issuers standing in for the policy's; keep them alive while Latch runs.
    pub issuers: crate::dev_issuer::DevIssuers,
}

/// Provisions the emulator for `target` and builds the three handlers on it, in-process, with a
/// local development issuer standing in for each issuer the policy names (its keys pinned, so
/// the grant service verifies with `StaticKeys`: nothing fetched). Prints one banner line per
/// stand-in.
pub async fn start_latch(target: &LocalTarget, drift_grace: chrono::Duration) -> Result<Started, CliError> {
    let endpoint = endpoint(target.endpoint.clone());
    ensure_emulator(&endpoint)?;
    let mut policy = latch_core::policy::Policy::load_path(&target.policy)?;
    let issuers = crate::dev_issuer::DevIssuers::stand_in(&mut policy).await?;
    for line in issuers.banner() {
        println!("{line}");
    }
    let sdk = sdk_config(&endpoint).await;
    let table = target.table.clone();
    let bus = target.bus.clone();
    let config = latch_aws::Config::from_lookup(|name| match name {
        latch_aws::config::ENV_TABLE => Some(table.clone()),
        latch_aws::config::ENV_BUS => Some(bus.clone()),
        _ => None,
    })
    .map_err(|e| CliError::Usage(e.to_string()))?;
    let provisioned = latch_aws::provision::Provisioner::new(&sdk)
        .all(&config.table, &config.bus, &policy)
        .await
        .map_err(|e| CliError::Aws(e.to_string()))?;
    let clients = latch_aws::Clients::from_sdk_config(&sdk, &config);
    // One set of clients behind all three functions, as one deployment's functions share a table and bus.
    let ports = Ports::new(clients.iam, clients.store, clients.audit, SystemClock);
    let keys = latch_aws::jwks::HttpKeySource::new().map_err(|e| CliError::Usage(e.to_string()))?;
    let grant = GrantService::new(policy.clone(), ports.clone())
        .with_keys(keys)
        .with_native(clients.native);
    let revoke = revoke::RevokeFunction { ports: ports.clone() };
    let settings = latch_core::sweep::SweepSettings {
        drift_grace,
        ..Default::default()
    };
    let sweep = sweep::SweepFunction {
        policy,
        ports,
        settings,
    };
    let mut stream = latch_aws::stream::StreamReader::open(&sdk, &config.table)
        .await
        .map_err(|e| CliError::Aws(e.to_string()))?;
    stream.skip_existing().await.map_err(|e| CliError::Aws(e.to_string()))?;
    let latch = crate::runner::LocalLatch::new(
        grant,
        revoke,
        sweep,
        &sdk,
        &config.table,
        &provisioned.inbox_queue_url,
        &target.account,
        stream,
    );
    Ok(Started {
        latch,
        provisioned,
        sdk,
        issuers,
    })
}
