//! A fault-injecting HTTP/1.1 proxy on loopback, between the SDK clients and the emulator.
//!
//! Contract: every request is classified by service and operation (`X-Amz-Target` for the JSON
//! protocols of DynamoDB, DynamoDB Streams, EventBridge and SQS; `Action=` in the form body for
//! IAM's query protocol; method, path and sub-resource for S3's REST protocol, path-style, see
//! [`crate::strict::s3_operation`]) and, at the rate configured for that operation (else its service, else
//! zero), gets one fault instead of a clean pass:
//!
//! - [`FaultKind::Throttle`]: the service's own throttling error in its real wire shape
//!   (DynamoDB `ThrottlingException` / `ProvisionedThroughputExceededException`, JSON 400; IAM
//!   `Throttling`, XML 400; EventBridge `ThrottlingException`, JSON 400). Never forwarded.
//! - [`FaultKind::ServerError`]: the service's internal error, HTTP 500. Never forwarded.
//! - [`FaultKind::SlowResponse`]: forwarded (the emulator applies it), the response held for
//!   [`FaultPlan::slow_for`], longer than the client's attempt timeout, then written if the
//!   client is still there.
//! - [`FaultKind::DropBeforeForward`]: the connection is closed after reading the request.
//! - [`FaultKind::DropAfterApply`]: forwarded and applied, then the connection is closed without
//!   a response: the ambiguous failure a retry must survive.
//!
//! Decisions are deterministic: the n-th request of an operation gets the same verdict for the
//! same seed, whatever the wall clock, so a run with one request in flight at a time replays
//! exactly; with more in flight, which request is n-th depends on scheduling. Counts per
//! operation and kind are kept and read with [`FaultProxy::report`].
//!
//! The emulator (moto) is not safe under concurrent requests: a cancelled transaction restores
//! a whole-table snapshot taken before it, undoing writes made meanwhile, and concurrent
//! transactions sometimes fail with a bare HTTP 500. With [`FaultPlan::serialize_upstream`] the
//! proxy forwards one request at a time, which restores the per-request atomicity DynamoDB has;
//! clients still run concurrently (their backoffs, timeouts and held responses overlap).
//!
//! With [`FaultPlan::strict`] the requests the plan lets through (and those it forwards before
//! holding or dropping the response) pass the strict-AWS mode of [`crate::strict`] first: AWS's
//! quotas, conflicts, latency, propagation and rate limit where moto has none.
//!
//! Framing: requests are read by `Content-Length` (or chunked); each forwarded request goes on
//! a fresh upstream connection with `Connection: close` and the response is read to its end, so
//! it is re-framed with a `Content-Length` and the client's connection stays alive.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::strict::{StrictAws, StrictKind, StrictState};

/// What a faulted request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    Throttle,
    ServerError,
    SlowResponse,
    DropBeforeForward,
    DropAfterApply,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        Self::Throttle,
        Self::ServerError,
        Self::SlowResponse,
        Self::DropBeforeForward,
        Self::DropAfterApply,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Throttle => "throttle",
            Self::ServerError => "500",
            Self::SlowResponse => "slow",
            Self::DropBeforeForward => "drop-before",
            Self::DropAfterApply => "drop-after-apply",
        }
    }
}

/// Where and how often to inject, and which kinds.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub seed: u64,
    /// Fault rate (0..=1) per service (`dynamodb`, `iam`, `events`, `sqs`, `dynamodbstreams`).
    pub service_rates: BTreeMap<String, f64>,
    /// Fault rate per `service.Operation`; wins over the service's rate.
    pub op_rates: BTreeMap<String, f64>,
    /// Relative weights of the kinds among faults.
    pub weights: Vec<(FaultKind, u32)>,
    /// How long a slow response is held: more than the client's attempt timeout.
    pub slow_for: Duration,
    pub serialize_upstream: bool,
    /// Strict-AWS mode (see [`crate::strict`]); `None`: moto's own leniency.
    pub strict: Option<StrictAws>,
}

