//! Hostile OIDC tokens (trust model v2, invariants I6 and I7) through the grant function's entry
//! point (`handle_payload`, the payload as Lambda hands it over), over the in-memory ports with
//! [`StaticKeys`] and a fixed clock.
//!
//! The policy is the shipped example, infra/policies.yaml, read at test time with the `github`
//! issuer's `keys:` pinned to signers generated here (RS256 and ES256) and the `gitlab` issuer's to
//! an unrelated RSA key that publishes the same kid ("another issuer's key"). Tokens are minted
//! with GitHub-shaped claims, their `aud` bound to the request exactly as a client asks for it
//! ([`request_audience`]); hostile ones are made from raw JSON text so keys can repeat.
//!
//! Every case is a row of [`cases`]: a name, how its events are made, and what must come of the
//! last one. For every refusal: the handler returns `Ok` (nothing for Lambda to retry), no grant
//! is recorded or changed, IAM is not written, exactly one new Denied audit carries the expected
//! reason, and no audit (durable or published) contains the token or any of its segments. The
//! positive controls (`granted`, `revoked`, `extended`, `already_active`, `unchanged`) show the
//! refusals are refusals of what each case changed, not of the baseline.
//!
//! [`mutated_tokens`] is the property: a valid token with bytes flipped, cut or inserted in any
//! segment, or its header or claims edited and re-signed with a key the policy does not pin,
//! never yields a grant (as a start) nor a revoke (as the finish of a job holding a real grant).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, TimeZone, Utc};
use grant::{Outcome, handle_payload};
use lambda_runtime::{Context, LambdaEvent};
use latch_core::audit::{AuditRecord, Decision};
use latch_core::grant::{ExtendOutcome, FinishOutcome, GrantService, StartOutcome};
use latch_core::identity::testing::{TestSigner, jwks};
use latch_core::identity::{AudienceBinding, Presented, StaticKeys, TokenAlgorithm, request_audience};
use latch_core::memory::{FixedClock, MemoryAuditSink, MemoryIam, MemoryStore};
use latch_core::model::{AccountId, Grant, GrantDuration, GrantStatus, Name, RoleArn};
use latch_core::policy::Policy;
use serde_json::{Map, Value, json};

type Service = GrantService<MemoryIam, MemoryStore, MemoryAuditSink, FixedClock, StaticKeys>;

const ISS: &str = "https://token.actions.githubusercontent.com";
const ACCOUNT: &str = "123456789012";
const SOURCE: &str = "ci.github";
const DEPLOYER: &str = "arn:aws:iam::123456789012:role/latch/app-deployer";
const MIGRATOR: &str = "arn:aws:iam::123456789012:role/latch/db-migrator";
const RUN: &str = "8812345678";
const OTHER_RUN: &str = "9900000001";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

/// Seconds since the epoch, `offset` from [`now`].
fn at(offset: i64) -> i64 {
    (now() + Duration::seconds(offset)).timestamp()
}

// ---------------------------------------------------------------------------------------------
// Keys and policy
// ---------------------------------------------------------------------------------------------

/// Keys made once per test binary (RSA key generation is slow in a debug build).
struct Signers {
    /// The `github` issuer's RS256 key, pinned.
    rsa: TestSigner,
    /// The `github` issuer's ES256 key, pinned.
    ec: TestSigner,
    /// The `gitlab` issuer's key, pinned for gitlab only: another issuer's key, same kid as `rsa`.
    gitlab: TestSigner,
    /// Pinned nowhere, kid `rsa-1`: an attacker's RSA key.
    rsa_impostor: TestSigner,
    /// Pinned nowhere, kid `ec-1`: an attacker's P-256 key.
    ec_impostor: TestSigner,
}

fn signers() -> &'static Signers {
    static KEYS: OnceLock<Signers> = OnceLock::new();
    KEYS.get_or_init(|| Signers {
        rsa: TestSigner::generate(TokenAlgorithm::Rs256, "rsa-1").expect("rsa key"),
        ec: TestSigner::generate(TokenAlgorithm::Es256, "ec-1").expect("ec key"),
        gitlab: TestSigner::generate(TokenAlgorithm::Rs256, "rsa-1").expect("gitlab key"),
        rsa_impostor: TestSigner::generate(TokenAlgorithm::Rs256, "rsa-1").expect("impostor rsa key"),
        ec_impostor: TestSigner::generate(TokenAlgorithm::Es256, "ec-1").expect("impostor ec key"),
    })
}

/// Which algorithms the `github` issuer accepts in a case's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algs {
    /// RS256 and ES256 (both pinned keys usable).
    Both,
    /// ES256 only: an RS256 token must be refused by algorithm.
    EsOnly,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// infra/policies.yaml with the test keys pinned (every issuer gets keys, so [`StaticKeys`]
