//! S3 Object Lock in the strict-AWS mode: the audit archive's immutability as S3 enforces it,
//! where moto 5.2.5 is lenient.
//!
//! What moto already does, and the proxy leaves to it: a bucket created with Object Lock is
//! versioned; a PUT creates a new version carrying the bucket's default retention (mode and
//! retain-until date); `DeleteObject` of a version under retention is refused `403 AccessDenied`
//! (COMPLIANCE always); a `DeleteObject` without a version id only adds a delete marker.
//!
//! Where moto is lenient, and the proxy answers as S3 does (each switched by
//! [`StrictAws::object_lock`](super::StrictAws::object_lock), on in `aws_like`):
//! - **Checksum on locked uploads.** "The Content-MD5 or x-amz-sdk-checksum-algorithm header is
//!   required for any request to upload an object with a retention period configured using
//!   Amazon S3 Object Lock" (PutObject,
//!   <https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html>), a bucket's default
//!   retention included ("If you configure a default retention period on a bucket, requests to
//!   upload objects in such a bucket must include the Content-MD5 header",
//!   <https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock-overview.html>). A
//!   PutObject/UploadPart to such a bucket with neither `Content-MD5`, an `x-amz-checksum-*`
//!   header nor an `x-amz-trailer` naming one is answered `400 InvalidRequest`, not forwarded.
//!   moto accepts it.
//! - **Governance bypass needs the permission.** "To override or remove governance-mode
//!   retention settings, a user must have the `s3:BypassGovernanceRetention` permission and must
//!   explicitly include `x-amz-bypass-governance-retention:true`"
//!   (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock-overview.html>,
//!   "Bypassing governance mode" in
//!   <https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock-managing.html>). moto
//!   bypasses for anyone who sends the header with any value. The proxy passes the header on only
//!   when it says `true` and the caller may bypass (identity policy and bucket policy, below);
//!   otherwise it removes it, so the emulator's own lock check refuses a locked version.
//! - **Retention only grows.** "When an object is locked in compliance mode, its retention mode
//!   can't be changed, and its retention period can't be shortened"; in governance mode only a
//!   bypass may shorten or remove it; anyone allowed `s3:PutObjectRetention` may extend it
//!   (object-lock-overview.html). moto's PutObjectRetention replaces whatever is there. The proxy
//!   reads the version's retention (a HeadObject it sends itself) and answers a shortening,
//!   weakening (COMPLIANCE to GOVERNANCE) or removal of a retention not yet past `403
//!   AccessDenied`, not forwarded (GOVERNANCE with an honoured bypass excepted).
//! - **Lifecycle cannot remove a locked version.** "protected object versions remain safe from
//!   being deleted or overwritten by a lifecycle configuration" (object-lock-managing.html,
//!   "Managing delete markers and object lifecycles"). moto stores lifecycle rules and never runs
//!   them; [`FaultProxy::run_s3_lifecycle`](crate::faults::FaultProxy::run_s3_lifecycle) runs a
//!   bucket's expiration rules as S3 would at a given time ([`run_lifecycle`]), deleting only
//!   versions whose retention has passed by then.
//!
//! The archive bucket's authorisation (opt in per bucket with
//! [`StrictAws::archive_bucket`](super::StrictAws::archive_bucket)): the callers' identity
//! policies ([`S3Caller`], by access key) and the bucket policy ([`BucketPolicy`], read from
//! template.yaml's `ArchiveBucketPolicy` by [`BucketPolicy::from_template`], so the model is the
//! template's statements, not a copy of them). A request whose action the caller's identity does
//! not allow, or a bucket-policy Deny matches, is answered `403 AccessDenied`, not forwarded; the
//! account's root user has every identity permission, and explicit denies still apply to it. A
//! key with no [`S3Caller`] is not authorised by the proxy (it stands for the test's own setup).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_yaml::Value as Yaml;

use super::StrictKind;
use crate::faults::{Request, Response, Shared, forward_counted, header};

/// S3's answer to an upload into a bucket with a default retention, without a checksum.
pub const CHECKSUM_REQUIRED: &str =
    "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters";