impl FaultPlan {
    /// No faults; every kind equally likely once a rate is set.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            service_rates: BTreeMap::new(),
            op_rates: BTreeMap::new(),
            weights: FaultKind::ALL.iter().map(|k| (*k, 1)).collect(),
            slow_for: Duration::from_secs(3),
            serialize_upstream: true,
            strict: None,
        }
    }

    /// Answer as AWS would where the emulator is lenient (see [`crate::strict`]).
    pub fn strict(mut self, strict: StrictAws) -> Self {
        self.strict = Some(strict);
        self
    }

    pub fn service(mut self, service: &str, rate: f64) -> Self {
        self.service_rates.insert(service.to_owned(), rate);
        self
    }

    pub fn op(mut self, service: &str, op: &str, rate: f64) -> Self {
        self.op_rates.insert(format!("{service}.{op}"), rate);
        self
    }

    pub fn weights(mut self, weights: &[(FaultKind, u32)]) -> Self {
        self.weights = weights.to_vec();
        self
    }

    pub fn slow_for(mut self, d: Duration) -> Self {
        self.slow_for = d;
        self
    }

    fn rate(&self, service: &str, op: &str) -> f64 {
        self.op_rates
            .get(&format!("{service}.{op}"))
            .or_else(|| self.service_rates.get(service))
            .copied()
            .unwrap_or(0.0)
    }

    /// The verdict for the `seq`-th request of `service.op`, and one more random word for the
    /// fault's details (which throttling code).
    fn decide(&self, service: &str, op: &str, seq: u64) -> (Option<FaultKind>, u64) {
        let mut state = self.seed ^ fnv1a(service.as_bytes()) ^ fnv1a(op.as_bytes()).rotate_left(17) ^ seq;
        let roll = splitmix64(&mut state);
        let pick = splitmix64(&mut state);
        let detail = splitmix64(&mut state);
        let rate = self.rate(service, op);
        // 53 bits of the word as a fraction in [0, 1).
        if (roll >> 11) as f64 / (1u64 << 53) as f64 >= rate {
            return (None, detail);
        }
        let total: u64 = self.weights.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return (None, detail);
        }
        let mut at = pick % total;
        for (kind, w) in &self.weights {
            if at < u64::from(*w) {
                return (Some(*kind), detail);
            }
            at -= u64::from(*w);
        }
        (None, detail)
    }
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Counts for one operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Requests the proxy read.
    pub requests: u64,
    /// Requests that reached the emulator (clean, slow, drop-after-apply).
    pub forwarded: u64,
    pub faults: BTreeMap<FaultKind, u64>,
    /// 5xx answers the emulator gave by itself (not injected).
    pub upstream_5xx: u64,
    /// Strict-AWS verdicts (answered by the proxy as AWS would, or from a stale snapshot).
    pub strict: BTreeMap<StrictKind, u64>,
}

impl OpCounts {
    pub fn injected(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// Counts per `service.Operation`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultReport(pub BTreeMap<String, OpCounts>);

impl FaultReport {
    pub fn injected(&self) -> u64 {
        self.0.values().map(OpCounts::injected).sum()
    }

    pub fn requests(&self) -> u64 {
        self.0.values().map(|c| c.requests).sum()
    }

    pub fn by_kind(&self) -> BTreeMap<FaultKind, u64> {
        let mut out = BTreeMap::new();
        for c in self.0.values() {
            for (k, n) in &c.faults {
                *out.entry(*k).or_default() += n;
            }
        }
        out
    }

    /// Strict-AWS verdicts over all operations.
    pub fn strict_by_kind(&self) -> BTreeMap<StrictKind, u64> {
        let mut out = BTreeMap::new();
        for c in self.0.values() {
            for (k, n) in &c.strict {
                *out.entry(*k).or_default() += n;
            }
        }
        out
    }

    /// One strict verdict's count for one `service.Operation` (0 if none).
    pub fn strict_count(&self, op: &str, kind: StrictKind) -> u64 {
        self.0.get(op).and_then(|c| c.strict.get(&kind)).copied().unwrap_or(0)
    }
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "| operation | requests | forwarded |")?;
        for k in FaultKind::ALL {
            write!(f, " {} |", k.label())?;
        }
        write!(f, " injected | emulator 5xx |")?;
        for k in StrictKind::ALL {
            write!(f, " {} |", k.label())?;
        }
        writeln!(f)?;
        write!(f, "|---|---:|---:|")?;
        for _ in FaultKind::ALL {
            write!(f, "---:|")?;
        }
        write!(f, "---:|---:|")?;
        for _ in StrictKind::ALL {
            write!(f, "---:|")?;
        }
        writeln!(f)?;
        let mut total = OpCounts::default();
        for (op, c) in &self.0 {
            write_row(f, op, c)?;
            total.requests += c.requests;
            total.forwarded += c.forwarded;
            total.upstream_5xx += c.upstream_5xx;
            for (k, n) in &c.faults {
                *total.faults.entry(*k).or_default() += n;
            }
            for (k, n) in &c.strict {
                *total.strict.entry(*k).or_default() += n;
            }
        }
        write_row(f, "total", &total)
    }
}

