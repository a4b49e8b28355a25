//! Strict-AWS mode of the fault proxy: where moto is lenient and AWS is strict, the proxy
//! answers as AWS would. Opt in per proxy with [`FaultPlan::strict`](crate::faults::FaultPlan::strict);
//! every behaviour is switched separately on [`StrictAws`], and [`StrictAws::aws_like`] turns
//! them all on. Injected faults keep working alongside: a request the plan faults is faulted
//! first (throttles, 500s and drops-before-forward never reach this mode); a request that is
//! forwarded (clean, slow, drop-after-apply) goes through it.
//!
//! Behaviours (each verdict counted in the proxy's report as a [`StrictKind`]):
//! - **Aggregate inline-policy quota** ([`StrictAws::inline_quota`], 10,240): per role, the
//!   sum over its inline policies of the document's characters without whitespace. A
//!   PutRolePolicy that would pass it is answered `409 LimitExceeded`, not forwarded; replacing
//!   a policy counts the new size instead of the old. The proxy learns sizes from the
//!   Put/DeleteRolePolicy requests it forwards and sees answered 200: it assumes a **fresh
//!   emulator** (policies written around the proxy, or before it started, are not counted).
//! - **ConcurrentModification** ([`StrictAws::concurrent_modification`]): a Put/DeleteRolePolicy
//!   arriving while another on the same role (case-insensitive) is in flight — its latency
//!   included — is answered `409 ConcurrentModification`, not forwarded.
//! - **TransactionConflict** ([`StrictAws::transaction_conflict`]): a TransactWriteItems naming an
//!   item (table + [`StrictAws::key_attributes`]) that another TransactWriteItems in flight holds
//!   is cancelled (`400 TransactionCanceledException`, one reason per item: `TransactionConflict`
//!   for the held ones, `None` for the others); a PutItem/UpdateItem/DeleteItem on a held item is
//!   answered `400 TransactionConflictException`. Neither is forwarded.
//! - **Latency** ([`StrictAws::latency`]): per service, a delay drawn from a [`Dist`]
//!   (deterministic from the plan's seed and the service's request count), multiplied by
//!   [`StrictAws::time_scale`], held before forwarding; the request is "in flight" for the two
//!   rules above during it.
//! - **Propagation** ([`StrictAws::propagation`]): after a successful Put/DeleteRolePolicy, for
//!   the (scaled) window, GetRolePolicy and ListRolePolicies on the role are answered by the
//!   proxy **from a snapshot**: the role's state before the writes not yet visible (so a read
//!   sees the previous document, or `NoSuchEntity`, or the old name list). Same fresh-emulator
//!   assumption as the quota. DynamoDB GSI lag is not modelled. A grant's propagation probe
//!   (EventBridge `DescribeEventBus` of `latch-probe-<grant id>`, see `latch_core::probe`) is
//!   answered `AccessDeniedException` until a document naming that bus is visible on a role
//!   of the caller's account (IAM evaluates with what it has propagated), then forwarded
//!   (moto answers `ResourceNotFoundException`).
//! - **IAM rate limit** ([`StrictAws::iam_rate`]): a token bucket over all IAM requests of an
//!   account; empty → `400 Throttling` "Rate exceeded", not forwarded. The refill rate is
//!   divided by `time_scale` (the bucket runs on scaled time, like the latency).
//! - **Case-insensitive role names** ([`StrictAws::case_insensitive_roles`]): the first spelling
//!   of a role name the proxy sees succeed (CreateRole or any call naming it) is its name;
//!   later requests spelling it differently are rewritten to it, and a CreateRole of a case
//!   variant is answered `409 EntityAlreadyExists`.
//! - **Accounts** ([`StrictAws::accounts`]): access key id → account id. moto 5.2.5 picks the
//!   account from `MOTO_ACCOUNT_ID`, else an `x-moto-account-id` header, else the access key (only
//!   keys moto itself issued: CreateAccessKey, STS), else 123456789012; a 12-digit key id is
//!   *not* taken as an account. So the proxy adds `x-moto-account-id` for mapped keys, and every
//!   rule above is kept per account.
//! - **The boundary condition on PutRolePolicy** ([`StrictAws::boundary_condition`]): requests
//!   signed with a given access key are the grant role's, whose policy allows `iam:PutRolePolicy`
//!   only with `StringEquals: {iam:PermissionsBoundary: ARN}` (template.yaml, GrantPolicy). IAM
//!   evaluates that key as the target role's *current* boundary, on every call ("Filters access
//!   by whether the specified policy is set as the permissions boundary on the IAM entity",
//!   https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_iam-condition-keys.html#ck_PermissionsBoundary);
//!   a role without it, or with another one, fails the condition and no other statement allows
//!   the call: `403 AccessDenied`, not forwarded.
//! - **Create-only items** ([`StrictAws::create_only_items`]): requests signed with a given access
//!   key are a function role's, whose policy denies `dynamodb:UpdateItem`/`DeleteItem` when
//!   `dynamodb:LeadingKeys` is like `PREFIX*` (template.yaml, AuditItemsAreCreateOnly). IAM checks
//!   a transaction's Update/Delete entries as UpdateItem/DeleteItem
//!   (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html),
//!   and one denied entry denies the whole call: `400 AccessDeniedException`, not forwarded. The proxy reads the role's boundary from the
//!   emulator (a GetRole it sends itself) just before deciding, so a boundary removed after the
//!   caller resolved the role counts. DeleteRolePolicy is not conditioned (revocation works on
//!   any role), nor is any other call.
//! - **S3 Object Lock** ([`StrictAws::object_lock`], and the archive bucket's policies with
//!   [`StrictAws::archive_bucket`] / [`StrictAws::s3_caller`]): see [`s3`] for what moto already
//!   enforces and what the proxy adds (the checksum an upload into a locked bucket needs, the
//!   permission a governance bypass needs, retention that only grows, lifecycle that cannot
//!   remove a locked version).