/// always answers and no token can make the handler return a retryable error).
fn build_policy(algs: Algs) -> Policy {
    let path = repo_root().join("infra/policies.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("infra/policies.yaml is YAML");
    let k = signers();
    let yaml = |v: Value| serde_yaml::to_value(v).expect("JSON as YAML");
    let issuers = doc
        .get_mut("issuers")
        .and_then(serde_yaml::Value::as_sequence_mut)
        .expect("infra/policies.yaml has issuers");
    let mut pinned = 0;
    for issuer in issuers {
        let name = issuer
            .get("name")
            .and_then(serde_yaml::Value::as_str)
            .map(str::to_owned);
        let map = issuer.as_mapping_mut().expect("an issuer is a mapping");
        match name.as_deref() {
            Some("github") => {
                let algorithms = match algs {
                    Algs::Both => json!(["RS256", "ES256"]),
                    Algs::EsOnly => json!(["ES256"]),
                };
                map.insert("algorithms".into(), yaml(algorithms));
                map.insert("keys".into(), yaml(jwks(&[&k.rsa, &k.ec])));
                pinned += 1;
            }
            Some("gitlab") => {
                map.insert("keys".into(), yaml(jwks(&[&k.gitlab])));
                pinned += 1;
            }
            other => panic!("infra/policies.yaml names an issuer this test does not know: {other:?}"),
        }
    }
    assert_eq!(
        pinned, 2,
        "infra/policies.yaml should name the github and gitlab issuers"
    );
    let text = serde_yaml::to_string(&doc).expect("policy as YAML");
    Policy::load(&text, "infra/policies.yaml (keys pinned at test time)").unwrap_or_else(|e| panic!("{e}"))
}

fn policy(algs: Algs) -> Policy {
    static BOTH: OnceLock<Policy> = OnceLock::new();
    static ES_ONLY: OnceLock<Policy> = OnceLock::new();
    match algs {
        Algs::Both => BOTH.get_or_init(|| build_policy(Algs::Both)).clone(),
        Algs::EsOnly => ES_ONLY.get_or_init(|| build_policy(Algs::EsOnly)).clone(),
    }
}

fn service(algs: Algs) -> Service {
    let ports = latch_core::ports::Ports::new(
        MemoryIam::default(),
        MemoryStore::default(),
        MemoryAuditSink::default(),
        FixedClock::at(now()),
    );
    GrantService::new(policy(algs), ports)
}

// ---------------------------------------------------------------------------------------------
// Requests, claims, tokens, events
// ---------------------------------------------------------------------------------------------

/// What a job asks for, and what its detail claims.
#[derive(Debug, Clone)]
struct Req {
    pipeline: String,
    run_id: String,
    job: String,
    role: &'static str,
    set: &'static str,
    duration: &'static str,
    git_ref: Option<&'static str>,
    environment: Option<&'static str>,
}

impl Req {
    /// app-billing's deploy job asking for deploy-artifacts on app-deployer for 15 minutes.
    fn deploy() -> Self {
        Self {
            pipeline: "app-billing".into(),
            run_id: RUN.into(),
            job: "deploy".into(),
            role: DEPLOYER,
            set: "deploy-artifacts",
            duration: "PT15M",
            git_ref: Some("refs/heads/main"),
            environment: None,
        }
    }

    fn job(self, job: &str) -> Self {
        Self {
            job: job.into(),
            ..self
        }
    }

    fn account() -> AccountId {
        AccountId::parse(ACCOUNT).unwrap()
    }

    /// The `aud` a client asks its CI for, for this start.
    fn start_aud(&self) -> String {
        let (account, role, set) = (
            Self::account(),
            RoleArn::parse(self.role).unwrap(),
            Name::parse(self.set).unwrap(),
        );
        let binding = AudienceBinding {
            account: &account,
            role: &role,
            permission_set: &set,
            duration: GrantDuration::parse(self.duration).unwrap(),
        };
        request_audience("latch", Presented::Start(binding))
    }

    /// The `aud` for extending this request's grant by `by`.
    fn extend_aud(&self, by: &str) -> String {
        let (account, role, set) = (
            Self::account(),
            RoleArn::parse(self.role).unwrap(),
            Name::parse(self.set).unwrap(),
        );
        let by = GrantDuration::parse(by).unwrap();
        let binding = AudienceBinding {
            account: &account,
            role: &role,
            permission_set: &set,
            duration: by,
        };
        request_audience("latch", Presented::Extend { binding, by })
    }

    fn finish_aud() -> String {
        request_audience(
            "latch",
            Presented::Finish {
                account: &Self::account(),
            },
        )
    }

    fn job_fields(&self) -> Map<String, Value> {
        let mut d = Map::new();
        d.insert("pipeline".into(), json!(self.pipeline));
        d.insert("run_id".into(), json!(self.run_id));
        d.insert("job".into(), json!(self.job));
        d.insert("attempt".into(), json!(1));
        d
    }

    fn start_detail(&self, token: Option<Value>) -> Value {
        let mut d = self.job_fields();
        d.insert("role_arn".into(), json!(self.role));
        d.insert("permission_set".into(), json!(self.set));
        d.insert("duration".into(), json!(self.duration));
        d.insert("actor".into(), json!("octocat"));
        d.insert("reason".into(), json!("release v1.4.2"));
        if let Some(r) = self.git_ref {
            d.insert("ref".into(), json!(r));
        }
        if let Some(e) = self.environment {
            d.insert("environment".into(), json!(e));
        }
        if let Some(t) = token {
            d.insert("token".into(), t);
        }
        Value::Object(d)
    }

    fn finish_detail(&self, token: Option<Value>) -> Value {
        let mut d = self.job_fields();
        d.insert("outcome".into(), json!("success"));
        if let Some(t) = token {
            d.insert("token".into(), t);
        }
        Value::Object(d)
    }

    fn extend_detail(&self, by: &str, token: Option<Value>) -> Value {
        let mut d = self.job_fields();
        d.insert("role_arn".into(), json!(self.role));
        d.insert("permission_set".into(), json!(self.set));
        d.insert("by".into(), json!(by));
        if let Some(t) = token {
            d.insert("token".into(), t);
        }
        Value::Object(d)
    }
}

/// GitHub Actions' claims for `repository` (`example-org/<pipeline>`) run [`RUN`] on main.
fn claims_for(repository: &str, aud: &str, jti: &str) -> Map<String, Value> {
    let v = json!({
        "iss": ISS,
        "aud": aud,
        "sub": format!("repo:{repository}:ref:refs/heads/main"),
        "jti": jti,
        "iat": at(-30),
        "nbf": at(-30),
        "exp": at(300),
        "repository": repository,
        "repository_id": "4242",
        "repository_owner": "example-org",
        "repository_owner_id": "99",
        "repository_visibility": "private",
        "run_id": RUN,
        "run_number": "17",
        "run_attempt": "1",
        "ref": "refs/heads/main",
        "ref_type": "branch",
        "sha": "9fceb02d0ae598e95dc970b74767f19372d61af8",
        "actor": "octocat",
        "actor_id": "583231",
        "event_name": "push",
        "workflow": "release",
        "runner_environment": "github-hosted",
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// Claims for a start of `req` (repository `example-org/<pipeline>`, aud bound to `req`).
fn start_claims(req: &Req) -> Map<String, Value> {
    let jti = format!("jti-start-{}", req.job);
    claims_for(&format!("example-org/{}", req.pipeline), &req.start_aud(), &jti)
}

fn finish_claims(req: &Req) -> Map<String, Value> {
    claims_for(
        &format!("example-org/{}", req.pipeline),
        &Req::finish_aud(),
        "jti-finish",
    )
}

fn header(alg: &str, kid: &str) -> String {
    json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string()
}

fn signed(signer: &TestSigner, claims: &Map<String, Value>) -> String {
    signer.sign(&Value::Object(claims.clone())).expect("signing")
}

fn rs(claims: &Map<String, Value>) -> String {
    signed(&signers().rsa, claims)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).expect("canonical base64url")
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

/// `header.claims.signature` with the signature segment replaced.
fn with_signature(token: &str, signature: &str) -> String {
    let s = segments(token);
    format!("{}.{}.{signature}", s[0], s[1])
}

/// Unsigned header and claims text, base64url-encoded, with `signature` appended as is.
fn unsigned(header_json: &str, claims_json: &str, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header_json.as_bytes()),
        b64(claims_json.as_bytes())
    )
}

/// An ES256 `r||s` signature as ASN.1 DER (`SEQUENCE { INTEGER r, INTEGER s }`), the form
/// OpenSSL produces and JOSE does not use.
fn der_signature(raw: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len() - 1);
        let mut body = bytes[first..].to_vec();
        if body[0] & 0x80 != 0 {
            body.insert(0, 0);
        }
        let mut out = vec![0x02, body.len() as u8];
        out.extend(body);
        out
    }
    let (r, s) = (integer(&raw[..32]), integer(&raw[32..]));
    let mut out = vec![0x30, (r.len() + s.len()) as u8];
    out.extend(r);
    out.extend(s);
    out
}

