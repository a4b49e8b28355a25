//! The CI's OIDC ID token, as `latch request`, `release` and `extend` obtain and use it.
//!
//! Contract:
//! - Where the token comes from, first match wins ([`TokenSource::choose`]): `--token-file PATH`,
//!   then the `LATCH_ID_TOKEN` variable (GitLab's `id_tokens:` puts it there), then GitHub
//!   Actions' token request (`ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN`),
//!   asked for the audience the grant function expects for this very request
//!   ([`latch_core::identity::request_audience`]). `--no-token` publishes without one (only
//!   `identity: claimed` rules can then allow it); with none of these it is a usage error that
//!   says how to get one.
//! - The GitHub request is bounded: connect [`CONNECT_TIMEOUT`], whole exchange
//!   [`TOTAL_TIMEOUT`], answer at most [`MAX_ANSWER_BYTES`].
//! - The token is never printed or logged: [`IdToken`]'s `Debug` hides it, and error messages
//!   name where it came from, never what it is.
//! - [`predict`] decodes the token, unverified, and reconciles it with the job the CI variables
//!   describe exactly as the grant function will (`identity::claims::reconcile`), so the client
//!   publishes a detail that agrees with its token and knows the grant id it will get.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode, Uri, header};
use latch_core::identity::IssuerKind;
use latch_core::identity::claims::{ClaimsError, reconcile};
use latch_core::identity::verify::read_unverified;
use latch_core::model::{JobContext, JobKey, Name};
use serde_json::Value;

use crate::CliError;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The variable GitLab's `id_tokens:` (or any CI) fills with the token.
pub const ENV_TOKEN: &str = "LATCH_ID_TOKEN";
pub const ENV_GITHUB_URL: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
pub const ENV_GITHUB_BEARER: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";

/// How the client proves who the job is.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Read the CI's OIDC ID token from this file [default: $LATCH_ID_TOKEN, else GitHub
    /// Actions' token request (needs `permissions: id-token: write`)]
    #[arg(long, value_name = "PATH", conflicts_with = "no_token")]
    token_file: Option<PathBuf>,
    /// Publish without a token: only an `identity: claimed` rule can allow it.
    #[arg(long)]
    no_token: bool,
    /// The prefix of the audience asked of GitHub (the issuer's `audience:` in the policy file).
    #[arg(long, env = "LATCH_AUDIENCE_PREFIX", default_value = "latch")]
    pub audience_prefix: String,
    /// How the token's claims name the job [default: github on GitHub Actions, gitlab on
    /// GitLab CI, else generic]
    #[arg(long, value_enum)]
    issuer_kind: Option<Kind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Github,
    Gitlab,
    Generic,
}

/// A token, kept out of every `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct IdToken(String);

impl IdToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for IdToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdToken(…)")
    }
}

/// Where this run's token comes from (see the module contract for the order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Env(IdToken),
    GitHub { url: String, bearer: IdToken },
    Omitted,
}

const HOW_TO_GET_ONE: &str = "no OIDC ID token: on GitHub Actions grant `permissions: id-token: write`; on GitLab \
     add `id_tokens: LATCH_ID_TOKEN: aud: <the issuer's exact_audience>`; elsewhere pass --token-file PATH \
     or set LATCH_ID_TOKEN; --no-token publishes without one (only `identity: claimed` rules allow that)";

impl TokenSource {
    pub fn choose(args: &TokenArgs, get: impl Fn(&str) -> Option<String>) -> Result<Self, CliError> {
        let get = |k: &str| get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if args.no_token {
            return Ok(Self::Omitted);
        }
        if let Some(path) = &args.token_file {
            return Ok(Self::File(path.clone()));
        }
        if let Some(token) = get(ENV_TOKEN) {
            return Ok(Self::Env(IdToken(token)));
        }
        if let (Some(url), Some(bearer)) = (get(ENV_GITHUB_URL), get(ENV_GITHUB_BEARER)) {
            return Ok(Self::GitHub {
                url,
                bearer: IdToken(bearer),
            });
        }
        Err(CliError::Usage(HOW_TO_GET_ONE.into()))
    }