pub mod s3;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};

use crate::faults::{Request, Response, Shared, forward_counted, header, splitmix64};
pub use s3::{BucketDeny, BucketPolicy, S3Caller, s3_operation};

/// moto's default account (`moto.core.models.DEFAULT_ACCOUNT_ID`).
pub const DEFAULT_ACCOUNT: &str = "123456789012";

/// What the strict mode answered instead of the emulator (or, for `StaleRead`, instead of the
/// emulator's current state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StrictKind {
    LimitExceeded,
    ConcurrentModification,
    TransactionConflict,
    IamThrottle,
    /// CreateRole of a case variant of an existing role: EntityAlreadyExists.
    CaseVariant,
    /// A role-policy read answered from the pre-write snapshot.
    StaleRead,
    /// A grant's propagation probe refused: no role's visible policies name its bus yet.
    ProbeDenied,
    /// Refused by IAM's evaluation of the caller's policy (the boundary condition on
    /// PutRolePolicy, the create-only rule on DynamoDB items, the archive bucket's policies).
    AccessDenied,
    /// An upload into a bucket with a default retention, without Content-MD5 or a checksum.
    ChecksumRequired,
    /// Refused by Object Lock where moto would have let it through: a bypass the caller may not
    /// use, a retention shortened or removed.
    ObjectLocked,
}

impl StrictKind {
    pub const ALL: [StrictKind; 10] = [
        Self::LimitExceeded,
        Self::ConcurrentModification,
        Self::TransactionConflict,
        Self::IamThrottle,
        Self::CaseVariant,
        Self::StaleRead,
        Self::ProbeDenied,
        Self::AccessDenied,
        Self::ChecksumRequired,
        Self::ObjectLocked,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::LimitExceeded => "limit-exceeded",
            Self::ConcurrentModification => "concurrent-mod",
            Self::TransactionConflict => "tx-conflict",
            Self::IamThrottle => "iam-throttle",
            Self::CaseVariant => "case-variant",
            Self::StaleRead => "stale-read",
            Self::ProbeDenied => "probe-denied",
            Self::AccessDenied => "access-denied",
            Self::ChecksumRequired => "checksum-required",
            Self::ObjectLocked => "object-locked",
        }
    }
}

/// A latency distribution (before [`StrictAws::time_scale`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Dist {
    Fixed(Duration),
    Uniform {
        lo: Duration,
        hi: Duration,
    },
    /// Log-normal around `median` (`sigma` of the underlying normal), clamped to `[min, max]`;
    /// with probability `tail`, uniform in `[tail_lo, tail_hi]` instead.
    LogNormal {
        median: Duration,
        sigma: f64,
        min: Duration,
        max: Duration,
        tail: f64,
        tail_lo: Duration,
        tail_hi: Duration,
    },
}

impl Dist {
    /// IAM: median 250 ms, ~95% within 150–500 ms, 3% between 1 and 4 s.
    pub fn iam() -> Self {
        Self::LogNormal {
            median: Duration::from_millis(250),
            sigma: 0.3,
            min: Duration::from_millis(120),
            max: Duration::from_millis(900),
            tail: 0.03,
            tail_lo: Duration::from_secs(1),
            tail_hi: Duration::from_secs(4),
        }
    }

    pub fn ms(lo: u64, hi: u64) -> Self {
        Self::Uniform {
            lo: Duration::from_millis(lo),
            hi: Duration::from_millis(hi),
        }
    }

    /// A draw from two uniform words.
    fn sample(&self, a: u64, b: u64) -> Duration {
        let u = |w: u64| (w >> 11) as f64 / (1u64 << 53) as f64;
        let between = |lo: Duration, hi: Duration, x: f64| lo + (hi.saturating_sub(lo)).mul_f64(x);
        match self {
            Self::Fixed(d) => *d,
            Self::Uniform { lo, hi } => between(*lo, *hi, u(a)),
            Self::LogNormal {
                median,
                sigma,
                min,
                max,
                tail,
                tail_lo,
                tail_hi,
            } => {
                if u(a) < *tail {
                    return between(*tail_lo, *tail_hi, u(b));
                }
                // Box–Muller from the rest of `a` and `b`.
                let u1 = u(a.rotate_left(29)).max(f64::MIN_POSITIVE);
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u(b)).cos();
                median.mul_f64((sigma * z).exp()).clamp(*min, *max)
            }
        }
    }
}

/// The grant role's condition on PutRolePolicy: `iam:PermissionsBoundary` and, with the
/// template's RequireElevatableTag, `aws:ResourceTag/<key>` (both StringEquals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleCondition {
    pub boundary_arn: String,
    /// (tag key, value) the role must carry.
    pub tag: Option<(String, String)>,
}

impl RoleCondition {
    /// Whether a role whose GetRole answer is `get_role` meets it.
    fn holds(&self, get_role: &str) -> bool {
        boundary_in_get_role(get_role).as_deref() == Some(self.boundary_arn.as_str())
            && self
                .tag
                .as_ref()
                .is_none_or(|(k, v)| tag_in_get_role(get_role, k).as_deref() == Some(v.as_str()))
    }
}