/// A caller of S3, as the archive bucket's policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Caller {
    /// `aws:PrincipalArn`: a role's ARN, or `arn:aws:iam::<account>:root` for the root user.
    pub principal_arn: String,
    /// The S3 actions its identity-based policies allow (`s3:*` and `s3:Get*` forms match as IAM
    /// does); ignored for the root user, who is allowed every action.
    pub allows: Vec<String>,
}

impl S3Caller {
    /// The role the template's `ArchiveDeliveryPolicy` allows: the S3 actions of its statements.
    pub fn from_template_role(template_yaml: &str, policy_resource: &str, role_arn: &str) -> Result<Self, String> {
        let template: Yaml = serde_yaml::from_str(template_yaml).map_err(|e| format!("template.yaml: {e}"))?;
        let statements = &template["Resources"][policy_resource]["Properties"]["PolicyDocument"]["Statement"];
        let statements = statements
            .as_sequence()
            .ok_or_else(|| format!("{policy_resource}: no statements"))?;
        let mut allows = Vec::new();
        for s in statements {
            if s["Effect"].as_str() != Some("Allow") {
                return Err(format!("{policy_resource}: only Allow statements are modelled"));
            }
            allows.extend(strings(&s["Action"]).into_iter().filter(|a| a.starts_with("s3:")));
        }
        Ok(Self {
            principal_arn: role_arn.to_owned(),
            allows,
        })
    }

    /// An administrator: identity-based `s3:*` (AdministratorAccess), not the root user.
    pub fn admin(principal_arn: &str) -> Self {
        Self {
            principal_arn: principal_arn.to_owned(),
            allows: vec!["s3:*".into()],
        }
    }

    /// The account's root user.
    pub fn root(account: &str) -> Self {
        Self {
            principal_arn: format!("arn:aws:iam::{account}:root"),
            allows: Vec::new(),
        }
    }

    fn is_root(&self) -> bool {
        self.principal_arn.ends_with(":root")
    }

    fn identity_allows(&self, action: &str) -> bool {
        self.is_root() || self.allows.iter().any(|pattern| action_matches(pattern, action))
    }
}

/// One Deny of a bucket policy: `actions` for every principal but `except_principal_arn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketDeny {
    pub sid: String,
    pub actions: Vec<String>,
    pub except_principal_arn: String,
}

/// A bucket policy's Deny statements, as far as the archive's are shaped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BucketPolicy {
    pub denies: Vec<BucketDeny>,
}

impl BucketPolicy {
    /// The statements of template.yaml's `policy_resource` (an `AWS::S3::BucketPolicy`), with
    /// `!GetAtt <Role>.Arn` resolved through `role_arns` and `${AWS::Partition}` /
    /// `${AWS::AccountId}` substituted. Every statement must be a Deny to `Principal: "*"` with
    /// an `ArnNotEquals: aws:PrincipalArn` condition, except the TLS-only one (clients reach S3
    /// over TLS; the proxy's plain HTTP stands for it). Any other shape is an error, so a change
    /// in the template fails the tests that use the model instead of passing them unmodelled.
    pub fn from_template(
        template_yaml: &str,
        policy_resource: &str,
        account: &str,
        role_arns: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let template: Yaml = serde_yaml::from_str(template_yaml).map_err(|e| format!("template.yaml: {e}"))?;
        let statements = &template["Resources"][policy_resource]["Properties"]["PolicyDocument"]["Statement"];
        let statements = statements
            .as_sequence()
            .ok_or_else(|| format!("{policy_resource}: no statements"))?;
        let mut denies = Vec::new();
        for s in statements {
            let sid = s["Sid"].as_str().unwrap_or_default().to_owned();
            let shape = |why: &str| format!("{policy_resource} statement {sid:?}: {why}");
            if s["Effect"].as_str() != Some("Deny") || s["Principal"].as_str() != Some("*") {
                return Err(shape("not a Deny to every principal"));
            }
            let condition = &s["Condition"];
            if condition["Bool"]["aws:SecureTransport"].as_str() == Some("false") {
                continue;
            }
            let except = &condition["ArnNotEquals"]["aws:PrincipalArn"];
            let except =
                resolve(except, account, role_arns).ok_or_else(|| shape("no ArnNotEquals aws:PrincipalArn"))?;
            denies.push(BucketDeny {
                sid,
                actions: strings(&s["Action"]),
                except_principal_arn: except,
            });
        }
        Ok(Self { denies })
    }