fn write_row(f: &mut fmt::Formatter<'_>, op: &str, c: &OpCounts) -> fmt::Result {
    write!(f, "| {op} | {} | {} |", c.requests, c.forwarded)?;
    for k in FaultKind::ALL {
        write!(f, " {} |", c.faults.get(&k).copied().unwrap_or(0))?;
    }
    write!(f, " {} | {} |", c.injected(), c.upstream_5xx)?;
    for k in StrictKind::ALL {
        write!(f, " {} |", c.strict.get(&k).copied().unwrap_or(0))?;
    }
    writeln!(f)
}

pub(crate) struct Shared {
    plan: FaultPlan,
    upstream: SocketAddr,
    pub(crate) counts: Mutex<BTreeMap<String, OpCounts>>,
    enabled: AtomicBool,
    serial: tokio::sync::Mutex<()>,
    strict: Option<StrictState>,
}

/// The running proxy; it stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr, plan: FaultPlan) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let strict = plan.strict.clone().map(|s| StrictState::new(s, plan.seed));
        let shared = Arc::new(Shared {
            strict,
            plan,
            upstream,
            counts: Mutex::new(BTreeMap::new()),
            enabled: AtomicBool::new(true),
            serial: tokio::sync::Mutex::new(()),
        });
        let accept = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, accept.clone()));
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// A proxy in front of the shared emulator the suite runs (`AWS_ENDPOINT_URL`, started by
    /// the README's test command).
    pub async fn in_front_of_shared_emulator(plan: FaultPlan) -> Self {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (run the README's test command)");
        let upstream = endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("the emulator's address");
        Self::start(upstream, plan).await.expect("the proxy")
    }

    /// The endpoint URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Faults on (the default) or off; counting goes on either way. Strict mode stays on.
    pub fn set_enabled(&self, on: bool) {
        self.shared.enabled.store(on, Ordering::SeqCst);
    }

    /// Runs `bucket`'s lifecycle expiration as S3 would at `at` (see
    /// [`crate::strict::s3::run_lifecycle`]): with strict mode's Object Lock on, a version under
    /// retention at `at` is kept; without, the emulator alone decides.
    pub async fn run_s3_lifecycle(
        &self,
        bucket: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> crate::strict::s3::LifecycleRun {
        let object_lock = self.shared.strict.as_ref().is_some_and(StrictState::object_lock);
        crate::strict::s3::run_lifecycle(&self.shared, bucket, at, object_lock).await
    }

    pub fn report(&self) -> FaultReport {
        FaultReport(self.shared.counts.lock().map(|c| c.clone()).unwrap_or_default())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/1.1 request as read from the client.
pub(crate) struct Request {
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.head, name)
    }

    /// (service, operation), e.g. ("dynamodb", "TransactWriteItems"), ("iam", "PutRolePolicy").
    fn classify(&self) -> (String, String) {
        if let Some(target) = self.header("x-amz-target") {
            let (prefix, op) = target.split_once('.').unwrap_or((target, "?"));
            let service = match prefix {
                p if p.starts_with("DynamoDBStreams") => "dynamodbstreams",
                p if p.starts_with("DynamoDB") => "dynamodb",
                "AWSEvents" => "events",
                "AmazonSQS" => "sqs",
                other => other,
            };
            return (service.to_owned(), op.to_owned());
        }
        // Query protocol (IAM): the service from the signature's credential scope, the
        // operation from the form body.
        let service = self
            .header("authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').nth(3))
            .unwrap_or("unknown")
            .to_owned();
        if service == "s3" {
            return (service, crate::strict::s3_operation(&self.head).to_owned());
        }
        let op = String::from_utf8_lossy(&self.body)
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action=").map(str::to_owned))
            .unwrap_or_else(|| "?".to_owned());
        (service, op)
    }
}

pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads a message head (up to and including the blank line); `None` at a clean end of stream.
async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<String>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(invalid("eof in head"))
            };
        }
        if head.len() + line.len() > 64 * 1024 {
            return Err(invalid("head too large"));
        }
        if line == "\r\n" && !head.is_empty() {
            return Ok(Some(head));
        }
        if line == "\r\n" {
            continue; // stray CRLF between messages
        }
        head.push_str(&line);
    }
}