/// A token bucket: `burst` requests at once, `per_second` after (in scaled time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

/// Which strict behaviours are on. See the module doc for each.
#[derive(Debug, Clone, PartialEq)]
pub struct StrictAws {
    /// Multiplies every latency, the propagation window and the rate limit's clock: 1.0 is
    /// AWS's timing, 0.05 keeps a test suite fast.
    pub time_scale: f64,
    /// Characters without whitespace over all inline policies of a role; `None`: no quota.
    pub inline_quota: Option<usize>,
    pub concurrent_modification: bool,
    pub transaction_conflict: bool,
    /// Per service (`iam`, `dynamodb`, `events`, `sqs`, `dynamodbstreams`); absent: none.
    pub latency: BTreeMap<String, Dist>,
    /// How long (before scaling) a role-policy write stays invisible to reads.
    pub propagation: Option<Duration>,
    /// IAM requests per account; `None`: unlimited.
    pub iam_rate: Option<RateLimit>,
    pub case_insensitive_roles: bool,
    /// Access key id → account id (sent to moto as `x-moto-account-id`).
    pub accounts: BTreeMap<String, String>,
    /// The attributes that name an item, for transaction conflicts (Latch's table: pk, sk).
    pub key_attributes: Vec<String>,
    /// Access key id → what its PutRolePolicy calls require of the target role (the grant
    /// role's condition); absent: unconditioned.
    pub boundary_conditions: BTreeMap<String, RoleCondition>,
    /// Access key id → partition-key prefix of the items it may create but never update or delete.
    pub create_only_items: BTreeMap<String, String>,
    /// S3 Object Lock where moto is lenient (see [`s3`]).
    pub object_lock: bool,
    /// Bucket → its bucket policy: requests on it by a key in [`StrictAws::s3_callers`] are
    /// authorised as S3 would (identity policy, then the bucket policy's denies).
    pub archive_buckets: BTreeMap<String, BucketPolicy>,
    /// Access key id → the S3 caller it signs as.
    pub s3_callers: BTreeMap<String, S3Caller>,
}

impl StrictAws {
    /// Everything off: the proxy behaves as without strict mode (except the account mapping).
    pub fn off() -> Self {
        Self {
            time_scale: 1.0,
            inline_quota: None,
            concurrent_modification: false,
            transaction_conflict: false,
            latency: BTreeMap::new(),
            propagation: None,
            iam_rate: None,
            case_insensitive_roles: false,
            accounts: BTreeMap::new(),
            key_attributes: vec!["pk".into(), "sk".into()],
            boundary_conditions: BTreeMap::new(),
            create_only_items: BTreeMap::new(),
            object_lock: false,
            archive_buckets: BTreeMap::new(),
            s3_callers: BTreeMap::new(),
        }
    }

    /// Everything on, at AWS's timing (scale it with [`StrictAws::time_scale`]).
    pub fn aws_like() -> Self {
        let latency = [
            ("iam", Dist::iam()),
            ("dynamodb", Dist::ms(5, 20)),
            ("dynamodbstreams", Dist::ms(5, 20)),
            ("events", Dist::ms(20, 40)),
            ("sqs", Dist::ms(5, 20)),
        ]
        .into_iter()
        .map(|(s, d)| (s.to_owned(), d))
        .collect();
        Self {
            inline_quota: Some(10_240),
            concurrent_modification: true,
            transaction_conflict: true,
            latency,
            propagation: Some(Duration::from_secs(2)),
            iam_rate: Some(RateLimit {
                per_second: 20.0,
                burst: 20.0,
            }),
            case_insensitive_roles: true,
            object_lock: true,
            ..Self::off()
        }
    }

    /// Every verdict AWS would give, at no cost in time: no latency, and no propagation delay
    /// (roles set up just before a test have, in life, long settled).
    pub fn verdicts_only() -> Self {
        Self {
            propagation: None,
            ..Self::aws_like().no_latency()
        }
    }

    pub fn time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }

    pub fn latency_for(mut self, service: &str, dist: Dist) -> Self {
        self.latency.insert(service.to_owned(), dist);
        self
    }

    pub fn no_latency(mut self) -> Self {
        self.latency.clear();
        self
    }

    /// Requests signed with `access_key_id` go to `account_id`.
    pub fn account(mut self, access_key_id: &str, account_id: &str) -> Self {
        self.accounts.insert(access_key_id.to_owned(), account_id.to_owned());
        self
    }

    /// Requests signed with `access_key_id` may put a role policy only on a role whose
    /// permissions boundary is `boundary_arn`, as the template's grant role policy says.
    pub fn boundary_condition(mut self, access_key_id: &str, boundary_arn: &str) -> Self {
        let condition = RoleCondition {
            boundary_arn: boundary_arn.to_owned(),
            tag: None,
        };
        self.boundary_conditions.insert(access_key_id.to_owned(), condition);
        self
    }

    /// With [`StrictAws::boundary_condition`] for the same key: the role must also carry the tag
    /// `key` = `value` (`aws:ResourceTag/<key>`, the template's RequireElevatableTag).
    pub fn tag_condition(mut self, access_key_id: &str, key: &str, value: &str) -> Self {
        if let Some(condition) = self.boundary_conditions.get_mut(access_key_id) {
            condition.tag = Some((key.to_owned(), value.to_owned()));
        }
        self
    }

    /// Requests signed with `access_key_id` may not update or delete an item whose partition key
    /// starts with `prefix`, alone or in a transaction.
    pub fn create_only_items(mut self, access_key_id: &str, prefix: &str) -> Self {
        self.create_only_items
            .insert(access_key_id.to_owned(), prefix.to_owned());
        self
    }

    /// Requests on `bucket` are authorised by `policy` (its bucket policy) and the identity of
    /// their [`StrictAws::s3_caller`].
    pub fn archive_bucket(mut self, bucket: &str, policy: BucketPolicy) -> Self {
        self.archive_buckets.insert(bucket.to_owned(), policy);
        self
    }

    /// Requests signed with `access_key_id` are `caller`'s, for the archive buckets' policies.
    pub fn s3_caller(mut self, access_key_id: &str, caller: S3Caller) -> Self {
        self.s3_callers.insert(access_key_id.to_owned(), caller);
        self
    }

    fn scaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.time_scale.max(0.0))
    }
}