    /// The Deny that refuses `caller` the `action`, if one does.
    fn denies(&self, caller: &S3Caller, action: &str) -> Option<&BucketDeny> {
        self.denies.iter().find(|d| {
            d.except_principal_arn != caller.principal_arn && d.actions.iter().any(|p| action_matches(p, action))
        })
    }
}

/// A string or a list of strings (IAM's `Action`).
fn strings(v: &Yaml) -> Vec<String> {
    match v {
        Yaml::String(s) => vec![s.clone()],
        Yaml::Sequence(items) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// A template value that names a principal: `!GetAtt Role.Arn` or `!Sub arn:...`.
fn resolve(v: &Yaml, account: &str, role_arns: &BTreeMap<String, String>) -> Option<String> {
    let Yaml::Tagged(tagged) = v else {
        return v.as_str().map(str::to_owned);
    };
    let text = tagged.value.as_str()?;
    match tagged.tag.to_string().as_str() {
        "!GetAtt" => role_arns.get(text.strip_suffix(".Arn")?).cloned(),
        "!Sub" => Some(
            text.replace("${AWS::Partition}", "aws")
                .replace("${AWS::AccountId}", account),
        ),
        _ => None,
    }
}

/// IAM's action matching: case-insensitive, `*` as a wildcard at the end.
fn action_matches(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    match p.strip_suffix('*') {
        Some(prefix) => a.starts_with(prefix),
        None => p == a,
    }
}

/// The parts of an S3 request the model reads (path-style: `/bucket/key?query`).
pub(crate) struct S3Request {
    pub method: String,
    pub bucket: String,
    pub key: Option<String>,
    query: Vec<(String, String)>,
}

impl S3Request {
    pub fn parse(head: &str) -> Self {
        let mut parts = head.split_whitespace();
        let method = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or("/");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = path.trim_start_matches('/');
        let (bucket, key) = match path.split_once('/') {
            Some((b, k)) if !k.is_empty() => (b, Some(k)),
            Some((b, _)) => (b, None),
            None => (path, None),
        };
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let query = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (decode(k), decode(v))
            })
            .collect();
        Self {
            method: method.to_owned(),
            bucket: decode(bucket),
            key: key.map(decode),
            query,
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.param(name).is_some()
    }

    /// The operation's name, as the SDKs call it.
    pub fn operation(&self) -> &'static str {
        let object = self.key.is_some();
        match (self.method.as_str(), object) {
            ("PUT", true) if self.has("retention") => "PutObjectRetention",
            ("PUT", true) if self.has("legal-hold") => "PutObjectLegalHold",
            ("PUT", true) if self.has("tagging") => "PutObjectTagging",
            ("PUT", true) if self.has("uploadId") => "UploadPart",
            ("PUT", true) => "PutObject",
            ("PUT", false) if self.has("object-lock") => "PutObjectLockConfiguration",
            ("PUT", false) if self.has("versioning") => "PutBucketVersioning",
            ("PUT", false) if self.has("lifecycle") => "PutBucketLifecycleConfiguration",
            ("PUT", false) if self.has("policy") => "PutBucketPolicy",
            ("PUT", false) => "CreateBucket",
            ("DELETE", true) => "DeleteObject",
            ("DELETE", false) if self.has("lifecycle") => "DeleteBucketLifecycle",
            ("DELETE", false) if self.has("policy") => "DeleteBucketPolicy",
            ("DELETE", false) => "DeleteBucket",
            ("POST", false) if self.has("delete") => "DeleteObjects",
            ("POST", true) if self.has("uploads") => "CreateMultipartUpload",
            ("POST", true) if self.has("uploadId") => "CompleteMultipartUpload",
            ("GET", true) if self.has("retention") => "GetObjectRetention",
            ("GET", true) if self.has("legal-hold") => "GetObjectLegalHold",
            ("GET", true) => "GetObject",
            ("GET", false) if self.has("versions") => "ListObjectVersions",
            ("GET", false) if self.param("list-type") == Some("2") => "ListObjectsV2",
            ("GET", false) if self.has("object-lock") => "GetObjectLockConfiguration",
            ("GET", false) if self.has("lifecycle") => "GetBucketLifecycleConfiguration",
            ("GET", false) if self.has("versioning") => "GetBucketVersioning",
            ("GET", false) if self.has("policy") => "GetBucketPolicy",
            ("GET", false) => "ListObjects",
            ("HEAD", true) => "HeadObject",
            ("HEAD", false) => "HeadBucket",
            _ => "?",
        }
    }

    /// The IAM action S3 authorises the request as (the bypass header's is apart).
    pub fn action(&self, op: &str, body: &[u8]) -> String {
        let versioned = self.has("versionId");
        match op {
            "DeleteObject" if versioned => "s3:DeleteObjectVersion".into(),
            "DeleteObjects" if String::from_utf8_lossy(body).contains("<VersionId>") => "s3:DeleteObjectVersion".into(),
            "DeleteObjects" => "s3:DeleteObject".into(),
            "GetObject" | "HeadObject" if versioned => "s3:GetObjectVersion".into(),
            "HeadObject" => "s3:GetObject".into(),
            "ListObjectVersions" => "s3:ListBucketVersions".into(),
            "ListObjectsV2" | "ListObjects" | "HeadBucket" => "s3:ListBucket".into(),
            "UploadPart" | "CompleteMultipartUpload" | "CreateMultipartUpload" => "s3:PutObject".into(),
            "PutObjectLockConfiguration" => "s3:PutBucketObjectLockConfiguration".into(),
            "GetObjectLockConfiguration" => "s3:GetBucketObjectLockConfiguration".into(),
            "PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle" => "s3:PutLifecycleConfiguration".into(),
            "GetBucketLifecycleConfiguration" => "s3:GetLifecycleConfiguration".into(),
            other => format!("s3:{other}"),
        }
    }
}

