//! Local development issuers for `latch dev` and `latch demo`: one [`LocalIssuer`] on loopback
//! stands in for each issuer the policy file names, so verified rules run locally unchanged.
//!
//! Contract:
//! - [`DevIssuers::stand_in`] starts one local issuer per policy issuer (one each, not one for
//!   all: the verifier picks the issuer by `iss`, and each keeps its own kind and audience form),
//!   then rewrites the loaded policy: each issuer's `url` becomes its stand-in's URL and its keys
//!   are pinned to the stand-in's public JWKS. The grant service then verifies with
//!   `StaticKeys` (pinned keys, nothing fetched). Keys are made at start and die with the
//!   process; a deployed function never accepts them (its policy names the real issuers).
//! - [`DevIssuers::mint`] signs a token as the named issuer would for a CI job: example claims of
//!   the issuer's kind, overridden by the caller's.
//! - [`DevIssuers::serve_tokens`] (for `latch dev`) answers GitHub Actions' token request on
//!   loopback, `GET /token?issuer=NAME[&claims=JSON]&audience=AUD` with
//!   `Authorization: bearer <secret>` → `{"value": "<jwt>"}`, so `latch request` run with
//!   `ACTIONS_ID_TOKEN_REQUEST_URL` / `_TOKEN` pointing there takes the real GitHub path.
//!   The secret is made per run (not cryptographic strength: loopback, dev keys only).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use latch_aws::local_issuer::LocalIssuer;
use latch_core::identity::{AudienceForm, IssuerKind, JwkSet};
use latch_core::policy::Policy;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::CliError;

struct StandIn {
    name: String,
    kind: IssuerKind,
    audience: AudienceForm,
    issuer: LocalIssuer,
}

/// The running stand-ins; they stop when this is dropped.
pub struct DevIssuers {
    stand_ins: Arc<Vec<StandIn>>,
    endpoint: Option<JoinHandle<()>>,
}

impl Drop for DevIssuers {
    fn drop(&mut self) {
        if let Some(e) = &self.endpoint {
            e.abort();
        }
    }
}

/// A token endpoint `latch dev` serves: GitHub Actions' pair of variables.
pub struct TokenEndpoint {
    pub url: String,
    pub secret: String,
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("local development issuer: {e}"))
}

impl DevIssuers {
    pub async fn stand_in(policy: &mut Policy) -> Result<Self, CliError> {
        // Key generation is slow in debug builds: start them all at once.
        let starting: Vec<_> = policy
            .issuers
            .iter()
            .map(|_| tokio::spawn(LocalIssuer::start()))
            .collect();
        let mut stand_ins = Vec::new();
        for (issuer, task) in policy.issuers.iter_mut().zip(starting) {
            let local = task.await.map_err(failed)?.map_err(failed)?;
            let keys = JwkSet::from_value(&local.public_jwks()).map_err(failed)?;
            issuer.url = local.url().to_owned();
            issuer.pinned_keys = Some(Arc::new(keys));
            stand_ins.push(StandIn {
                name: issuer.name.as_str().to_owned(),
                kind: issuer.kind,
                audience: issuer.audience.clone(),
                issuer: local,
            });
        }
        Ok(Self {
            stand_ins: Arc::new(stand_ins),
            endpoint: None,
        })
    }

    /// One line per stand-in, for the banner.
    pub fn banner(&self) -> Vec<String> {
        self.stand_ins
            .iter()
            .map(|s| {
                format!(
                    "issuer {} → local development issuer {} (keys made now; a deployed function never accepts them)",
                    s.name,
                    s.issuer.url()
                )
            })
            .collect()
    }

    /// A token from the stand-in for `issuer` (see the module contract).
    pub fn mint(&self, issuer: &str, claims: &Value, audience: Option<&str>) -> Result<String, CliError> {
        mint(&self.stand_ins, issuer, claims, audience)
    }