/// (account, role name in lower case).
type RoleKey = (String, String);
/// Policy name → decoded document.
type Policies = BTreeMap<String, String>;

/// A role's inline policies as the proxy saw them written.
#[derive(Default)]
struct RoleState {
    /// The state every read sees.
    visible: Policies,
    /// States after writes not yet visible, with when they become so (in order).
    pending: VecDeque<(Instant, Policies)>,
}

impl RoleState {
    fn current(&self) -> &Policies {
        self.pending.back().map(|(_, p)| p).unwrap_or(&self.visible)
    }

    fn settle(&mut self, now: Instant) {
        while self.pending.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, p)) = self.pending.pop_front() {
                self.visible = p;
            }
        }
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Default)]
struct Inner {
    /// Canonical spelling of each role name.
    names: HashMap<RoleKey, String>,
    roles: HashMap<RoleKey, RoleState>,
    iam_writes: HashSet<RoleKey>,
    /// Items held by transactions in flight (with a count: one transaction may be in flight
    /// twice if a client retries while the first attempt is held).
    held: HashMap<String, usize>,
    buckets: HashMap<String, Bucket>,
    latency_seq: HashMap<String, u64>,
}

pub(crate) struct StrictState {
    cfg: StrictAws,
    seed: u64,
    inner: Mutex<Inner>,
}

/// Characters IAM counts for the quota: the document without whitespace.
pub fn policy_size(document: &str) -> usize {
    document.chars().filter(|c| !c.is_whitespace()).count()
}

/// A form field (`application/x-www-form-urlencoded`), decoded.
fn form_get(body: &[u8], key: &str) -> Option<String> {
    String::from_utf8_lossy(body).split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn form_set(body: &[u8], key: &str, value: &str) -> Vec<u8> {
    String::from_utf8_lossy(body)
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k == key => format!("{k}={}", utf8_percent_encode(value, NON_ALPHANUMERIC)),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn request_id(seq: u64) -> String {
    format!("strict-{seq:016x}")
}

/// IAM's query-protocol error.
fn iam_error(status: u16, code: &str, kind: &str, message: &str) -> Response {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Error",
    };
    let body = format!(
        "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>{kind}</Type>\
         <Code>{code}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        xml_escape(message),
        request_id(0)
    );
    Response::canned(status, reason, "text/xml", body)
}

fn iam_ok(op: &str, result: &str) -> Response {
    let body = format!(
        "<{op}Response xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><{op}Result>{result}</{op}Result>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{op}Response>",
        request_id(0)
    );
    Response::canned(200, "OK", "text/xml", body)
}

fn dynamo_error(body: Value) -> Response {
    Response::canned(400, "Bad Request", "application/x-amz-json-1.0", body.to_string())
}

/// Removes `key` from the in-flight sets when dropped.
struct Release<'a> {
    state: &'a StrictState,
    role: Option<RoleKey>,
    items: Vec<String>,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let Ok(mut inner) = self.state.inner.lock() else {
            return;
        };
        if let Some(role) = self.role.take() {
            inner.iam_writes.remove(&role);
        }
        for item in self.items.drain(..) {
            if let Some(n) = inner.held.get_mut(&item) {
                *n -= 1;
                if *n == 0 {
                    inner.held.remove(&item);
                }
            }
        }
    }
}