/// The S3 operation of a request head, for the fault proxy's counts.
pub fn s3_operation(head: &str) -> &'static str {
    S3Request::parse(head).operation()
}

/// Why the archive bucket's policies refuse `caller` the `action`, if they do.
pub(crate) fn refusal(caller: &S3Caller, policy: &BucketPolicy, action: &str) -> Option<String> {
    if !caller.identity_allows(action) {
        return Some(format!(
            "User: {} is not authorized to perform: {action} because no identity-based policy allows the {action} action",
            caller.principal_arn
        ));
    }
    policy.denies(caller, action).map(|d| {
        format!(
            "User: {} is not authorized to perform: {action} with an explicit deny in a resource-based policy ({})",
            caller.principal_arn, d.sid
        )
    })
}

/// Whether an upload carries what S3 requires of one into a locked bucket.
pub(crate) fn has_integrity_header(head: &str) -> bool {
    header(head, "content-md5").is_some()
        || head.split("\r\n").skip(1).any(|line| {
            line.split_once(':')
                .is_some_and(|(k, _)| k.trim().to_ascii_lowercase().starts_with("x-amz-checksum-"))
        })
        || header(head, "x-amz-trailer").is_some_and(|t| t.to_ascii_lowercase().starts_with("x-amz-checksum-"))
}

/// Whether the request asks to bypass governance retention as S3 reads it: the header is `true`.
pub(crate) fn asks_bypass(head: &str) -> bool {
    header(head, "x-amz-bypass-governance-retention").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The head without the bypass header (S3 does not honour it for this caller).
pub(crate) fn without_bypass(head: &str) -> String {
    head.split("\r\n")
        .filter(|line| {
            !line
                .split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("x-amz-bypass-governance-retention"))
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Whether a GetObjectLockConfiguration answer names a default retention.
pub(crate) fn has_default_retention(xml: &str) -> bool {
    xml.contains("<DefaultRetention>") && xml.contains("<Mode>")
}

/// A retention: mode and retain-until date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retention {
    pub mode: String,
    pub until: DateTime<Utc>,
}

impl Retention {
    /// From a HeadObject answer's `x-amz-object-lock-*` headers.
    pub fn from_head(head: &[(String, String)]) -> Option<Self> {
        let get = |name: &str| {
            head.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        Some(Self {
            mode: get("x-amz-object-lock-mode")?.to_owned(),
            until: parse_time(get("x-amz-object-lock-retain-until-date")?)?,
        })
    }

    /// From a PutObjectRetention body; `None`: the request removes the retention.
    pub fn from_body(body: &[u8]) -> Option<Self> {
        let xml = String::from_utf8_lossy(body);
        Some(Self {
            mode: xml_text(&xml, "Mode")?,
            until: parse_time(&xml_text(&xml, "RetainUntilDate")?)?,
        })
    }

    /// Whether `next` (or removal, `None`) would weaken this retention while it holds at `now`.
    pub fn weakened_by(&self, next: Option<&Retention>, now: DateTime<Utc>) -> bool {
        if self.until <= now {
            return false;
        }
        match next {
            None => true,
            Some(n) => n.until < self.until || (self.mode == "COMPLIANCE" && n.mode != "COMPLIANCE"),
        }
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The text of the first `<tag>` element.
pub(crate) fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..end].trim().to_owned())
}

/// Every `<tag>…</tag>` element's inner text, in order.
pub(crate) fn xml_elements<'x>(xml: &'x str, tag: &str) -> Vec<&'x str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else {
            break;
        };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