    /// Serves GitHub's token request on loopback (see the module contract).
    pub async fn serve_tokens(&mut self) -> Result<TokenEndpoint, CliError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(failed)?;
        let addr = listener.local_addr().map_err(failed)?;
        let secret = secret();
        let stand_ins = self.stand_ins.clone();
        let expected = format!("bearer {secret}");
        self.endpoint = Some(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (stand_ins, expected) = (stand_ins.clone(), expected.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let answer = answer(&stand_ins, &expected, &request);
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
        Ok(TokenEndpoint {
            url: format!("http://{addr}/token"),
            secret,
        })
    }
}

/// A per-run secret from the standard library's randomly keyed hasher and the clock.
fn secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// Example claims of a CI job of `kind`, as GitHub and GitLab write them.
pub fn example_claims(kind: IssuerKind) -> Value {
    let run = chrono::Utc::now().timestamp().to_string();
    match kind {
        IssuerKind::GitHub => json!({
            "sub": "repo:example-org/app-release:ref:refs/heads/main",
            "repository": "example-org/app-release", "repository_id": "100001",
            "repository_owner": "example-org", "repository_owner_id": "1001",
            "run_id": run, "run_number": "1", "run_attempt": "1",
            "ref": "refs/heads/main", "ref_type": "branch", "sha": "0123abcd",
            "actor": "octocat", "event_name": "push", "workflow": "deploy",
        }),
        IssuerKind::GitLab => json!({
            "sub": "project_path:example-group/platform-tools:ref_type:branch:ref:main",
            "project_path": "example-group/platform-tools", "project_id": "200002",
            "namespace_path": "example-group", "pipeline_id": run, "pipeline_source": "push",
            "job_id": format!("{run}1"), "ref": "main", "ref_type": "branch", "ref_protected": "true",
            "sha": "0123abcd", "user_login": "maintainer",
        }),
        IssuerKind::Generic => json!({"sub": "local-job"}),
    }
}

fn mint(stand_ins: &[StandIn], issuer: &str, claims: &Value, audience: Option<&str>) -> Result<String, CliError> {
    let s = stand_ins
        .iter()
        .find(|s| s.name == issuer)
        .ok_or_else(|| failed(format!("the policy names no issuer {issuer:?}")))?;
    let Value::Object(given) = claims else {
        return Err(failed("claims must be a JSON object"));
    };
    let mut all = match example_claims(s.kind) {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    all.extend(given.clone());
    if let Some(aud) = audience {
        all.insert("aud".into(), json!(aud));
    } else if let (false, AudienceForm::Exact(aud)) = (all.contains_key("aud"), &s.audience) {
        all.insert("aud".into(), json!(aud));
    }
    s.issuer.mint(Value::Object(all)).map_err(failed)
}

fn answer(stand_ins: &[StandIn], expected: &str, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: Value| {
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        r
    };
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(expected));
    if !authorized {
        return reply(StatusCode::UNAUTHORIZED, json!({"message": "bad bearer"}));
    }
    if request.uri().path() != "/token" {
        return reply(StatusCode::NOT_FOUND, json!({"message": "not found"}));
    }
    let query: BTreeMap<String, String> = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = v.replace('+', " ");
            let v = percent_encoding::percent_decode_str(&v)
                .decode_utf8_lossy()
                .into_owned();
            (k.to_owned(), v)
        })
        .collect();
    let issuer = query.get("issuer").map_or("github", String::as_str);
    let claims = match query.get("claims").map(|c| serde_json::from_str::<Value>(c)) {
        None => json!({}),
        Some(Ok(c)) => c,
        Some(Err(e)) => return reply(StatusCode::BAD_REQUEST, json!({"message": format!("claims: {e}")})),
    };
    match mint(stand_ins, issuer, &claims, query.get("audience").map(String::as_str)) {
        Ok(token) => reply(StatusCode::OK, json!({"count": 1, "value": token})),
        Err(e) => reply(StatusCode::BAD_REQUEST, json!({"message": e.to_string()})),
    }
}