impl StrictState {
    pub(crate) fn new(cfg: StrictAws, seed: u64) -> Self {
        Self {
            cfg,
            seed,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub(crate) fn object_lock(&self) -> bool {
        self.cfg.object_lock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn delay(&self, service: &str) -> Duration {
        let Some(dist) = self.cfg.latency.get(service) else {
            return Duration::ZERO;
        };
        let seq = {
            let mut inner = self.lock();
            let n = inner.latency_seq.entry(service.to_owned()).or_default();
            *n += 1;
            *n
        };
        let mut state = self.seed ^ crate::faults::fnv1a(service.as_bytes()) ^ seq.wrapping_mul(0x9e37_79b9);
        let a = splitmix64(&mut state);
        let b = splitmix64(&mut state);
        self.cfg.scaled(dist.sample(a, b))
    }

    /// Whether an IAM request of `account` may pass the rate limit (takes a token if so).
    fn iam_admit(&self, account: &str) -> bool {
        let Some(limit) = self.cfg.iam_rate else {
            return true;
        };
        let now = Instant::now();
        let mut inner = self.lock();
        let bucket = inner.buckets.entry(account.to_owned()).or_insert(Bucket {
            tokens: limit.burst,
            last: now,
        });
        let scale = self.cfg.time_scale.max(1e-9);
        let refill = now.duration_since(bucket.last).as_secs_f64() * limit.per_second / scale;
        bucket.tokens = (bucket.tokens + refill).min(limit.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The clean path of one request through strict mode; forwards when AWS would serve it.
    pub(crate) async fn pass(&self, shared: &Shared, key: &str, mut req: Request, service: &str, op: &str) -> Response {
        let count = |kind: StrictKind| {
            if let Ok(mut counts) = shared.counts.lock() {
                *counts
                    .entry(key.to_owned())
                    .or_default()
                    .strict
                    .entry(kind)
                    .or_default() += 1;
            }
        };
        let access_key = header(&req.head, "authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').next())
            .unwrap_or_default()
            .to_owned();
        let account = match self.cfg.accounts.get(&access_key) {
            Some(account) => {
                req.head.push_str(&format!("x-moto-account-id: {account}\r\n"));
                account.clone()
            }
            None => DEFAULT_ACCOUNT.to_owned(),
        };
        let delay = self.delay(service);
        if service == "dynamodb"
            && let Some(prefix) = self.cfg.create_only_items.get(&access_key)
            && let Some(denied) = self.changes_created_only_item(&req.body, op, prefix)
        {
            count(StrictKind::AccessDenied);
            tokio::time::sleep(delay).await;
            return dynamo_error(json!({
                "__type": "com.amazon.coral.service#AccessDeniedException",
                "Message": format!(
                    "User: {access_key} is not authorized to perform: {denied} on resource: the table \
                     with an explicit deny in an identity-based policy"
                ),
            }));
        }
        match service {
            "iam" => {
                self.iam(shared, key, req, op, (&account, &access_key), delay, &count)
                    .await
            }
            "dynamodb" if self.cfg.transaction_conflict => self.dynamodb(shared, key, req, op, delay, &count).await,
            "s3" => {
                tokio::time::sleep(delay).await;
                self.s3(shared, key, req, op, &access_key, &count).await
            }
            "events" if op == "DescribeEventBus" && self.cfg.propagation.is_some() => {
                tokio::time::sleep(delay).await;
                if self.probe_applies(&account, &req.body) {
                    forward_counted(shared, key, &req).await
                } else {
                    count(StrictKind::ProbeDenied);
                    Response::canned(
                        400,
                        "Bad Request",
                        "application/x-amz-json-1.1",
                        json!({
                            "__type": "AccessDeniedException",
                            "Message": "User is not authorized to perform: events:DescribeEventBus"
                        })
                        .to_string(),
                    )
                }
            }
            _ => {
                tokio::time::sleep(delay).await;
                forward_counted(shared, key, &req).await
            }
        }
    }

    /// IAM's answer to a grant's propagation probe: authorised once a document naming the
    /// probe bus is visible on a role of the caller's account. Roles are not told apart by
    /// caller: the bus name holds the grant id, so only the grant's own document names it.
    /// A DescribeEventBus of any other bus is authorised.
    fn probe_applies(&self, account: &str, body: &[u8]) -> bool {
        let name = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("Name").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        if !name.starts_with("latch-probe-") {
            return true;
        }
        let needle = format!("event-bus/{name}\"");
        let now = Instant::now();
        let mut inner = self.lock();
        inner
            .roles
            .iter_mut()
            .filter(|((acct, _), _)| acct == account)
            .any(|(_, state)| {
                state.settle(now);
                state.visible.values().any(|doc| doc.contains(&needle))
            })
    }

    #[allow(clippy::too_many_arguments)]
    async fn iam(
        &self,
        shared: &Shared,
        key: &str,
        mut req: Request,
        op: &str,
        (account, access_key): (&str, &str),
        delay: Duration,
        count: &(dyn Fn(StrictKind) + Sync),
    ) -> Response {
        if !self.iam_admit(account) {
            count(StrictKind::IamThrottle);
            tokio::time::sleep(delay).await;
            return iam_error(400, "Throttling", "Sender", "Rate exceeded");
        }
        let Some(asked) = form_get(&req.body, "RoleName") else {
            tokio::time::sleep(delay).await;
            return forward_counted(shared, key, &req).await;
        };
        let role_key: RoleKey = (account.to_owned(), asked.to_lowercase());
        let mut role = asked.clone();
        if self.cfg.case_insensitive_roles {
            let known = self.lock().names.get(&role_key).cloned();
            if let Some(name) = known.filter(|n| *n != asked) {
                if op == "CreateRole" {
                    count(StrictKind::CaseVariant);
                    tokio::time::sleep(delay).await;
                    return iam_error(
                        409,
                        "EntityAlreadyExists",
                        "Sender",
                        &format!("Role with name {asked} already exists."),
                    );
                }
                req.body = form_set(&req.body, "RoleName", &name);
                role = name;
            }
        }
        let required = (op == "PutRolePolicy")
            .then(|| self.cfg.boundary_conditions.get(access_key))
            .flatten();
        if let Some(required) = required
            && let Some(get_role) = self.get_role(shared, key, &req, &role).await
            && !required.holds(&get_role)
        {
            count(StrictKind::AccessDenied);
            tokio::time::sleep(delay).await;
            return iam_error(
                403,
                "AccessDenied",
                "Sender",
                &format!(
                    "User: {access_key} is not authorized to perform: iam:PutRolePolicy on resource: role {role} \
                     because no identity-based policy allows the iam:PutRolePolicy action"
                ),
            );
        }
        let response = match op {
            "PutRolePolicy" | "DeleteRolePolicy" => {
                self.role_write(shared, key, &req, op, &role, role_key.clone(), delay, count)
                    .await
            }
            "GetRolePolicy" | "ListRolePolicies" if self.cfg.propagation.is_some() => {
                let stale = {
                    let mut inner = self.lock();
                    inner.roles.get_mut(&role_key).and_then(|state| {
                        state.settle(Instant::now());
                        (!state.pending.is_empty()).then(|| state.visible.clone())
                    })
                };
                tokio::time::sleep(delay).await;
                match stale {
                    Some(visible) => {
                        count(StrictKind::StaleRead);
                        stale_read(op, &role, &req, &visible)
                    }
                    None => forward_counted(shared, key, &req).await,
                }
            }
            _ => {
                tokio::time::sleep(delay).await;
                forward_counted(shared, key, &req).await
            }
        };
        if response.status() == 200 {
            let mut inner = self.lock();
            if op == "DeleteRole" {
                inner.names.remove(&role_key);
                inner.roles.remove(&role_key);
            } else if self.cfg.case_insensitive_roles {
                inner.names.entry(role_key).or_insert(role);
            }
        }
        response
    }

    /// The role as the emulator holds it now (GetRole's XML): `None` when the role is not found
    /// (the request then goes on, and IAM's own answer is NoSuchEntity).
    async fn get_role(&self, shared: &Shared, key: &str, req: &Request, role: &str) -> Option<String> {
        let body = format!(
            "Action=GetRole&Version=2010-05-08&RoleName={}",
            utf8_percent_encode(role, NON_ALPHANUMERIC)
        );
        let get_role = Request {
            head: req.head.clone(),
            body: body.into_bytes(),
        };
        let response = forward_counted(shared, &format!("{key} (GetRole of the condition)"), &get_role).await;
        (response.status() == 200).then(|| String::from_utf8_lossy(response.body()).into_owned())
    }

    #[allow(clippy::too_many_arguments)]
    async fn role_write(
        &self,
        shared: &Shared,
        key: &str,
        req: &Request,
        op: &str,
        role: &str,
        role_key: RoleKey,
        delay: Duration,
        count: &(dyn Fn(StrictKind) + Sync),
    ) -> Response {
        let busy = {
            let mut inner = self.lock();
            let busy = self.cfg.concurrent_modification && inner.iam_writes.contains(&role_key);
            if !busy {
                inner.iam_writes.insert(role_key.clone());
            }
            busy
        };
        if busy {
            count(StrictKind::ConcurrentModification);
            tokio::time::sleep(delay).await;
            return iam_error(
                409,
                "ConcurrentModification",
                "Sender",
                &format!("Cannot perform the operation on the role {role} because another operation is in progress"),
            );
        }
        let _release = Release {
            state: self,
            role: Some(role_key.clone()),
            items: Vec::new(),
        };
        tokio::time::sleep(delay).await;
        let policy = form_get(&req.body, "PolicyName").unwrap_or_default();
        let document = form_get(&req.body, "PolicyDocument").unwrap_or_default();
        if op == "PutRolePolicy"
            && let Some(quota) = self.cfg.inline_quota
        {
            let others: usize = {
                let inner = self.lock();
                inner
                    .roles
                    .get(&role_key)
                    .map(|s| {
                        s.current()
                            .iter()
                            .filter(|(name, _)| **name != policy)
                            .map(|(_, doc)| policy_size(doc))
                            .sum()
                    })
                    .unwrap_or(0)
            };
            if others + policy_size(&document) > quota {
                count(StrictKind::LimitExceeded);
                return iam_error(
                    409,
                    "LimitExceeded",
                    "Sender",
                    &format!("Maximum policy size of {quota} bytes exceeded for role {role}"),
                );
            }
        }
        let response = forward_counted(shared, key, req).await;
        if response.status() == 200 {
            let now = Instant::now();
            let mut inner = self.lock();
            let state = inner.roles.entry(role_key).or_default();
            state.settle(now);
            let mut next = state.current().clone();
            if op == "PutRolePolicy" {
                next.insert(policy, document);
            } else {
                next.remove(&policy);
            }
            match self.cfg.propagation {
                Some(window) => state.pending.push_back((now + self.cfg.scaled(window), next)),
                None => state.visible = next,
            }
        }
        response
    }

    async fn dynamodb(
        &self,
        shared: &Shared,
        key: &str,
        req: Request,
        op: &str,
        delay: Duration,
        count: &(dyn Fn(StrictKind) + Sync),
    ) -> Response {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let mut release = Release {
            state: self,
            role: None,
            items: Vec::new(),
        };
        match op {
            "TransactWriteItems" => {
                let items: Vec<String> = body["TransactItems"]
                    .as_array()
                    .map(|a| a.iter().map(|entry| self.transact_item_key(entry)).collect())
                    .unwrap_or_default();
                let conflicts: Vec<bool> = {
                    let mut inner = self.lock();
                    let conflicts: Vec<bool> = items.iter().map(|i| inner.held.contains_key(i)).collect();
                    if !conflicts.contains(&true) {
                        let unique: HashSet<&String> = items.iter().collect();
                        for item in unique {
                            *inner.held.entry(item.clone()).or_default() += 1;
                            release.items.push(item.clone());
                        }
                    }
                    conflicts
                };
                if conflicts.contains(&true) {
                    count(StrictKind::TransactionConflict);
                    tokio::time::sleep(delay).await;
                    return dynamo_error(transaction_cancelled(&conflicts));
                }
            }
            "PutItem" | "UpdateItem" | "DeleteItem" => {
                let item = self.item_key(&body);
                if self.lock().held.contains_key(&item) {
                    count(StrictKind::TransactionConflict);
                    tokio::time::sleep(delay).await;
                    return dynamo_error(json!({
                        "__type": "com.amazonaws.dynamodb.v20120810#TransactionConflictException",
                        "message": "Transaction is ongoing for the item",
                    }));
                }
            }
            _ => {}
        }
        tokio::time::sleep(delay).await;
        let response = forward_counted(shared, key, &req).await;
        drop(release);
        response
    }

    /// The action IAM would deny if this request updates or deletes an item whose partition key
    /// starts with `prefix` (UpdateItem, DeleteItem, or such an entry of a transaction).
    fn changes_created_only_item(&self, body: &[u8], op: &str, prefix: &str) -> Option<&'static str> {
        let body: Value = serde_json::from_slice(body).ok()?;
        let pk = self.cfg.key_attributes.first()?;
        let hits = |key: &Value| key[pk.as_str()]["S"].as_str().is_some_and(|v| v.starts_with(prefix));
        match op {
            "UpdateItem" if hits(&body["Key"]) => Some("dynamodb:UpdateItem"),
            "DeleteItem" if hits(&body["Key"]) => Some("dynamodb:DeleteItem"),
            "TransactWriteItems" => body["TransactItems"].as_array()?.iter().find_map(|entry| {
                if hits(&entry["Update"]["Key"]) {
                    Some("dynamodb:UpdateItem")
                } else if hits(&entry["Delete"]["Key"]) {
                    Some("dynamodb:DeleteItem")
                } else {
                    None
                }
            }),
            _ => None,
        }
    }

    /// `Put` / `Update` / `Delete` / `ConditionCheck` of one TransactItems entry.
    fn transact_item_key(&self, entry: &Value) -> String {
        let op = entry
            .as_object()
            .and_then(|o| o.values().next())
            .unwrap_or(&Value::Null);
        self.item_key(op)
    }

    /// Table and key attributes of a request naming one item (`Key`, or `Item` for a put).
    fn item_key(&self, op: &Value) -> String {
        let table = op["TableName"].as_str().unwrap_or_default();
        let attrs = op.get("Key").or_else(|| op.get("Item")).unwrap_or(&Value::Null);
        let mut out = table.to_owned();
        let mut named = false;
        for a in &self.cfg.key_attributes {
            if let Some(v) = attrs.get(a) {
                let _ = write!(out, "\u{0}{a}={v}");
                named = true;
            }
        }
        if !named {
            let _ = write!(out, "\u{0}{attrs}");
        }
        out
    }
}

/// An SDK configuration for a (strict) proxy at `endpoint`, signing with `access_key_id` (map
/// it to an account with [`StrictAws::account`]), with the SDK's retries off so every verdict
/// reaches the caller. A second deployment sharing the same IAM is a second
/// [`Harness::with_sdk`](crate::Harness::with_sdk) on the same configuration: its own table and
/// bus, the proxy's IAM state shared.
pub async fn sdk_config(endpoint: &str, access_key_id: &str) -> aws_config::SdkConfig {
    let creds = aws_sdk_iam::config::Credentials::new(access_key_id, "test", None, None, "strict");
    latch_aws::config::sdk_loader()
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await
}

/// The `PermissionsBoundaryArn` of a GetRole answer (XML), if the role has one.
fn boundary_in_get_role(xml: &str) -> Option<String> {
    let start = xml.find("<PermissionsBoundaryArn>")? + "<PermissionsBoundaryArn>".len();
    let end = start + xml[start..].find("</PermissionsBoundaryArn>")?;
    Some(xml[start..end].trim().to_owned())
}

/// The value of tag `key` in a GetRole answer (XML), if the role carries it.
fn tag_in_get_role(xml: &str, key: &str) -> Option<String> {
    let tags = &xml[xml.find("<Tags>")?..];
    let tags = &tags[..tags.find("</Tags>")?];
    let after_key = &tags[tags.find(&format!("<Key>{}</Key>", xml_escape(key)))?..];
    let start = after_key.find("<Value>")? + "<Value>".len();
    let end = start + after_key[start..].find("</Value>")?;
    Some(after_key[start..end].to_owned())
}

/// DynamoDB's cancellation: one reason per item, in order.
pub fn transaction_cancelled(conflicts: &[bool]) -> Value {
    let codes: Vec<&str> = conflicts
        .iter()
        .map(|c| if *c { "TransactionConflict" } else { "None" })
        .collect();
    let reasons: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            if *c {
                json!({"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"})
            } else {
                json!({"Code": "None"})
            }
        })
        .collect();
    json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": format!(
            "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
            codes.join(", ")
        ),
        "CancellationReasons": reasons,
    })
}