/// A body framed by the head: Content-Length or chunked.
async fn read_body<R: AsyncBufReadExt + Unpin>(r: &mut R, head: &str) -> std::io::Result<Vec<u8>> {
    if header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return read_chunked(r).await;
    }
    let len: usize = header(head, "content-length")
        .map(|v| v.parse().map_err(|_| invalid("content-length")))
        .transpose()?
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    Ok(body)
}

async fn read_chunked<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).await?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| invalid("chunk size"))?;
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t).await? == 0 || t == "\r\n" {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..]).await?;
        let mut crlf = [0; 2];
        r.read_exact(&mut crlf).await?;
    }
}

/// A response to hand back to the client, framed by Content-Length.
pub(crate) struct Response {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    pub(crate) fn status(&self) -> u16 {
        self.status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub(crate) fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    pub(crate) fn body(&self) -> &[u8] {
        &self.body
    }

    pub(crate) fn canned(status: u16, reason: &str, content_type: &str, body: String) -> Self {
        Self {
            status_line: format!("HTTP/1.1 {status} {reason}"),
            headers: vec![
                ("Content-Type".into(), content_type.into()),
                ("x-amzn-RequestId".into(), "fault-proxy".into()),
            ],
            body: body.into_bytes(),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.status_line);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// The service's own error in its wire shape.
fn injected_error(service: &str, kind: FaultKind, detail: u64) -> Response {
    let throttle = kind == FaultKind::Throttle;
    let (status, reason) = if throttle {
        (400, "Bad Request")
    } else {
        (500, "Internal Server Error")
    };
    match service {
        "iam" => {
            let (code, kind_of) = if throttle {
                ("Throttling", "Sender")
            } else {
                ("ServiceFailure", "Receiver")
            };
            let body = format!(
                "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>{kind_of}</Type>\
                 <Code>{code}</Code><Message>Rate exceeded (injected)</Message></Error>\
                 <RequestId>fault-proxy</RequestId></ErrorResponse>"
            );
            Response::canned(status, reason, "text/xml", body)
        }
        "dynamodb" | "dynamodbstreams" => {
            let code = match (throttle, detail % 2) {
                (true, 0) => "ThrottlingException",
                (true, _) => "ProvisionedThroughputExceededException",
                (false, _) => "InternalServerError",
            };
            let body = format!(
                "{{\"__type\":\"com.amazonaws.dynamodb.v20120810#{code}\",\"message\":\"injected by the fault proxy\"}}"
            );
            Response::canned(status, reason, "application/x-amz-json-1.0", body)
        }
        _ => {
            let code = if throttle {
                "ThrottlingException"
            } else {
                "InternalException"
            };
            let body = format!("{{\"__type\":\"{code}\",\"message\":\"injected by the fault proxy\"}}");
            Response::canned(status, reason, "application/x-amz-json-1.1", body)
        }
    }
}

/// Sends the request upstream on a fresh connection and reads the whole response.
async fn forward(upstream: SocketAddr, req: &Request) -> std::io::Result<Response> {
    let mut conn = TcpStream::connect(upstream).await?;
    let _ = conn.set_nodelay(true);
    let mut lines = req.head.split("\r\n").filter(|l| !l.is_empty());
    let mut out = format!("{}\r\n", lines.next().unwrap_or_default());
    for line in lines {
        let name = line.split(':').next().unwrap_or_default().trim();
        if ["connection", "keep-alive", "transfer-encoding", "content-length"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "Connection: close\r\nContent-Length: {}\r\n\r\n",
        req.body.len()
    ));
    conn.write_all(out.as_bytes()).await?;
    conn.write_all(&req.body).await?;
    let mut reader = BufReader::new(conn);
    let head = read_head(&mut reader).await?.ok_or_else(|| invalid("no response"))?;
    // A HEAD answer (S3's HeadObject) names the object's length but carries no body.
    let body = if req.head.starts_with("HEAD ") {
        Vec::new()
    } else if header(&head, "transfer-encoding").is_some() || header(&head, "content-length").is_some() {
        read_body(&mut reader, &head).await?
    } else {
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await?;
        rest
    };
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let status_line = lines.next().unwrap_or("HTTP/1.1 502 Bad Gateway").to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| {
            !["connection", "keep-alive", "transfer-encoding", "content-length"]
                .iter()
                .any(|h| k.eq_ignore_ascii_case(h))
        })
        .collect();
    Ok(Response {
        status_line,
        headers,
        body,
    })
}

pub(crate) async fn forward_counted(shared: &Shared, key: &str, req: &Request) -> Response {
    let result = if shared.plan.serialize_upstream {
        let _one = shared.serial.lock().await;
        forward(shared.upstream, req).await
    } else {
        forward(shared.upstream, req).await
    };
    let response = result.unwrap_or_else(|e| {
        Response::canned(
            502,
            "Bad Gateway",
            "text/plain",
            format!("fault proxy: upstream failed: {e}"),
        )
    });
    if let Ok(mut counts) = shared.counts.lock() {
        let c = counts.entry(key.to_owned()).or_default();
        c.forwarded += 1;
        if response.status() >= 500 {
            c.upstream_5xx += 1;
        }
    }
    response
}

/// A request the plan lets through (or forwards before holding or dropping its response):
/// through strict mode when it is on.
async fn pass(shared: &Shared, key: &str, req: Request, service: &str, op: &str) -> Response {
    match &shared.strict {
        Some(strict) => strict.pass(shared, key, req, service, op).await,
        None => forward_counted(shared, key, &req).await,
    }
}

/// Serves one client connection, request after request (keep-alive).
async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let Ok(Some(head)) = read_head(&mut reader).await else {
            return;
        };
        let Ok(body) = read_body(&mut reader, &head).await else {
            return;
        };
        let req = Request { head, body };
        let (service, op) = req.classify();
        let key = format!("{service}.{op}");
        let (fault, detail) = {
            let Ok(mut counts) = shared.counts.lock() else {
                return;
            };
            let c = counts.entry(key.clone()).or_default();
            let seq = c.requests;
            c.requests += 1;
            let (fault, detail) = shared.plan.decide(&service, &op, seq);
            let fault = fault.filter(|_| shared.enabled.load(Ordering::SeqCst));
            if let Some(k) = fault {
                *c.faults.entry(k).or_default() += 1;
            }
            (fault, detail)
        };
        let response = match fault {
            Some(kind @ (FaultKind::Throttle | FaultKind::ServerError)) => injected_error(&service, kind, detail),
            Some(FaultKind::DropBeforeForward) => return,
            Some(FaultKind::DropAfterApply) => {
                pass(&shared, &key, req, &service, &op).await;
                return;
            }
            Some(FaultKind::SlowResponse) => {
                let response = pass(&shared, &key, req, &service, &op).await;
                tokio::time::sleep(shared.plan.slow_for).await;
                response
            }
            None => pass(&shared, &key, req, &service, &op).await,
        };
        if write.write_all(&response.to_bytes()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_deterministic_and_follow_the_rate() {
        let plan = FaultPlan::new(7).service("dynamodb", 0.2);
        let a: Vec<_> = (0..2000).map(|i| plan.decide("dynamodb", "PutItem", i).0).collect();
        let b: Vec<_> = (0..2000).map(|i| plan.decide("dynamodb", "PutItem", i).0).collect();
        assert_eq!(a, b);
        let faults = a.iter().filter(|f| f.is_some()).count();
        assert!((300..500).contains(&faults), "{faults} of 2000 at 20%");
        assert!((0..100).all(|i| plan.decide("iam", "PutRolePolicy", i).0.is_none()));
        let plan = plan.op("iam", "PutRolePolicy", 1.0);
        assert!((0..100).all(|i| plan.decide("iam", "PutRolePolicy", i).0.is_some()));
    }
}