    /// The token, asking GitHub for `audience` when that is the source. `audience` is only
    /// computed when needed (release asks STS for the account).
    pub async fn obtain<F, Fut>(&self, audience: F) -> Result<Option<IdToken>, CliError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<String, CliError>>,
    {
        match self {
            Self::Omitted => Ok(None),
            Self::Env(t) => Ok(Some(t.clone())),
            Self::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
                    path: path.clone(),
                    source,
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(CliError::Usage(format!(
                        "--token-file {}: the file is empty",
                        path.display()
                    )));
                }
                Ok(Some(IdToken(token.to_owned())))
            }
            Self::GitHub { url, bearer } => {
                let audience = audience().await?;
                github_request(url, bearer, &audience).await.map(Some)
            }
        }
    }

    fn is_github(&self) -> bool {
        matches!(self, Self::GitHub { .. })
    }
}

/// GitHub Actions' token request: `GET <url>&audience=<aud>` with the request bearer; the
/// answer is `{"value": "<jwt>"}`.
pub async fn github_request(url: &str, bearer: &IdToken, audience: &str) -> Result<IdToken, CliError> {
    let fail = |why: String| CliError::Aws(format!("GitHub's ID token request failed: {why}"));
    let aud = percent_encoding::utf8_percent_encode(audience, percent_encoding::NON_ALPHANUMERIC);
    let separator = if url.contains('?') { '&' } else { '?' };
    let full = format!("{url}{separator}audience={aud}");
    let uri: Uri = full
        .parse()
        .map_err(|e| fail(format!("{ENV_GITHUB_URL} is not a URL: {e}")))?;
    let client =
        latch_aws::jwks::https_client(CONNECT_TIMEOUT).map_err(|e| fail(format!("no root certificates: {e}")))?;
    let request = Request::get(uri)
        .header(header::AUTHORIZATION, format!("bearer {}", bearer.expose()))
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "latch")
        .body(Empty::new())
        .map_err(|e| fail(e.to_string()))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| fail(e.to_string()))?;
        if response.status() != StatusCode::OK {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| fail(format!("answer unreadable or over {MAX_ANSWER_BYTES} bytes: {e}")))?
            .to_bytes();
        let answer: Value = serde_json::from_slice(&body).map_err(|_| fail("the answer is not JSON".into()))?;
        match answer.get("value").and_then(Value::as_str) {
            Some(v) if !v.is_empty() => Ok(IdToken(v.to_owned())),
            _ => Err(fail("the answer has no `value`".into())),
        }
    };
    tokio::time::timeout(TOTAL_TIMEOUT, exchange).await.map_err(|_| {
        fail(format!(
            "no answer within {}",
            humantime::format_duration(TOTAL_TIMEOUT)
        ))
    })?
}

impl TokenArgs {
    /// The issuer kind: the flag, else the CI this runs on, else how the token was had.
    pub fn kind(&self, source: &TokenSource, get: impl Fn(&str) -> Option<String>) -> IssuerKind {
        match self.issuer_kind {
            Some(Kind::Github) => IssuerKind::GitHub,
            Some(Kind::Gitlab) => IssuerKind::GitLab,
            Some(Kind::Generic) => IssuerKind::Generic,
            None if get("GITHUB_ACTIONS").as_deref() == Some("true") || source.is_github() => IssuerKind::GitHub,
            None if get("GITLAB_CI").as_deref() == Some("true") => IssuerKind::GitLab,
            None => IssuerKind::Generic,
        }
    }
}

/// The job fields the token names by itself (per issuer kind, as `identity::claims` maps them),
/// used where neither a flag nor a CI variable gives one. Unverified and best effort.
pub fn signed_job(token: &IdToken, kind: IssuerKind) -> crate::ci_env::JobEnv {
    let Ok(parsed) = latch_core::identity::jwt::parse(token.expose()) else {
        return crate::ci_env::JobEnv::default();
    };
    let claim = |name: &str| match parsed.claims().get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(v @ Value::Number(_)) => Some(v.to_string()),
        _ => None,
    };
    let last = |p: String| p.rsplit('/').next().unwrap_or(&p).to_owned();
    match kind {
        IssuerKind::GitHub => crate::ci_env::JobEnv {
            pipeline: claim("repository").map(last),
            run_id: claim("run_id"),
            attempt: claim("run_attempt").and_then(|a| a.parse().ok()),
            ..Default::default()
        },
        IssuerKind::GitLab => crate::ci_env::JobEnv {
            pipeline: claim("project_path").map(last),
            run_id: claim("pipeline_id"),
            job: claim("job_id"),
            attempt: Some(1),
            ..Default::default()
        },
        IssuerKind::Generic => crate::ci_env::JobEnv::default(),
    }
}