/// GetRolePolicy / ListRolePolicies answered from the visible (pre-write) state.
fn stale_read(op: &str, role: &str, req: &Request, visible: &Policies) -> Response {
    if op == "ListRolePolicies" {
        let members: String = visible
            .keys()
            .map(|n| format!("<member>{}</member>", xml_escape(n)))
            .collect();
        return iam_ok(
            op,
            &format!("<PolicyNames>{members}</PolicyNames><IsTruncated>false</IsTruncated>"),
        );
    }
    let policy = form_get(&req.body, "PolicyName").unwrap_or_default();
    match visible.get(&policy) {
        Some(doc) => iam_ok(
            op,
            &format!(
                "<RoleName>{}</RoleName><PolicyName>{}</PolicyName><PolicyDocument>{}</PolicyDocument>",
                xml_escape(role),
                xml_escape(&policy),
                utf8_percent_encode(doc, NON_ALPHANUMERIC)
            ),
        ),
        None => iam_error(
            404,
            "NoSuchEntity",
            "Sender",
            &format!("The role policy with name {policy} cannot be found."),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_ignore_whitespace_and_forms_decode() {
        assert_eq!(policy_size("{ \"a\" :\n\t1 }"), 7);
        let body = b"Action=PutRolePolicy&RoleName=ci-Deployer&PolicyDocument=%7B%20%22a%22%3A1%7D";
        assert_eq!(form_get(body, "PolicyDocument").as_deref(), Some("{ \"a\":1}"));
        let rewritten = form_set(body, "RoleName", "CI-deployer");
        assert_eq!(form_get(&rewritten, "RoleName").as_deref(), Some("CI-deployer"));
        assert_eq!(form_get(&rewritten, "Action").as_deref(), Some("PutRolePolicy"));
    }

    #[test]
    fn iam_latency_is_mostly_150_to_500_ms_with_a_tail() {
        let state = StrictState::new(StrictAws::aws_like(), 3);
        let draws: Vec<Duration> = (0..2000).map(|_| state.delay("iam")).collect();
        let within = draws
            .iter()
            .filter(|d| (Duration::from_millis(150)..=Duration::from_millis(500)).contains(*d))
            .count();
        let tail = draws.iter().filter(|d| **d >= Duration::from_secs(1)).count();
        assert!(within > 1700, "{within} of 2000 within 150–500 ms");
        assert!((20..120).contains(&tail), "{tail} of 2000 past 1 s");
        let again = StrictState::new(StrictAws::aws_like(), 3);
        assert_eq!(draws, (0..2000).map(|_| again.delay("iam")).collect::<Vec<_>>());
        let dynamo: Vec<Duration> = (0..200).map(|_| state.delay("dynamodb")).collect();
        assert!(
            dynamo
                .iter()
                .all(|d| (Duration::from_millis(5)..=Duration::from_millis(20)).contains(d))
        );
    }

    #[test]
    fn a_get_role_answer_gives_its_boundary_or_none() {
        let with = "<GetRoleResponse><GetRoleResult><Role><RoleName>r</RoleName><PermissionsBoundary>\
                    <PermissionsBoundaryType>Policy</PermissionsBoundaryType>\
                    <PermissionsBoundaryArn>arn:aws:iam::123456789012:policy/b</PermissionsBoundaryArn>\
                    </PermissionsBoundary></Role></GetRoleResult></GetRoleResponse>";
        assert_eq!(
            boundary_in_get_role(with).as_deref(),
            Some("arn:aws:iam::123456789012:policy/b")
        );
        assert_eq!(
            boundary_in_get_role("<GetRoleResponse><Role><RoleName>r</RoleName></Role></GetRoleResponse>"),
            None
        );
        let tagged = "<Role><Tags><member><Key>team</Key><Value>a</Value></member>\
                      <member><Key>latch:elevatable</Key><Value>true</Value></member></Tags></Role>";
        assert_eq!(tag_in_get_role(tagged, "latch:elevatable").as_deref(), Some("true"));
        assert_eq!(tag_in_get_role(tagged, "owner"), None);
        let condition = RoleCondition {
            boundary_arn: "arn:aws:iam::123456789012:policy/b".into(),
            tag: Some(("latch:elevatable".into(), "true".into())),
        };
        assert!(!condition.holds(with), "the boundary without the tag");
        let both = with.replace(
            "</Role>",
            "<Tags><member><Key>latch:elevatable</Key><Value>true</Value></member></Tags></Role>",
        );
        assert!(condition.holds(&both));
    }

    #[test]
    fn only_updates_and_deletes_of_created_only_items_are_denied() {
        let state = StrictState::new(StrictAws::off().create_only_items("k", "AUDIT#"), 1);
        let key = |pk: &str| json!({"pk": {"S": pk}, "sk": {"S": "AUDIT"}});
        let body = |v: Value| v.to_string().into_bytes();
        let deny = |op: &str, v: Value| state.changes_created_only_item(&body(v), op, "AUDIT#");
        assert_eq!(
            deny("UpdateItem", json!({"Key": key("AUDIT#1")})),
            Some("dynamodb:UpdateItem")
        );
        assert_eq!(
            deny("DeleteItem", json!({"Key": key("AUDIT#1")})),
            Some("dynamodb:DeleteItem")
        );
        assert_eq!(deny("UpdateItem", json!({"Key": key("GRANT#1")})), None);
        assert_eq!(
            deny("PutItem", json!({"Item": key("AUDIT#1")})),
            None,
            "creating stays allowed"
        );
        let tx = |entry: Value| json!({"TransactItems": [{"Put": {"Item": key("AUDIT#2")}}, entry]});
        assert_eq!(
            deny("TransactWriteItems", tx(json!({"Update": {"Key": key("AUDIT#1")}}))),
            Some("dynamodb:UpdateItem")
        );
        assert_eq!(
            deny("TransactWriteItems", tx(json!({"Update": {"Key": key("ROLE#r")}}))),
            None
        );
    }

    #[test]
    fn cancellation_message_lists_every_reason() {
        let v = transaction_cancelled(&[false, true]);
        assert_eq!(
            v["Message"],
            "Transaction cancelled, please refer cancellation reasons for specific reasons [None, TransactionConflict]"
        );
        assert_eq!(v["CancellationReasons"][1]["Code"], "TransactionConflict");
        assert_eq!(v["CancellationReasons"][0], json!({"Code": "None"}));
    }
}
