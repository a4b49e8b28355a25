//! A private emulator (moto server) on its own loopback port, for runs that must not share the
//! emulator the other tests use: moto copies a whole table on every TransactWriteItems and its
//! memory grows with the writes it has seen, so heavy runs get a fresh one and stop it after.
//!
//! Contract: [`MotoServer::start`] returns once the server answers; dropping the value kills
//! the process (also when a test fails and unwinds). The venv is the repository's `.venv`,
//! created by `infra/local/emulator venv` if it is missing.
//!
//! The server runs behind `moto_launch.py` (beside this file), which patches three things:
//! - memory: moto's `BaseModel.__new__` appends every model instance to a class-wide list (for
//!   its dashboard), deep copies included, so nothing is ever freed (23 GB within minutes of
//!   the campaign, on a 23 GB machine); the launcher stops that tracking;
//! - time: every TransactWriteItems deep-copied the whole table, stream records included, to
//!   roll back on failure (O(table) per transaction, hundreds of ms at a few thousand items);
//!   the launcher snapshots only the items the transaction names and the stream's length, and
//!   restores those. Same outcome for a cancelled transaction, given one request at a time
//!   (the fault proxy's `serialize_upstream`), which the old snapshot needed too;
//! - lifetime: it exits when the process that started it goes away, even by SIGKILL.
//!
//! A watchdog still kills the server when its RSS passes [`MotoServer::rss_cap_mib`]
//! (`LATCH_MOTO_RSS_CAP_MIB`, default 3072): a runaway emulator fails the run, not the machine.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct MotoServer {
    child: Child,
    pub addr: SocketAddr,
    killed_for_memory: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

/// moto's entry point with the patches the module doc lists.
const LAUNCH: &str = include_str!("moto_launch.py");

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: x\r\n\r\n").is_err() {
        return false;
    }
    let mut first = [0u8; 12];
    s.read_exact(&mut first).is_ok() && first.starts_with(b"HTTP/1.") && first[9] == b'2'
}

impl MotoServer {
    pub fn start() -> Result<Self, String> {
        let bin = repo().join(".venv/bin/python3");
        if !bin.exists() {
            let status = Command::new("bash")
                .arg(repo().join("infra/local/emulator"))
                .arg("venv")
                .status()
                .map_err(|e| format!("cannot run infra/local/emulator venv: {e}"))?;
            if !status.success() {
                return Err("infra/local/emulator venv failed".into());
            }
        }
        // An ephemeral port the kernel just handed out; moto binds it right after.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(&bin)
            .args(["-c", LAUNCH, "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut server = Self {
            child,
            addr,
            killed_for_memory: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        server.watch_memory();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if answers(addr) {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("moto_server exited: {status}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("moto_server did not answer on {addr} within 30 s"))
    }

    /// The RSS past which the watchdog kills the server.
    pub fn rss_cap_mib() -> f64 {
        std::env::var("LATCH_MOTO_RSS_CAP_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3072.0)
    }

    fn watch_memory(&self) {
        let pid = self.pid();
        let (killed, stop) = (self.killed_for_memory.clone(), self.stop.clone());
        let cap = Self::rss_cap_mib();
        std::thread::spawn(move || {
            let status = format!("/proc/{pid}/status");
            while !stop.load(Ordering::SeqCst) {
                match status_mib(&status, "VmRSS:") {
                    Some(rss) if rss > cap => {
                        eprintln!("moto_server (pid {pid}) passed {cap:.0} MiB RSS ({rss:.0}); killing it");
                        killed.store(true, Ordering::SeqCst);
                        // SIGKILL by the pid we started; the Child is reaped on drop.
                        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                        return;
                    }
                    Some(_) => {}
                    None => return,
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
    }

    /// Whether the watchdog had to kill the server.
    pub fn killed_for_memory(&self) -> bool {
        self.killed_for_memory.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        peak_rss_mib(&format!("/proc/{}/status", self.pid()))
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmHWM from a `/proc/<pid>/status` file, in MiB (this process: `/proc/self/status`).
pub fn peak_rss_mib(status_path: &str) -> Option<f64> {
    status_mib(status_path, "VmHWM:")
}

fn status_mib(status_path: &str, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(status_path).ok()?;
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