/// The job as the grant function will reconcile it from `token` and the claimed job and
/// context (unverified here: it only predicts the grant id and checks the detail agrees).
pub fn predict(
    token: &IdToken,
    kind: IssuerKind,
    claimed: &JobKey,
    claimed_context: &JobContext,
) -> Result<latch_core::identity::claims::VerifiedJob, CliError> {
    let bad = |why: String| CliError::Usage(format!("the ID token cannot be read: {why}"));
    let issuer = Name::parse("client").map_err(|e| bad(e.0))?;
    let unverified =
        read_unverified(token.expose(), issuer, kind, chrono::Utc::now()).map_err(|e| bad(e.to_string()))?;
    if unverified.issuer_url.is_empty() {
        return Err(bad("it has no `iss`".into()));
    }
    reconcile(&unverified, claimed, claimed_context).map_err(|e| match e {
        ClaimsError::Mismatch { .. } => CliError::Usage(format!(
            "{e}: the grant function would deny this (claim_mismatch); drop the flag or fix the CI variables"
        )),
        other => bad(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use latch_core::model::JobContext;
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    fn args(extra: &[&str]) -> TokenArgs {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            t: TokenArgs,
        }
        let mut argv = vec!["p"];
        argv.extend_from_slice(extra);
        <P as clap::Parser>::try_parse_from(argv).unwrap().t
    }

    const GH: [(&str, &str); 2] = [
        (ENV_GITHUB_URL, "http://127.0.0.1:1/t?api-version=2.0"),
        (ENV_GITHUB_BEARER, "bearer-secret"),
    ];

    #[test]
    fn the_token_file_wins_then_the_variable_then_github() {
        let all = env(&[GH[0], GH[1], (ENV_TOKEN, "from-env")]);
        assert_eq!(
            TokenSource::choose(&args(&["--token-file", "/t"]), &all).unwrap(),
            TokenSource::File("/t".into())
        );
        assert_eq!(
            TokenSource::choose(&args(&[]), &all).unwrap(),
            TokenSource::Env(IdToken("from-env".into()))
        );
        assert!(TokenSource::choose(&args(&[]), env(&GH)).unwrap().is_github());
        assert_eq!(
            TokenSource::choose(&args(&["--no-token"]), &all).unwrap(),
            TokenSource::Omitted
        );
        // Half of GitHub's pair, or an empty variable, is no token: a usage error saying how.
        let err = TokenSource::choose(&args(&[]), env(&[GH[0], (ENV_TOKEN, " ")])).unwrap_err();
        assert!(
            matches!(&err, CliError::Usage(m) if m.contains("id-token: write")),
            "{err}"
        );
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        let s = TokenSource::choose(&args(&[]), env(&[(ENV_TOKEN, "eyJsecret")])).unwrap();
        assert!(!format!("{s:?}").contains("eyJsecret"));
    }

    /// A one-request HTTP server: checks the request line and bearer, answers `body`.
    async fn serve_once(body: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token?api-version=2.0", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&got).into_owned()
        });
        (url, task)
    }

    #[tokio::test]
    async fn github_is_asked_for_the_request_audience_with_its_bearer() {
        let (url, server) = serve_once(r#"{"count":1,"value":"header.claims.sig"}"#).await;
        let source = TokenSource::choose(&args(&[]), env(&[(ENV_GITHUB_URL, &url), GH[1]])).unwrap();
        let token = source.obtain(|| async { Ok("latch:abc123".to_owned()) }).await.unwrap();
        assert_eq!(token.unwrap().expose(), "header.claims.sig");
        let request = server.await.unwrap().to_lowercase();
        assert!(
            request.starts_with("get /token?api-version=2.0&audience=latch%3aabc123 http/1.1"),
            "{request}"
        );
        assert!(request.contains("authorization: bearer bearer-secret"), "{request}");
    }

    #[tokio::test]
    async fn a_github_answer_without_a_value_is_an_error_naming_no_token() {
        let (url, _server) = serve_once(r#"{"message":"no"}"#).await;
        let err = github_request(&url, &IdToken("b".into()), "a").await.unwrap_err();
        assert!(err.to_string().contains("no `value`"), "{err}");
        // Nothing listens: refused within the bounds.
        let err = github_request("http://127.0.0.1:9/x", &IdToken("b".into()), "a")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("request failed"), "{err}");
    }

    #[test]
    fn the_predicted_grant_id_is_the_one_the_function_derives() {
        use latch_core::identity::testing::TestSigner;
        use latch_core::identity::{StaticKeys, TokenAlgorithm};
        use latch_core::model::{AccountId, GrantDuration, GrantId, GrantIdentity, RoleArn};
        let signer = TestSigner::generate(TokenAlgorithm::Es256, "k1").unwrap();
        let iss = "https://token.actions.githubusercontent.com";
        let account = AccountId::parse("123456789012").unwrap();
        let role = RoleArn::parse("arn:aws:iam::123456789012:role/latch/app-deployer").unwrap();
        let set = Name::parse("deploy-artifacts").unwrap();
        let duration = GrantDuration::parse("15m").unwrap();
        let presented = latch_core::identity::Presented::Start(latch_core::identity::AudienceBinding {
            account: &account,
            role: &role,
            permission_set: &set,
            duration,
        });
        let aud = latch_core::identity::request_audience("latch", presented);
        let now = chrono::Utc::now().timestamp();
        let token = signer
            .sign(&serde_json::json!({
                "iss": iss, "aud": aud, "iat": now, "exp": now + 300, "jti": "j-1",
                "sub": "repo:example-org/app-release:ref:refs/heads/main",
                "repository": "example-org/app-release", "repository_id": 4242, "run_id": "77",
                "run_attempt": "2", "ref": "refs/heads/main", "actor": "octocat",
            }))
            .unwrap();
        let claimed = JobKey {
            principal: None,
            pipeline: "app-release".into(),
            run_id: "77".into(),
            job: "deploy".into(),
            attempt: 2,
        };
        let predicted = predict(
            &IdToken(token.clone()),
            IssuerKind::GitHub,
            &claimed,
            &JobContext::default(),
        )
        .unwrap();

        // What the grant function does: verify against the issuer, then reconcile.
        let issuer = latch_core::identity::Issuer {
            name: Name::parse("github").unwrap(),
            kind: IssuerKind::GitHub,
            url: iss.into(),
            audience: latch_core::identity::AudienceForm::BoundToRequest { prefix: "latch".into() },
            algorithms: vec![TokenAlgorithm::Es256],
            pinned_keys: Some(std::sync::Arc::new(
                latch_core::identity::JwkSet::from_value(&latch_core::identity::testing::jwks(&[&signer])).unwrap(),
            )),
            max_token_age: Duration::from_secs(600),
        };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let verified = rt
            .block_on(latch_core::identity::verify::verify_token(
                &StaticKeys,
                &[issuer],
                &token,
                presented,
                chrono::Utc::now(),
            ))
            .unwrap();
        let function_job = reconcile(&verified, &claimed, &JobContext::default()).unwrap().job;
        assert_eq!(predicted.job, function_job);
        let id = |job: &JobKey| {
            GrantId::derive(GrantIdentity {
                account: &account,
                source: "ci.github",
                job,
                permission_set: &set,
                role: &role,
            })
        };
        assert_eq!(id(&predicted.job), id(&function_job));
        assert_ne!(id(&predicted.job), id(&claimed), "the principal is part of the id");

        // A detail that contradicts the token is refused before anything is published.
        let mut other = claimed.clone();
        other.run_id = "78".into();
        let err = predict(&IdToken(token), IssuerKind::GitHub, &other, &JobContext::default()).unwrap_err();
        assert!(err.to_string().contains("claim_mismatch"), "{err}");
    }
}