/// S3's REST-XML error.
pub(crate) fn s3_error(status: u16, code: &str, message: &str) -> Response {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        _ => "Error",
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message>\
         <RequestId>strict-proxy</RequestId></Error>",
        message.replace('&', "&amp;").replace('<', "&lt;")
    );
    Response::canned(status, reason, "application/xml", body)
}

/// A request the proxy sends S3 itself (a lock configuration or a version's retention), signed
/// as the caller's was (the emulator reads the account from it, not the signature).
pub(crate) fn sub_request(original: &Request, method: &str, target: &str) -> Request {
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for name in [
        "host",
        "authorization",
        "x-amz-date",
        "x-amz-security-token",
        "x-moto-account-id",
    ] {
        if let Some(v) = header(&original.head, name) {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    head.push_str("x-amz-content-sha256: UNSIGNED-PAYLOAD\r\n");
    Request { head, body: Vec::new() }
}

/// A path segment or key, percent-encoded for a request target (slashes kept).
pub(crate) fn encode_path(s: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, KEEP).to_string()
}

impl super::StrictState {
    /// One S3 request through the archive bucket's policies and Object Lock's rules.
    pub(super) async fn s3(
        &self,
        shared: &Shared,
        key: &str,
        mut req: Request,
        op: &str,
        access_key: &str,
        count: &(dyn Fn(StrictKind) + Sync),
    ) -> Response {
        let parsed = S3Request::parse(&req.head);
        let mut bypass = asks_bypass(&req.head);
        if let (Some(policy), Some(caller)) = (
            self.cfg.archive_buckets.get(&parsed.bucket),
            self.cfg.s3_callers.get(access_key),
        ) {
            if let Some(why) = refusal(caller, policy, &parsed.action(op, &req.body)) {
                count(StrictKind::AccessDenied);
                return s3_error(403, "AccessDenied", &why);
            }
            bypass = bypass && refusal(caller, policy, "s3:BypassGovernanceRetention").is_none();
        }
        if !self.cfg.object_lock {
            return forward_counted(shared, key, &req).await;
        }
        let stripped = header(&req.head, "x-amz-bypass-governance-retention").is_some() && !bypass;
        if stripped {
            req.head = without_bypass(&req.head);
        }
        match op {
            "PutObject" | "UploadPart" if !has_integrity_header(&req.head) => {
                let lock_headers = header(&req.head, "x-amz-object-lock-mode").is_some()
                    || header(&req.head, "x-amz-object-lock-legal-hold").is_some();
                let target = format!("/{}?object-lock", encode_path(&parsed.bucket));
                let config = forward_counted(
                    shared,
                    &format!("{key} (lock configuration)"),
                    &sub_request(&req, "GET", &target),
                )
                .await;
                let default_retention =
                    config.status() == 200 && has_default_retention(&String::from_utf8_lossy(config.body()));
                if lock_headers || default_retention {
                    count(StrictKind::ChecksumRequired);
                    return s3_error(400, "InvalidRequest", CHECKSUM_REQUIRED);
                }
            }
            "PutObjectRetention" => {
                let mut target = format!(
                    "/{}/{}",
                    encode_path(&parsed.bucket),
                    encode_path(parsed.key.as_deref().unwrap_or_default())
                );
                if let Some(version) = parsed.param("versionId") {
                    target.push_str(&format!("?versionId={}", encode_path(version)));
                }
                let head = forward_counted(
                    shared,
                    &format!("{key} (current retention)"),
                    &sub_request(&req, "HEAD", &target),
                )
                .await;
                let current = (head.status() == 200)
                    .then(|| Retention::from_head(head.headers()))
                    .flatten();
                let next = Retention::from_body(&req.body);
                if let Some(current) = current
                    && current.weakened_by(next.as_ref(), Utc::now())
                    && (current.mode == "COMPLIANCE" || !bypass)
                {
                    count(StrictKind::ObjectLocked);
                    return s3_error(403, "AccessDenied", "Access Denied");
                }
            }
            _ => {}
        }
        let response = forward_counted(shared, key, &req).await;
        if stripped && response.status() == 403 {
            count(StrictKind::ObjectLocked);
        }
        response
    }
}

/// What one run of a bucket's lifecycle expiration did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifecycleRun {
    /// Current versions past an `Expiration`: a delete marker put on top (the version stays).
    pub delete_markers: usize,
    /// Noncurrent versions past a `NoncurrentVersionExpiration`, permanently deleted.
    pub versions_expired: usize,
    /// Noncurrent versions past it but under retention or legal hold at the run's time: kept.
    pub versions_kept_locked: usize,
}