fn envelope(detail_type: &str, id: &str, detail: Value) -> Value {
    json!({
        "version": "0",
        "id": id,
        "detail-type": detail_type,
        "source": SOURCE,
        "account": ACCOUNT,
        "time": "2026-11-25T12:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    })
}

fn start(id: &str, detail: Value) -> Value {
    envelope("Pipeline Job Started", id, detail)
}

fn finish(id: &str, detail: Value) -> Value {
    envelope("Pipeline Job Finished", id, detail)
}

fn extend(id: &str, detail: Value) -> Value {
    envelope("Pipeline Grant Extension Requested", id, detail)
}

/// The real grant later events try to abuse: app-billing's deploy job, RS256 token, granted.
fn real_grant() -> Value {
    let req = Req::deploy();
    start("evt-real-grant", req.start_detail(Some(json!(rs(&start_claims(&req))))))
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Refused with this reason code.
    Denied(&'static str),
    /// A malformed event whose audit names this detail field.
    Malformed(&'static str),
    /// Positive control: a new grant, its policy on the role.
    Granted,
    /// Positive control: the given grant is revoked and its policy gone.
    Revoked,
    /// Positive control: the given grant now ends later.
    Extended,
    /// A redelivery: converged, no new grant, no new audit.
    AlreadyActive,
    /// A finish that may be refused or finish some other job, but leaves every given grant as it was.
    Unchanged,
}

/// The events of one case: `given` are delivered first (each must be handled without error),
/// then `event`, whose outcome is judged.
struct Scenario {
    algs: Algs,
    given: Vec<Value>,
    event: Value,
}

impl Scenario {
    fn new(event: Value) -> Self {
        Self {
            algs: Algs::Both,
            given: Vec::new(),
            event,
        }
    }
    fn after(given: Vec<Value>, event: Value) -> Self {
        Self {
            algs: Algs::Both,
            given,
            event,
        }
    }
}

struct Case {
    name: &'static str,
    expect: Expect,
    make: fn() -> Scenario,
}

/// A start of [`Req::deploy`] carrying `token` as the detail's `token` value.
fn start_with(token: Value) -> Scenario {
    Scenario::new(start("evt-case", Req::deploy().start_detail(Some(token))))
}

/// A start of [`Req::deploy`] whose RS256 token's claims were edited by `edit`.
fn start_claims_edited(edit: impl FnOnce(&mut Map<String, Value>)) -> Scenario {
    let mut c = start_claims(&Req::deploy());
    edit(&mut c);
    start_with(json!(rs(&c)))
}

/// A start of [`Req::deploy`] with a token made from the valid token's segments.
fn start_token(make: impl FnOnce(&str) -> String) -> Scenario {
    let valid = rs(&start_claims(&Req::deploy()));
    start_with(json!(make(&valid)))
}

/// A start of `req` with `claims` RS256-signed: detail and token disagree where the case says.
fn start_of(req: &Req, claims: &Map<String, Value>) -> Scenario {
    Scenario::new(start("evt-case", req.start_detail(Some(json!(rs(claims))))))
}

/// A start of [`Req::deploy`] with its claims' JSON text (valid claims, then `edit` on the text)
/// signed with the right key under a header made from `header_json`.
fn start_raw(header_json: &str, edit_claims: impl FnOnce(String) -> String) -> Scenario {
    let claims = Value::Object(start_claims(&Req::deploy())).to_string();
    let token = signers()
        .rsa
        .sign_parts(header_json, &edit_claims(claims))
        .expect("signing");
    start_with(json!(token))
}

fn cases() -> Vec<Case> {
    use Expect::*;
    vec![
        // -- Positive controls -----------------------------------------------------------------
        Case {
            name: "valid RS256 token for the request (control)",
            expect: Granted,
            make: || start_claims_edited(|_| {}),
        },
        Case {
            name: "valid ES256 token for the request (control)",
            expect: Granted,
            make: || start_with(json!(signed(&signers().ec, &start_claims(&Req::deploy())))),
        },
        Case {
            name: "expired 30 s ago, within the 60 s clock skew (control)",
            expect: Granted,
            make: || start_claims_edited(|c| _ = c.insert("exp".into(), json!(at(-30)))),
        },
        Case {
            name: "aud array that includes ours among others (control)",
            expect: Granted,
            make: || {
                start_claims_edited(|c| {
                    let ours = c["aud"].clone();
                    c.insert("aud".into(), json!(["sts.amazonaws.com", ours]));
                })
            },
        },
        Case {
            name: "the same start with the same token delivered again (redelivery)",
            expect: AlreadyActive,
            make: || Scenario::after(vec![real_grant()], real_grant()),
        },
        // -- Algorithms and signatures ---------------------------------------------------------
        Case {
            name: "alg none, empty signature segment (unsigned)",
            expect: Denied("token_malformed"),
            make: || {
                let claims = Value::Object(start_claims(&Req::deploy())).to_string();
                start_with(json!(unsigned(&header("none", "rsa-1"), &claims, "")))
            },
        },
        Case {
            name: "alg none with a junk signature",
            expect: Denied("token_algorithm_refused"),
            make: || {
                let claims = Value::Object(start_claims(&Req::deploy())).to_string();
                start_with(json!(unsigned(&header("none", "rsa-1"), &claims, "c2lnbmF0dXJl")))
            },
        },
        Case {
            name: "HS256 keyed with the issuer's RSA public key bytes (alg confusion)",
            expect: Denied("token_algorithm_refused"),
            make: || {
                let jwk = signers().rsa.public_jwk();
                let n = unb64(jwk["n"].as_str().unwrap());
                let claims = Value::Object(start_claims(&Req::deploy())).to_string();
                let input = format!(
                    "{}.{}",
                    b64(header("HS256", "rsa-1").as_bytes()),
                    b64(claims.as_bytes())
                );
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &n);
                let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
                start_with(json!(format!("{input}.{}", b64(tag.as_ref()))))
            },
        },
        Case {
            name: "header says ES256 over the RSA key's kid, RSA-signed",
            expect: Denied("token_bad_signature"),
            make: || start_raw(&header("ES256", "rsa-1"), |c| c),
        },
        Case {
            name: "header says RS256 over the EC key's kid",
            expect: Denied("token_bad_signature"),
            make: || start_raw(&header("RS256", "ec-1"), |c| c),
        },
        Case {
            name: "unknown kid",
            expect: Denied("token_unknown_key"),
            make: || start_raw(&header("RS256", "rsa-rotated-away"), |c| c),
        },
        Case {
            name: "another issuer's key (gitlab's, same kid) signs an iss=github token",
            expect: Denied("token_bad_signature"),
            make: || start_with(json!(signed(&signers().gitlab, &start_claims(&Req::deploy())))),
        },
        Case {
            name: "an attacker's RSA key publishing the pinned kid",
            expect: Denied("token_bad_signature"),
            make: || start_with(json!(signed(&signers().rsa_impostor, &start_claims(&Req::deploy())))),
        },
        Case {
            name: "RS256 token when the issuer allows only ES256",
            expect: Denied("token_algorithm_refused"),
            make: || Scenario {
                algs: Algs::EsOnly,
                ..start_claims_edited(|_| {})
            },
        },
        Case {
            name: "ES256 with a DER-encoded signature",
            expect: Denied("token_bad_signature"),
            make: || {
                let valid = signed(&signers().ec, &start_claims(&Req::deploy()));
                let s = segments(&valid);
                let raw = unb64(&s[2]);
                assert_eq!(raw.len(), 64);
                start_with(json!(with_signature(&valid, &b64(&der_signature(&raw)))))
            },
        },
        Case {
            name: "truncated RS256 signature (255 of 256 bytes)",
            expect: Denied("token_bad_signature"),
            make: || {
                start_token(|t| {
                    let sig = unb64(&segments(t)[2]);
                    with_signature(t, &b64(&sig[..sig.len() - 1]))
                })
            },
        },
        Case {
            name: "truncated ES256 signature (63 of 64 bytes)",
            expect: Denied("token_bad_signature"),
            make: || {
                let valid = signed(&signers().ec, &start_claims(&Req::deploy()));
                let sig = unb64(&segments(&valid)[2]);
                start_with(json!(with_signature(&valid, &b64(&sig[..63]))))
            },
        },
        Case {
            name: "bit-flipped signature",
            expect: Denied("token_bad_signature"),
            make: || {
                start_token(|t| {
                    let mut sig = unb64(&segments(t)[2]);
                    sig[100] ^= 0x01;
                    with_signature(t, &b64(&sig))
                })
            },
        },
        Case {
            name: "bit-flipped payload (actor octocat -> octocau)",
            expect: Denied("token_bad_signature"),
            make: || {
                start_token(|t| {
                    let s = segments(t);
                    let mut claims = unb64(&s[1]);
                    let at = claims.windows(7).position(|w| w == b"octocat").expect("actor claim") + 6;
                    claims[at] ^= 0x01;
                    format!("{}.{}.{}", s[0], b64(&claims), s[2])
                })
            },
        },
        Case {
            name: "signature transplanted from another valid token",
            expect: Denied("token_bad_signature"),
            make: || {
                let mut other = start_claims(&Req::deploy());
                other.insert("jti".into(), json!("jti-other"));
                let donor = rs(&other);
                start_token(|t| with_signature(t, &segments(&donor)[2]))
            },
        },
        // -- Issuer, audience, times -----------------------------------------------------------
        Case {
            name: "wrong iss (a look-alike host)",
            expect: Denied("token_unknown_issuer"),
            make: || {
                start_claims_edited(|c| {
                    _ = c.insert(
                        "iss".into(),
                        json!("https://token.actions.githubusercontent.com.evil.example"),
                    )
                })
            },
        },
        Case {
            name: "iss with a trailing slash",
            expect: Denied("token_unknown_issuer"),
            make: || start_claims_edited(|c| _ = c.insert("iss".into(), json!(format!("{ISS}/")))),
        },
        Case {
            name: "missing iss",
            expect: Denied("token_malformed"),
            make: || start_claims_edited(|c| _ = c.remove("iss")),
        },
        Case {
            name: "wrong aud (bound to another role)",
            expect: Denied("token_wrong_audience"),
            make: || {
                let other = Req {
                    role: "arn:aws:iam::123456789012:role/latch/ci-runner",
                    ..Req::deploy()
                };
                start_claims_edited(|c| _ = c.insert("aud".into(), json!(other.start_aud())))
            },
        },
        Case {
            name: "aud bound to a shorter duration than the request",
            expect: Denied("token_wrong_audience"),
            make: || {
                let shorter = Req {
                    duration: "PT5M",
                    ..Req::deploy()
                };
                start_claims_edited(|c| _ = c.insert("aud".into(), json!(shorter.start_aud())))
            },
        },
        Case {
            name: "missing aud",
            expect: Denied("token_wrong_audience"),
            make: || start_claims_edited(|c| _ = c.remove("aud")),
        },
        Case {
            name: "aud array without ours",
            expect: Denied("token_wrong_audience"),
            make: || {
                start_claims_edited(|c| _ = c.insert("aud".into(), json!(["sts.amazonaws.com", "latch", "latch:*"])))
            },
        },
        Case {
            name: "a finish token (finish audience) presented for a start",
            expect: Denied("token_wrong_audience"),
            make: || start_claims_edited(|c| _ = c.insert("aud".into(), json!(Req::finish_aud()))),
        },
        Case {
            name: "expired 90 s ago (past the skew)",
            expect: Denied("token_expired"),
            make: || {
                start_claims_edited(|c| {
                    c.insert("iat".into(), json!(at(-400)));
                    c.insert("nbf".into(), json!(at(-400)));
                    c.insert("exp".into(), json!(at(-90)));
                })
            },
        },
        Case {
            name: "not yet valid (nbf 2 minutes ahead)",
            expect: Denied("token_not_yet_valid"),
            make: || start_claims_edited(|c| _ = c.insert("nbf".into(), json!(at(120)))),
        },
        Case {
            name: "iat 2 minutes in the future",
            expect: Denied("token_not_yet_valid"),
            make: || start_claims_edited(|c| _ = c.insert("iat".into(), json!(at(120)))),
        },
        Case {
            name: "too old: issued 11 minutes ago, max_token_age 10m, exp still ahead",
            expect: Denied("token_too_old"),
            make: || {
                start_claims_edited(|c| {
                    c.insert("iat".into(), json!(at(-660)));
                    c.insert("nbf".into(), json!(at(-660)));
                })
            },
        },
        Case {
            name: "missing exp",
            expect: Denied("token_malformed"),
            make: || start_claims_edited(|c| _ = c.remove("exp")),
        },
        Case {
            name: "exp as a string",
            expect: Denied("token_malformed"),
            make: || start_claims_edited(|c| _ = c.insert("exp".into(), json!(at(300).to_string()))),
        },
        Case {
            name: "exp at the last second chrono can represent",
            expect: Denied("token_malformed"),
            make: || start_claims_edited(|c| _ = c.insert("exp".into(), json!(DateTime::<Utc>::MAX_UTC.timestamp()))),
        },
        // -- Claims the verifier and the GitHub mapping need -----------------------------------
        Case {
            name: "missing jti",
            expect: Denied("token_malformed"),
            make: || start_claims_edited(|c| _ = c.remove("jti")),
        },
        Case {
            name: "missing sub",
            expect: Denied("token_malformed"),
            make: || start_claims_edited(|c| _ = c.remove("sub")),
        },
        Case {
            name: "missing repository_id",
            expect: Denied("token_malformed"),
            make: || start_claims_edited(|c| _ = c.remove("repository_id")),
        },
        Case {
            name: "run_attempt \"0\"",
            expect: Denied("token_malformed"),
            make: || start_claims_edited(|c| _ = c.insert("run_attempt".into(), json!("0"))),
        },
        // -- Headers ---------------------------------------------------------------------------
        Case {
            name: "header jku (keys from the token's own URL)",
            expect: Denied("token_key_source_refused"),
            make: || {
                let h = json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1", "jku": "https://evil.example/jwks.json"});
                start_raw(&h.to_string(), |c| c)
            },
        },
        Case {
            name: "header x5u",
            expect: Denied("token_key_source_refused"),
            make: || {
                let h = json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1", "x5u": "https://evil.example/cert.pem"});
                start_raw(&h.to_string(), |c| c)
            },
        },
        Case {
            name: "header jwk embedding the attacker's key, signed with it",
            expect: Denied("token_key_source_refused"),
            make: || {
                let k = signers();
                let h = json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1", "jwk": k.rsa_impostor.public_jwk()});
                let claims = Value::Object(start_claims(&Req::deploy())).to_string();
                start_with(json!(k.rsa_impostor.sign_parts(&h.to_string(), &claims).unwrap()))
            },
        },
        Case {
            name: "header x5c",
            expect: Denied("token_key_source_refused"),
            make: || {
                let h = json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1", "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]});
                start_raw(&h.to_string(), |c| c)
            },
        },
        Case {
            name: "unknown crit extension",
            expect: Denied("token_malformed"),
            make: || {
                let h = json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1", "crit": ["exp-latch"], "exp-latch": 1});
                start_raw(&h.to_string(), |c| c)
            },
        },
        Case {
            name: "typ not JWT",
            expect: Denied("token_malformed"),
            make: || start_raw(r#"{"alg":"RS256","typ":"at+jwt","kid":"rsa-1"}"#, |c| c),
        },
        Case {
            name: "header is a JSON array",
            expect: Denied("token_malformed"),
            make: || start_raw(r#"["RS256","rsa-1"]"#, |c| c),
        },
        // -- Repeated keys and encodings -------------------------------------------------------
        Case {
            name: "duplicate key in claims ({\"sub\":A,...,\"sub\":B})",
            expect: Denied("token_malformed"),
            make: || {
                start_raw(&header("RS256", "rsa-1"), |c| {
                    c.replacen('{', r#"{"sub":"repo:example-org/app-admin:ref:refs/heads/main","#, 1)
                })
            },
        },
        Case {
            name: "duplicate repository claim, the second one widening",
            expect: Denied("token_malformed"),
            make: || {
                start_raw(&header("RS256", "rsa-1"), |c| {
                    let mut c = c;
                    c.pop();
                    c + r#","repository":"example-org/app-billing"}"#
                })
            },
        },
        Case {
            name: "duplicate key in header (two kids)",
            expect: Denied("token_malformed"),
            make: || start_raw(r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1","kid":"ec-1"}"#, |c| c),
        },
        Case {
            name: "duplicate nested key",
            expect: Denied("token_malformed"),
            make: || {
                start_raw(&header("RS256", "rsa-1"), |c| {
                    c.replacen('{', r#"{"ctx":{"env":"staging","env":"production"},"#, 1)
                })
            },
        },
        Case {
            name: "padding (=) in a base64url segment",
            expect: Denied("token_malformed"),
            make: || {
                start_token(|t| {
                    let s = segments(t);
                    let pad = match s[2].len() % 4 {
                        0 => "=".to_owned(),
                        rem => "=".repeat(4 - rem),
                    };
                    format!("{}.{}.{}{pad}", s[0], s[1], s[2])
                })
            },
        },
        Case {
            name: "non-base64url characters ('+' and '/') in the claims segment",
            expect: Denied("token_malformed"),
            make: || {
                start_token(|t| {
                    let s = segments(t);
                    format!("{}.{}+/{}.{}", s[0], &s[1][..8], &s[1][8..], s[2])
                })
            },
        },
        Case {
            name: "2 segments",
            expect: Denied("token_malformed"),
            make: || {
                start_token(|t| {
                    let s = segments(t);
                    format!("{}.{}", s[0], s[1])
                })
            },
        },
        Case {
            name: "4 segments",
            expect: Denied("token_malformed"),
            make: || start_token(|t| format!("{t}.{}", segments(t)[2])),
        },
        Case {
            name: "empty token string",
            expect: Malformed("token"),
            make: || start_with(json!("")),
        },
        Case {
            name: "token of 9 KiB",
            expect: Denied("token_too_large"),
            make: || start_claims_edited(|c| _ = c.insert("padding".into(), json!("x".repeat(9 * 1024)))),
        },
        Case {
            name: "token as a number",
            expect: Malformed("token"),
            make: || start_with(json!(12345)),
        },
        Case {
            name: "token as an object (a decoded JWT)",
            expect: Malformed("token"),
            make: || start_with(json!({"header": {"alg": "RS256"}, "claims": start_claims(&Req::deploy())})),
        },
        // -- Identity: detail claims against verified claims, rules --------------------------
        Case {
            name: "token for repository A, detail claims pipeline B",
            expect: Denied("claim_mismatch"),
            make: || {
                let claims = start_claims(&Req::deploy());
                let req = Req {
                    pipeline: "app-payments".into(),
                    ..Req::deploy()
                };
                start_of(&req, &claims)
            },
        },
        Case {
            name: "detail claims ref main, token says a feature branch",
            expect: Denied("claim_mismatch"),
            make: || start_claims_edited(|c| _ = c.insert("ref".into(), json!("refs/heads/feature/fast-path"))),
        },
        Case {
            name: "detail claims environment production, token has none",
            expect: Denied("claim_mismatch"),
            make: || {
                let req = Req {
                    environment: Some("production"),
                    ..Req::deploy()
                };
                start_of(&req, &start_claims(&req))
            },
        },
        Case {
            name: "detail claims another run id",
            expect: Denied("claim_mismatch"),
            make: || {
                let req = Req {
                    run_id: OTHER_RUN.into(),
                    ..Req::deploy()
                };
                start_of(&req, &start_claims(&Req::deploy()))
            },
        },
        Case {
            name: "Cyrillic look-alike letters in the repository claim (detail agrees)",
            expect: Denied("no_matching_rule"),
            make: || {
                let req = Req {
                    pipeline: "\u{0430}pp-billing".into(),
                    ..Req::deploy()
                };
                start_of(&req, &start_claims(&req))
            },
        },
        Case {
            name: "a repository no rule names",
            expect: Denied("no_matching_rule"),
            make: || {
                let req = Req::deploy();
                let mut c = start_claims(&req);
                c.insert("repository".into(), json!("other-org/app-billing"));
                c.insert("repository_owner".into(), json!("other-org"));
                start_of(&req, &c)
            },
        },
        Case {
            name: "a feature branch asking honestly (rules bind main and tags): the denial names the ref",
            expect: Denied("field_mismatch"),
            make: || {
                let req = Req {
                    git_ref: Some("refs/heads/feature/fast-path"),
                    ..Req::deploy()
                };
                let mut c = start_claims(&req);
                c.insert("ref".into(), json!("refs/heads/feature/fast-path"));
                start_of(&req, &c)
            },
        },
        Case {
            name: "event_name pull_request_target",
            expect: Denied("untrusted_trigger"),
            make: || start_claims_edited(|c| _ = c.insert("event_name".into(), json!("pull_request_target"))),
        },
        Case {
            name: "a start with no token for a source only verified rules trust",
            expect: Denied("token_missing"),
            make: || Scenario::new(start("evt-case", Req::deploy().start_detail(None))),
        },
        Case {
            name: "red team: app-payments feature branch claims app-billing, main, production for prod-migrations",
            expect: Denied("claim_mismatch"),
            make: || {
                let req = Req {
                    pipeline: "app-billing".into(),
                    role: MIGRATOR,
                    set: "db-migrate",
                    duration: "PT10M",
                    git_ref: Some("refs/heads/main"),
                    environment: Some("production"),
                    ..Req::deploy()
                };
                let mut c = claims_for("example-org/app-payments", &req.start_aud(), "jti-redteam");
                c.insert("ref".into(), json!("refs/heads/feature/exfil"));
                c.insert(
                    "sub".into(),
                    json!("repo:example-org/app-payments:ref:refs/heads/feature/exfil"),
                );
                c.insert("repository_id".into(), json!("5151"));
                start_of(&req, &c)
            },
        },
        Case {
            name: "red team, honest detail: app-payments feature branch asks for prod-migrations' role",
            expect: Denied("field_mismatch"),
            make: || {
                let req = Req {
                    pipeline: "app-payments".into(),
                    role: MIGRATOR,
                    set: "db-migrate",
                    duration: "PT10M",
                    git_ref: None,
                    environment: None,
                    ..Req::deploy()
                };
                let mut c = claims_for("example-org/app-payments", &req.start_aud(), "jti-redteam");
                c.insert("ref".into(), json!("refs/heads/feature/exfil"));
                c.insert("repository_id".into(), json!("5151"));
                start_of(&req, &c)
            },
        },
        // -- Replay ----------------------------------------------------------------------------
        Case {
            name: "token replayed for a different job of the same request",
            expect: Denied("token_replayed"),
            make: || {
                let x = Req::deploy();
                let token = json!(rs(&start_claims(&x)));
                let y = x.clone().job("deploy-again");
                Scenario::after(
                    vec![start("evt-x", x.start_detail(Some(token.clone())))],
                    start("evt-y", y.start_detail(Some(token))),
                )
            },
        },
        // -- Finish ----------------------------------------------------------------------------
        Case {
            name: "finish with the same run's token (control)",
            expect: Revoked,
            make: || {
                let req = Req::deploy();
                let token = rs(&finish_claims(&req));
                Scenario::after(
                    vec![real_grant()],
                    finish("evt-finish", req.finish_detail(Some(json!(token)))),
                )
            },
        },
        Case {
            name: "finish with no token",
            expect: Denied("finish_not_proven"),
            make: || {
                Scenario::after(
                    vec![real_grant()],
                    finish("evt-finish", Req::deploy().finish_detail(None)),
                )
            },
        },
        Case {
            name: "finish of our run with another run's token",
            expect: Denied("finish_not_proven"),
            make: || {
                let req = Req::deploy();
                let mut c = finish_claims(&req);
                c.insert("run_id".into(), json!(OTHER_RUN));
                Scenario::after(
                    vec![real_grant()],
                    finish("evt-finish", req.finish_detail(Some(json!(rs(&c))))),
                )
            },
        },
        Case {
            name: "finish of another run with that run's token: our grant untouched",
            expect: Unchanged,
            make: || {
                let other = Req {
                    run_id: OTHER_RUN.into(),
                    ..Req::deploy()
                };
                let mut c = finish_claims(&other);
                c.insert("run_id".into(), json!(OTHER_RUN));
                Scenario::after(
                    vec![real_grant()],
                    finish("evt-finish", other.finish_detail(Some(json!(rs(&c))))),
                )
            },
        },
        Case {
            name: "finish with the start's token (start audience)",
            expect: Denied("finish_not_proven"),
            make: || {
                let req = Req::deploy();
                let token = rs(&start_claims(&req));
                Scenario::after(
                    vec![real_grant()],
                    finish("evt-finish", req.finish_detail(Some(json!(token)))),
                )
            },
        },
        Case {
            name: "finish with a bit-flipped token of the same run",
            expect: Denied("finish_not_proven"),
            make: || {
                let req = Req::deploy();
                let token = rs(&finish_claims(&req));
                let mut sig = unb64(&segments(&token)[2]);
                sig[7] ^= 0x80;
                let token = with_signature(&token, &b64(&sig));
                Scenario::after(
                    vec![real_grant()],
                    finish("evt-finish", req.finish_detail(Some(json!(token)))),
                )
            },
        },
        // -- Extension -------------------------------------------------------------------------
        Case {
            name: "extension by 20m within max_total 40m (control)",
            expect: Extended,
            make: || {
                let req = Req::deploy();
                let c = claims_for("example-org/app-billing", &req.extend_aud("PT20M"), "jti-extend");
                Scenario::after(
                    vec![real_grant()],
                    extend("evt-extend", req.extend_detail("PT20M", Some(json!(rs(&c))))),
                )
            },
        },
        Case {
            name: "extension by 30m with a valid token: over max_total",
            expect: Denied("extension_over_max"),
            make: || {
                let req = Req::deploy();
                let c = claims_for("example-org/app-billing", &req.extend_aud("PT30M"), "jti-extend");
                Scenario::after(
                    vec![real_grant()],
                    extend("evt-extend", req.extend_detail("PT30M", Some(json!(rs(&c))))),
                )
            },
        },
        Case {
            name: "extension with no token",
            expect: Denied("token_missing"),
            make: || {
                Scenario::after(
                    vec![real_grant()],
                    extend("evt-extend", Req::deploy().extend_detail("PT20M", None)),
                )
            },
        },
        Case {
            name: "extension with the start's token (start audience)",
            expect: Denied("token_wrong_audience"),
            make: || {
                let req = Req::deploy();
                let token = rs(&start_claims(&req));
                Scenario::after(
                    vec![real_grant()],
                    extend("evt-extend", req.extend_detail("PT20M", Some(json!(token)))),
                )
            },
        },
        Case {
            name: "extension of our run's grant with another run's token",
            expect: Denied("claim_mismatch"),
            make: || {
                let req = Req::deploy();
                let mut c = claims_for("example-org/app-billing", &req.extend_aud("PT20M"), "jti-extend");
                c.insert("run_id".into(), json!(OTHER_RUN));
                Scenario::after(
                    vec![real_grant()],
                    extend("evt-extend", req.extend_detail("PT20M", Some(json!(rs(&c))))),
                )
            },
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

async fn deliver(s: &Service, event: Value) -> Result<Outcome, String> {
    handle_payload(s, LambdaEvent::new(event, Context::default()))
        .await
        .map_err(|e| e.to_string())
}

/// The state before the judged event.
struct Before {
    grants: BTreeMap<String, Grant>,
    audits: Vec<AuditRecord>,
    policies: usize,
    puts: usize,
    deletes: usize,
}

fn snapshot(s: &Service) -> Before {
    let (puts, deletes) = s.ports.iam.calls();
    Before {
        grants: s
            .ports
            .store
            .grants()
            .into_iter()
            .map(|g| (g.id.as_str().to_owned(), g))
            .collect(),
        audits: s.ports.store.audits(),
        policies: s.ports.iam.policy_count(),
        puts,
        deletes,
    }
}

/// Every token text a case's events carry.
fn tokens_of(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["detail"]["token"].as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What of the tokens appears in any audit, durable or published: the whole token, or any of its
/// segments long enough to be more than a coincidence (16 characters).
fn leaks(s: &Service, tokens: &[String]) -> Vec<String> {
    let audits: Vec<AuditRecord> = s
        .ports
        .store
        .audits()
        .into_iter()
        .chain(s.ports.audit.published())
        .collect();
    let text = serde_json::to_string(&audits).expect("audits serialize");
    let mut found = Vec::new();
    for token in tokens {
        if token.len() >= 16 && text.contains(token.as_str()) {
            found.push("the whole token".to_owned());
        }
        for (i, segment) in token.split('.').enumerate() {
            if segment.len() >= 16 && text.contains(segment) {
                found.push(format!("segment {i} of the token"));
            }
        }
    }
    found
}

fn new_audits(before: &Before, s: &Service) -> Vec<AuditRecord> {
    s.ports
        .store
        .audits()
        .into_iter()
        .filter(|a| !before.audits.iter().any(|b| b.audit_id == a.audit_id))
        .collect()
}

fn denied_reason(outcome: &Outcome) -> Option<&'static str> {
    match outcome {
        Outcome::Start(StartOutcome::Denied(r))
        | Outcome::Finish(FinishOutcome::Denied(r))
        | Outcome::Extend(ExtendOutcome::Denied(r)) => Some(r.code()),
        _ => None,
    }
}

/// Every grant recorded before is still recorded, unchanged, and its policy is still on its role.
fn grants_untouched(before: &Before, s: &Service, problems: &mut Vec<String>) {
    for (id, g) in &before.grants {
        let now_g = s.ports.store.grants().into_iter().find(|n| n.id.as_str() == id);
        match now_g {
            Some(n) if &n == g => {}
            Some(n) => problems.push(format!(
                "grant {id} changed: status {:?} -> {:?}, expiry {} -> {}",
                g.status, n.status, g.expires_at, n.expires_at
            )),
            None => problems.push(format!("grant {id} disappeared")),
        }
        if g.status == GrantStatus::Active && s.ports.iam.policy(&g.role, &g.id.policy_name()).is_none() {
            problems.push(format!("grant {id}'s policy is no longer on {}", g.role));
        }
    }
}

/// Runs one case; returns what is wrong (empty: the case holds).
async fn run_case(expect: Expect, scenario: Scenario) -> Vec<String> {
    let mut problems = Vec::new();
    let s = service(scenario.algs);
    for (i, given) in scenario.given.iter().enumerate() {
        match deliver(&s, given.clone()).await {
            Ok(Outcome::Start(StartOutcome::Activated(_))) => {}
            Ok(o) => problems.push(format!("given event {i} was not granted: {o:?}")),
            Err(e) => problems.push(format!("given event {i} failed: {e}")),
        }
    }
    let before = snapshot(&s);
    let outcome = match deliver(&s, scenario.event.clone()).await {
        Ok(o) => o,
        Err(e) => {
            problems.push(format!("handler returned Err (Lambda would retry): {e}"));
            return problems;
        }
    };
    let (puts, deletes) = s.ports.iam.calls();
    let grants = s.ports.store.grants();
    let fresh = new_audits(&before, &s);
    let outcome_text = format!("{outcome:?}");

    match expect {
        Expect::Denied(_) | Expect::Malformed(_) => {
            let (code, field) = match expect {
                Expect::Denied(code) => (code, None),
                Expect::Malformed(field) => ("malformed_event", Some(field)),
                _ => unreachable!(),
            };
            if denied_reason(&outcome) != Some(code) {
                problems.push(format!("outcome {outcome_text}, expected Denied({code})"));
            }
            if grants.len() != before.grants.len() {
                problems.push(format!("grants went from {} to {}", before.grants.len(), grants.len()));
            }
            grants_untouched(&before, &s, &mut problems);
            if puts != before.puts || deletes != before.deletes || s.ports.iam.policy_count() != before.policies {
                problems.push(format!(
                    "IAM was written: PutRolePolicy {} -> {puts}, DeleteRolePolicy {} -> {deletes}",
                    before.puts, before.deletes
                ));
            }
            match fresh.as_slice() {
                [a] => {
                    if a.decision != Decision::Denied || a.reason != code {
                        problems.push(format!(
                            "new audit is {:?} {}, expected Denied {code}",
                            a.decision, a.reason
                        ));
                    }
                    if let Some(field) = field
                        && !a.detail.as_deref().unwrap_or_default().contains(field)
                    {
                        problems.push(format!("audit detail {:?} does not name the field {field}", a.detail));
                    }
                    if !s.ports.audit.published().iter().any(|p| p.audit_id == a.audit_id) {
                        problems.push("the Denied audit was not published".into());
                    }
                }
                other => problems.push(format!("{} new durable audits, expected exactly one", other.len())),
            }
        }
        Expect::Granted => {
            let Outcome::Start(StartOutcome::Activated(id)) = &outcome else {
                problems.push(format!("outcome {outcome_text}, expected Activated"));
                return problems;
            };
            match grants.iter().find(|g| &g.id == id) {
                Some(g) if s.ports.iam.policy(&g.role, &g.id.policy_name()).is_some() => {}
                Some(_) => problems.push("granted, but no policy on the role".into()),
                None => problems.push("granted, but no grant recorded".into()),
            }
            if !(fresh.len() == 1 && fresh[0].decision == Decision::Activated) {
                problems.push(format!("expected one new Activated audit, got {fresh:?}"));
            }
            if fresh.first().is_some_and(|a| a.issuer.as_deref() != Some("github")) {
                problems.push("the activation audit does not name the github issuer".into());
            }
        }
        Expect::AlreadyActive => {
            if !matches!(outcome, Outcome::Start(StartOutcome::AlreadyActive(_))) {
                problems.push(format!("outcome {outcome_text}, expected AlreadyActive"));
            }
            if grants.len() != before.grants.len() || !fresh.is_empty() {
                problems.push(format!(
                    "a redelivery recorded something: grants {} -> {}, {} new audits",
                    before.grants.len(),
                    grants.len(),
                    fresh.len()
                ));
            }
            grants_untouched(&before, &s, &mut problems);
            if s.ports.iam.policy_count() != before.policies || deletes != before.deletes {
                problems.push("a redelivery changed what is on the roles".into());
            }
        }
        Expect::Revoked => {
            if !matches!(
                outcome,
                Outcome::Finish(FinishOutcome::Finished {
                    revoked: 1,
                    failed: 0,
                    ..
                })
            ) {
                problems.push(format!("outcome {outcome_text}, expected Finished {{ revoked: 1 }}"));
            }
            for g in before.grants.values() {
                let after = grants.iter().find(|n| n.id == g.id);
                if after.is_some_and(|n| n.status == GrantStatus::Active) {
                    problems.push(format!("grant {} is still active", g.id.as_str()));
                }
                if s.ports.iam.policy(&g.role, &g.id.policy_name()).is_some() {
                    problems.push(format!("grant {}'s policy is still on the role", g.id.as_str()));
                }
            }
        }
        Expect::Extended => {
            if !matches!(outcome, Outcome::Extend(ExtendOutcome::Extended(_))) {
                problems.push(format!("outcome {outcome_text}, expected Extended"));
            }
            for g in before.grants.values() {
                let later = grants.iter().find(|n| n.id == g.id).map(|n| n.expires_at);
                if later.is_none_or(|l| l <= g.expires_at) {
                    problems.push(format!("grant {} was not extended", g.id.as_str()));
                }
            }
            if grants.len() != before.grants.len() {
                problems.push("an extension recorded a new grant".into());
            }
        }
        Expect::Unchanged => {
            let ok = matches!(
                outcome,
                Outcome::Finish(FinishOutcome::Finished {
                    revoked: 0,
                    failed: 0,
                    ..
                }) | Outcome::Finish(FinishOutcome::Denied(_))
            );
            if !ok {
                problems.push(format!(
                    "outcome {outcome_text}, expected no effect on the given grants"
                ));
            }
            grants_untouched(&before, &s, &mut problems);
            if deletes != before.deletes || puts != before.puts {
                problems.push(format!(
                    "IAM was written: PutRolePolicy {} -> {puts}, DeleteRolePolicy {} -> {deletes}",
                    before.puts, before.deletes
                ));
            }
        }
    }
    let mut events: Vec<&Value> = scenario.given.iter().collect();
    events.push(&scenario.event);
    for leak in leaks(&s, &tokens_of(&events)) {
        problems.push(format!("an audit contains {leak}"));
    }
    problems
}

#[test]
fn the_corpus_has_at_least_45_cases_with_unique_names_and_covers_every_token_reason() {
    let all = cases();
    assert!(all.len() >= 45, "{} cases, the brief asks for at least 45", all.len());
    let mut names: Vec<_> = all.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len(), "case names must be unique");
    let codes: Vec<&str> = all
        .iter()
        .filter_map(|c| match c.expect {
            Expect::Denied(code) => Some(code),
            _ => None,
        })
        .collect();
    for code in [
        "token_missing",
        "token_malformed",
        "token_too_large",
        "token_algorithm_refused",
        "token_key_source_refused",
        "token_unknown_issuer",
        "token_unknown_key",
        "token_bad_signature",
        "token_wrong_audience",
        "token_expired",
        "token_not_yet_valid",
        "token_too_old",
        "claim_mismatch",
        "finish_not_proven",
        "no_matching_rule",
        "field_mismatch",
        "untrusted_trigger",
        "token_replayed",
        "extension_over_max",
    ] {
        assert!(codes.contains(&code), "no case expects {code}");
    }
}

#[tokio::test]
async fn given_each_hostile_token_when_handled_then_it_is_refused_for_what_it_changed() {
    // Keys and policies first, outside the per-case tasks (a panic here is the harness's own).
    let _ = (policy(Algs::Both), policy(Algs::EsOnly));
    let mut failed = Vec::new();
    let all = cases();
    for case in &all {
        let scenario = (case.make)();
        let expect = case.expect;
        // Each case on its own task, so a panic in the handler is caught and reported by name.
        match tokio::spawn(run_case(expect, scenario)).await {
            Ok(problems) => failed.extend(problems.into_iter().map(|p| format!("{}: {p}", case.name))),
            Err(e) => failed.push(format!("{}: PANICKED: {e}", case.name)),
        }
    }
    assert!(
        failed.is_empty(),
        "{} problem(s) in {} cases:\n{}",
        failed.len(),
        all.len(),
        failed.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Property: a token that does not verify never grants and never revokes
// ---------------------------------------------------------------------------------------------

mod mutated_tokens {
    use proptest::prelude::*;

    use super::*;

    fn config() -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(96);
        ProptestConfig::with_cases(cases)
    }

    /// A change to a token's text.
    #[derive(Debug, Clone)]
    enum ByteEdit {
        /// Flip `bit` of the byte at `at` (of the segment, modulo its length).
        Flip { segment: usize, at: usize, bit: u8 },
        /// Cut the segment to `keep` of its bytes (modulo its length).
        Truncate { segment: usize, keep: usize },
        /// Insert `ch` before the byte at `at`.
        Insert { segment: usize, at: usize, ch: char },
        /// Remove the byte at `at`.
        Remove { segment: usize, at: usize },
    }

    /// A change to a token's header or claims, re-signed with a key the policy does not pin.
    #[derive(Debug, Clone)]
    enum JsonEdit {
        Header(&'static str, Value),
        Claim(&'static str, Option<Value>),
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Bytes(Vec<ByteEdit>),
        Resigned { rsa: bool, edits: Vec<JsonEdit> },
    }

    fn byte_edit() -> impl Strategy<Value = ByteEdit> {
        let segment = 0usize..3;
        prop_oneof![
            (segment.clone(), any::<usize>(), 0u8..8).prop_map(|(segment, at, bit)| ByteEdit::Flip {
                segment,
                at,
                bit
            }),
            (segment.clone(), any::<usize>()).prop_map(|(segment, keep)| ByteEdit::Truncate { segment, keep }),
            (
                segment.clone(),
                any::<usize>(),
                prop_oneof![
                    prop::sample::select(vec!['A', 'z', '0', '-', '_', '.', '=', '+', '/', ' ', '"', '\u{0430}']),
                    any::<char>()
                ]
            )
                .prop_map(|(segment, at, ch)| ByteEdit::Insert { segment, at, ch }),
            (segment, any::<usize>()).prop_map(|(segment, at)| ByteEdit::Remove { segment, at }),
        ]
    }

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<String>().prop_map(Value::String),
            any::<i64>().prop_map(|n| json!(n)),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
            Just(json!([])),
            Just(json!({})),
        ]
    }

    fn json_edit() -> impl Strategy<Value = JsonEdit> {
        prop_oneof![
            (
                prop::sample::select(vec!["alg", "kid", "typ", "crit", "jku", "jwk"]),
                prop_oneof![
                    prop::sample::select(vec![
                        json!("RS256"),
                        json!("ES256"),
                        json!("none"),
                        json!("HS256"),
                        json!("rsa-1"),
                        json!("ec-1"),
                        json!("JWT"),
                    ]),
                    any_value()
                ]
            )
                .prop_map(|(k, v)| JsonEdit::Header(k, v)),
            (
                prop::sample::select(vec![
                    "iss",
                    "aud",
                    "sub",
                    "jti",
                    "exp",
                    "iat",
                    "nbf",
                    "repository",
                    "repository_id",
                    "run_id",
                    "run_attempt",
                    "ref",
                    "environment",
                    "event_name",
                ]),
                prop_oneof![
                    1 => Just(None),
                    3 => prop::sample::select(vec![
                        json!("https://gitlab.com"),
                        json!("example-org/app-*"),
                        json!("refs/heads/main"),
                        json!("production"),
                        json!("1"),
                        json!("4242"),
                        json!(at(0)),
                        json!(at(3600)),
                        json!(["latch"]),
                    ]).prop_map(Some),
                    2 => any_value().prop_map(Some),
                ]
            )
                .prop_map(|(k, v)| JsonEdit::Claim(k, v)),
        ]
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            prop::collection::vec(byte_edit(), 1..4).prop_map(Mutation::Bytes),
            (any::<bool>(), prop::collection::vec(json_edit(), 0..4))
                .prop_map(|(rsa, edits)| Mutation::Resigned { rsa, edits }),
        ]
    }

    /// Applies byte edits to a token's text (on char boundaries, so the result is still a string).
    fn edit_bytes(token: &str, edits: &[ByteEdit]) -> String {
        let mut parts: Vec<Vec<char>> = token.split('.').map(|s| s.chars().collect()).collect();
        for edit in edits {
            let seg = |s: usize| s % 3;
            match *edit {
                ByteEdit::Flip { segment, at, bit } => {
                    let p = &mut parts[seg(segment)];
                    if !p.is_empty() {
                        let i = at % p.len();
                        let flipped = (p[i] as u32) ^ (1 << bit);
                        p[i] = char::from_u32(flipped).unwrap_or('?');
                    }
                }
                ByteEdit::Truncate { segment, keep } => {
                    let p = &mut parts[seg(segment)];
                    let keep = keep % (p.len() + 1);
                    p.truncate(keep);
                }
                ByteEdit::Insert { segment, at, ch } => {
                    let p = &mut parts[seg(segment)];
                    let i = at % (p.len() + 1);
                    p.insert(i, ch);
                }
                ByteEdit::Remove { segment, at } => {
                    let p = &mut parts[seg(segment)];
                    if !p.is_empty() {
                        let i = at % p.len();
                        p.remove(i);
                    }
                }
            }
        }
        parts
            .into_iter()
            .map(|p| p.into_iter().collect::<String>())
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The valid token `claims` would make, mutated. `None`: the mutation changed nothing.
    fn mutate(claims: &Map<String, Value>, rsa: bool, m: &Mutation) -> Option<String> {
        let k = signers();
        let (signer, impostor) = if rsa {
            (&k.rsa, &k.rsa_impostor)
        } else {
            (&k.ec, &k.ec_impostor)
        };
        let valid = signed(signer, claims);
        let out = match m {
            Mutation::Bytes(edits) => edit_bytes(&valid, edits),
            Mutation::Resigned { rsa: _, edits } => {
                let mut header = json!({"alg": impostor.alg().as_str(), "typ": "JWT", "kid": impostor.kid()});
                let mut claims = claims.clone();
                for e in edits {
                    match e {
                        JsonEdit::Header(key, v) => header[*key] = v.clone(),
                        JsonEdit::Claim(key, Some(v)) => _ = claims.insert((*key).to_owned(), v.clone()),
                        JsonEdit::Claim(key, None) => _ = claims.remove(*key),
                    }
                }
                impostor
                    .sign_parts(&header.to_string(), &Value::Object(claims).to_string())
                    .expect("signing")
            }
        };
        (out != valid).then_some(out)
    }

    async fn check(m: Mutation, rsa: bool) -> Result<(), TestCaseError> {
        let s = service(Algs::Both);
        let granted = deliver(&s, real_grant()).await;
        prop_assert!(
            matches!(granted, Ok(Outcome::Start(StartOutcome::Activated(_)))),
            "the real grant: {:?}",
            granted
        );
        let real = s.ports.store.grants().pop().expect("the real grant");

        // As a start, for another job of the run (same request otherwise).
        let other = Req::deploy().job("deploy-2");
        let rsa = match &m {
            Mutation::Resigned { rsa, .. } => *rsa,
            Mutation::Bytes(_) => rsa,
        };
        if let Some(token) = mutate(&start_claims(&other), rsa, &m) {
            let (puts, _) = s.ports.iam.calls();
            let audits = s.ports.store.audits().len();
            let outcome = deliver(&s, start("evt-mutated-start", other.start_detail(Some(json!(token))))).await;
            prop_assert!(outcome.is_ok(), "the handler returned Err: {:?}", outcome);
            let outcome = outcome.unwrap();
            prop_assert!(
                matches!(outcome, Outcome::Start(StartOutcome::Denied(_))),
                "a mutated token was not refused: {:?}",
                outcome
            );
            prop_assert_eq!(s.ports.store.grants().len(), 1, "a grant was recorded");
            prop_assert_eq!(s.ports.iam.calls().0, puts, "IAM was written");
            prop_assert_eq!(s.ports.iam.policy_count(), 1);
            prop_assert_eq!(s.ports.store.audits().len(), audits + 1, "one Denied audit per refusal");
        }

        // As the finish of the job holding the real grant.
        let req = Req::deploy();
        if let Some(token) = mutate(&finish_claims(&req), rsa, &m) {
            let (_, deletes) = s.ports.iam.calls();
            let outcome = deliver(&s, finish("evt-mutated-finish", req.finish_detail(Some(json!(token))))).await;
            prop_assert!(outcome.is_ok(), "the handler returned Err: {:?}", outcome);
            let outcome = outcome.unwrap();
            prop_assert!(
                matches!(outcome, Outcome::Finish(FinishOutcome::Denied(_))),
                "a mutated finish token was not refused: {:?}",
                outcome
            );
            prop_assert_eq!(s.ports.iam.calls().1, deletes, "IAM was written");
            let now_real = s.ports.store.grants().into_iter().find(|g| g.id == real.id);
            prop_assert_eq!(now_real.as_ref(), Some(&real), "the real grant changed");
            prop_assert!(
                s.ports.iam.policy(&real.role, &real.id.policy_name()).is_some(),
                "the real grant's policy left the role"
            );
        }
        Ok(())
    }

    fn block_on(f: impl std::future::Future<Output = Result<(), TestCaseError>>) -> Result<(), TestCaseError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    proptest! {
        #![proptest_config(config())]

        /// Valid tokens (RS256 or ES256) mutated in their bytes, or edited and re-signed with an
        /// unpinned key: never a grant as a start, never a revoke as a finish, never a panic or
        /// an `Err`, always exactly one audited refusal.
        #[test]
        fn no_token_that_does_not_verify_grants_or_revokes(m in mutation(), rsa in any::<bool>()) {
            block_on(check(m, rsa))?;
        }
    }

    #[test]
    fn the_unmutated_tokens_are_accepted() {
        // The control for the property: the same tokens, unmutated, grant and finish.
        block_on(async {
            let s = service(Algs::Both);
            prop_assert!(matches!(
                deliver(&s, real_grant()).await,
                Ok(Outcome::Start(StartOutcome::Activated(_)))
            ));
            let other = Req::deploy().job("deploy-2");
            let token = signed(&signers().ec, &start_claims(&other));
            let o = deliver(&s, start("evt-2", other.start_detail(Some(json!(token))))).await;
            prop_assert!(matches!(o, Ok(Outcome::Start(StartOutcome::Activated(_)))), "{:?}", o);
            let req = Req::deploy();
            let o = deliver(
                &s,
                finish("evt-3", req.finish_detail(Some(json!(rs(&finish_claims(&req)))))),
            )
            .await;
            prop_assert!(
                matches!(o, Ok(Outcome::Finish(FinishOutcome::Finished { revoked: 1, .. }))),
                "{:?}",
                o
            );
            Ok(())
        })
        .unwrap();
    }
}
