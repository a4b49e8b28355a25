//! The local emulator, as the CLI reaches it: loopback only, started on demand through
//! `infra/local/emulator`, with test credentials when none are set.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_iam::config::Credentials;

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
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).endpoint_url(endpoint);
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
        loader = loader.region(Region::new("us-east-1"));
    }
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        loader = loader.credentials_provider(Credentials::new("test", "test", None, None, "latch-local"));
    }
    loader.load().await
}