/// One enabled expiration rule of a lifecycle configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExpirationRule {
    prefix: String,
    current_days: Option<i64>,
    noncurrent_days: Option<i64>,
}

fn expiration_rules(xml: &str) -> Vec<ExpirationRule> {
    xml_elements(xml, "Rule")
        .into_iter()
        .filter(|rule| xml_text(rule, "Status").as_deref() == Some("Enabled"))
        .map(|rule| ExpirationRule {
            prefix: xml_text(rule, "Prefix").unwrap_or_default(),
            current_days: xml_elements(rule, "Expiration")
                .first()
                .and_then(|e| xml_text(e, "Days"))
                .and_then(|d| d.parse().ok()),
            noncurrent_days: xml_elements(rule, "NoncurrentVersionExpiration")
                .first()
                .and_then(|e| xml_text(e, "NoncurrentDays"))
                .and_then(|d| d.parse().ok()),
        })
        .collect()
}

/// A synthetic request for S3's own background work (the emulator's default account). moto
/// refuses a DELETE without an `Authorization` header (it takes it for a browser's); it does
/// not check the signature.
fn s3_itself() -> Request {
    Request {
        head: "GET / HTTP/1.1\r\nhost: s3.amazonaws.com\r\nauthorization: AWS4-HMAC-SHA256 \
               Credential=s3-lifecycle/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n"
            .into(),
        body: Vec::new(),
    }
}

/// Runs `bucket`'s lifecycle expiration rules as S3 would at `at` (moto never runs them): a
/// current version older than its rule's `Expiration` days gets a delete marker; a noncurrent
/// version older than `NoncurrentVersionExpiration` days is deleted, unless `object_lock` is on
/// and its retention (or legal hold) still holds at `at`. Ages count from each version's own
/// last-modified time (S3 counts a noncurrent version's from when it became noncurrent, which
/// is later: this run expires no less than S3 would). Versions are deleted with the governance
/// bypass S3's own lifecycle needs no permission for, so that a retention the model has
/// judged past at `at` (a time ahead of the emulator's clock) does not hold in the emulator.
pub(crate) async fn run_lifecycle(shared: &Shared, bucket: &str, at: DateTime<Utc>, object_lock: bool) -> LifecycleRun {
    let key = "s3.(lifecycle)";
    let base = s3_itself();
    let mut run = LifecycleRun::default();
    let config = forward_counted(
        shared,
        key,
        &sub_request(&base, "GET", &format!("/{}?lifecycle", encode_path(bucket))),
    )
    .await;
    let rules = expiration_rules(&String::from_utf8_lossy(config.body()));
    let listed = forward_counted(
        shared,
        key,
        &sub_request(&base, "GET", &format!("/{}?versions", encode_path(bucket))),
    )
    .await;
    let listed = String::from_utf8_lossy(listed.body()).into_owned();
    for version in xml_elements(&listed, "Version") {
        let (Some(object), Some(id), Some(modified)) = (
            xml_text(version, "Key"),
            xml_text(version, "VersionId"),
            xml_text(version, "LastModified").and_then(|t| parse_time(&t)),
        ) else {
            continue;
        };
        let age = (at - modified).num_days();
        let latest = xml_text(version, "IsLatest").as_deref() == Some("true");
        let applies = |days: fn(&ExpirationRule) -> Option<i64>| {
            rules
                .iter()
                .any(|r| object.starts_with(&r.prefix) && days(r).is_some_and(|d| age >= d))
        };
        let path = format!("/{}/{}", encode_path(bucket), encode_path(&object));
        if latest && applies(|r| r.current_days) {
            let marker = forward_counted(shared, key, &sub_request(&base, "DELETE", &path)).await;
            run.delete_markers += usize::from(marker.status() == 204);
        } else if !latest && applies(|r| r.noncurrent_days) {
            let one = format!("{path}?versionId={}", encode_path(&id));
            if object_lock {
                let head = forward_counted(shared, key, &sub_request(&base, "HEAD", &one)).await;
                let held = Retention::from_head(head.headers()).is_some_and(|r| r.until > at)
                    || head.headers().iter().any(|(k, v)| {
                        k.eq_ignore_ascii_case("x-amz-object-lock-legal-hold") && v.eq_ignore_ascii_case("ON")
                    });
                if held {
                    run.versions_kept_locked += 1;
                    continue;
                }
            }
            let mut delete = sub_request(&base, "DELETE", &one);
            delete.head.push_str("x-amz-bypass-governance-retention: true\r\n");
            let deleted = forward_counted(shared, key, &delete).await;
            if deleted.status() == 204 {
                run.versions_expired += 1;
            } else {
                run.versions_kept_locked += 1;
            }
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_named_from_method_path_and_sub_resource() {
        let op = |line: &str| s3_operation(&format!("{line} HTTP/1.1\r\nhost: x\r\n"));
        assert_eq!(op("PUT /b/audit/date=2026-01-01/o?x-id=PutObject"), "PutObject");
        assert_eq!(op("PUT /b/k?retention&versionId=v1"), "PutObjectRetention");
        assert_eq!(op("DELETE /b/k?versionId=v1&x-id=DeleteObject"), "DeleteObject");
        assert_eq!(op("POST /b?delete"), "DeleteObjects");
        assert_eq!(op("GET /b?versions&prefix=audit%2F"), "ListObjectVersions");
        assert_eq!(op("GET /b?list-type=2&prefix=audit"), "ListObjectsV2");
        assert_eq!(op("PUT /b?object-lock"), "PutObjectLockConfiguration");
        assert_eq!(op("PUT /b"), "CreateBucket");
        assert_eq!(op("HEAD /b/k?versionId=v"), "HeadObject");
        let r = S3Request::parse("GET /b/audit/date%3D2026-01-01/o?versionId=a%2Bb HTTP/1.1\r\n");
        assert_eq!(
            (r.bucket.as_str(), r.key.as_deref()),
            ("b", Some("audit/date=2026-01-01/o"))
        );
        assert_eq!(r.param("versionId"), Some("a+b"));
    }

    #[test]
    fn an_upload_needs_an_md5_a_checksum_header_or_a_checksum_trailer() {
        assert!(!has_integrity_header(
            "PUT /b/k HTTP/1.1\r\nx-amz-content-sha256: abc\r\n"
        ));
        assert!(has_integrity_header("PUT /b/k HTTP/1.1\r\nContent-MD5: abc==\r\n"));
        assert!(has_integrity_header(
            "PUT /b/k HTTP/1.1\r\nx-amz-checksum-crc32: abc==\r\n"
        ));
        assert!(has_integrity_header(
            "PUT /b/k HTTP/1.1\r\nx-amz-trailer: x-amz-checksum-sha256\r\n"
        ));
    }

    #[test]
    fn only_true_asks_for_a_bypass_and_removing_it_keeps_the_rest() {
        let head = "DELETE /b/k?versionId=v HTTP/1.1\r\nhost: x\r\nx-amz-bypass-governance-retention: false\r\n";
        assert!(!asks_bypass(head));
        assert!(asks_bypass(&head.replace("false", "TRUE")));
        assert_eq!(without_bypass(head), "DELETE /b/k?versionId=v HTTP/1.1\r\nhost: x\r\n");
    }

    #[test]
    fn a_retention_may_grow_but_not_shrink_weaken_or_go_while_it_holds() {
        let now = Utc::now();
        let at = |days: i64, mode: &str| Retention {
            mode: mode.into(),
            until: now + chrono::Duration::days(days),
        };
        let held = at(10, "GOVERNANCE");
        assert!(held.weakened_by(Some(&at(5, "GOVERNANCE")), now));
        assert!(held.weakened_by(None, now));
        assert!(!held.weakened_by(Some(&at(20, "GOVERNANCE")), now));
        assert!(!held.weakened_by(Some(&at(20, "COMPLIANCE")), now), "strengthening");
        assert!(at(10, "COMPLIANCE").weakened_by(Some(&at(20, "GOVERNANCE")), now));
        assert!(!at(-1, "COMPLIANCE").weakened_by(None, now), "past: no longer held");
        let body = b"<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>GOVERNANCE</Mode>\
                     <RetainUntilDate>2030-01-02T03:04:05Z</RetainUntilDate></Retention>";
        let r = Retention::from_body(body).unwrap();
        assert_eq!(r.mode, "GOVERNANCE");
        assert_eq!(r.until.to_rfc3339(), "2030-01-02T03:04:05+00:00");
        assert_eq!(Retention::from_body(b"<Retention/>"), None);
    }

    #[test]
    fn enabled_expiration_rules_are_read_with_their_prefix_and_days() {
        let xml = "<LifecycleConfiguration><Rule><ID>a</ID><Filter><Prefix>audit/</Prefix></Filter>\
                   <Status>Enabled</Status><Expiration><Days>1</Days></Expiration>\
                   <NoncurrentVersionExpiration><NoncurrentDays>2</NoncurrentDays></NoncurrentVersionExpiration></Rule>\
                   <Rule><ID>b</ID><Status>Disabled</Status><Expiration><Days>1</Days></Expiration></Rule>\
                   </LifecycleConfiguration>";
        assert_eq!(
            expiration_rules(xml),
            [ExpirationRule {
                prefix: "audit/".into(),
                current_days: Some(1),
                noncurrent_days: Some(2)
            }]
        );
    }

    #[test]
    fn the_templates_bucket_policy_is_modelled_statement_by_statement() {
        let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap();
        let delivery = "arn:aws:iam::123456789012:role/latch-ArchiveDeliveryRole-x";
        let roles = BTreeMap::from([("ArchiveDeliveryRole".to_owned(), delivery.to_owned())]);
        let policy = BucketPolicy::from_template(&template, "ArchiveBucketPolicy", "123456789012", &roles).unwrap();
        let sids: Vec<&str> = policy.denies.iter().map(|d| d.sid.as_str()).collect();
        assert_eq!(sids, ["OnlyTheDeliveryRoleWrites", "LockStaysOn"]);
        let delivery_role = S3Caller::from_template_role(&template, "ArchiveDeliveryPolicy", delivery).unwrap();
        let admin = S3Caller::admin("arn:aws:iam::123456789012:role/Admin");
        let root = S3Caller::root("123456789012");
        let refused = |c: &S3Caller, a: &str| refusal(c, &policy, a).is_some();
        assert!(!refused(&delivery_role, "s3:PutObject"));
        assert!(refused(&delivery_role, "s3:DeleteObjectVersion"), "no identity allow");
        assert!(refused(&admin, "s3:PutObject"), "OnlyTheDeliveryRoleWrites");
        assert!(refused(&admin, "s3:BypassGovernanceRetention"), "LockStaysOn");
        assert!(!refused(&admin, "s3:DeleteObjectVersion"), "left to the lock");
        assert!(!refused(&root, "s3:BypassGovernanceRetention"));
        assert!(!refused(&root, "s3:PutObjectRetention"));
        assert!(refused(&root, "s3:PutObject"), "explicit denies bind the root user too");
    }
}
