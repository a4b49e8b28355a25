//! Issuer keys over HTTPS: [`HttpKeySource`], latch-core's [`KeySource`] port for OIDC issuers.
//!
//! Contract:
//! - An issuer with keys pinned in the policy file gets those, and nothing is fetched.
//! - Otherwise the keys are found the OIDC way: `GET <issuer.url>/.well-known/openid-configuration`,
//!   its `jwks_uri`, `GET` that, [`JwkSet::parse`]. Both URLs must be `https`, or `http` to a
//!   loopback host only (the local issuer of tests and `latch dev`) ([`fetchable_url`]).
//! - Key sets are cached per issuer name for the life of the warm container. A `refresh`
//!   (unknown `kid`) refetches at most once per [`FetchLimits::refresh_interval`] per issuer,
//!   otherwise it answers from the cache: a flood of tokens with made-up kids costs the issuer one
//!   request a minute, not one per token. A set older than [`FetchLimits::max_age`] is refetched
//!   on the next use; if that fails, the cached set is still served (logged).
//! - Every fetch is bounded: connect [`FetchLimits::connect`], discovery plus JWKS
//!   [`FetchLimits::total`], each body [`FetchLimits::max_body`]. Any status but 200, a timeout, an
//!   oversized or malformed answer is a [`KeyError`]: retryable, never a grant, never a denial.
//! - One fetch at a time per issuer (callers wait for the fetch in flight and share its answer).
//! - [`HttpKeySource::fetches`] counts fetches (discovery + JWKS = one), for benchmarks to report
//!   apart from the per-decision work.
//!
//! HTTP is hyper 1 with hyper-rustls over aws-lc-rs and the platform's roots: the stack the AWS
//! SDK already carries, not a second one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use latch_core::identity::{Issuer, JwkSet, KeyError, KeySource};
use serde_json::Value;

/// Bounds on fetching an issuer's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// TCP connect timeout.
    pub connect: Duration,
    /// Discovery document and JWKS together.
    pub total: Duration,
    /// Largest body read (discovery or JWKS).
    pub max_body: usize,
    /// A refresh asked sooner than this after the last fetch answers from the cache.
    pub refresh_interval: Duration,
    /// A cached set older than this is refetched on its next use.
    pub max_age: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            total: Duration::from_secs(5),
            max_body: 256 * 1024,
            refresh_interval: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
        }
    }
}

#[derive(Default)]
struct Slot {
    keys: Option<Arc<JwkSet>>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

/// Issuer keys from each issuer's discovery document, cached (see the module contract).
pub struct HttpKeySource {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    limits: FetchLimits,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for HttpKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpKeySource")
            .field("limits", &self.limits)
            .field("fetches", &self.fetches())
            .finish()
    }
}

impl HttpKeySource {
    /// With [`FetchLimits::default`]. Fails when the platform has no root certificates.
    pub fn new() -> Result<Self, KeyError> {
        Self::with_limits(FetchLimits::default())
    }

    pub fn with_limits(limits: FetchLimits) -> Result<Self, KeyError> {
        let client = https_client(limits.connect)
            .map_err(|e| KeyError(format!("no root certificates for fetching issuer keys: {e}")))?;
        Ok(Self {
            client,
            limits,
            slots: Mutex::new(HashMap::new()),
            fetches: AtomicU64::new(0),
        })
    }

    /// Key-set fetches made so far (one per discovery + JWKS round, successful or not).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn slot(&self, issuer: &Issuer) -> Arc<tokio::sync::Mutex<Slot>> {
        // A poisoned map only means another thread panicked mid-insert; the map is still whole.
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(issuer.name.as_str().to_owned()).or_default().clone()
    }

    async fn fetch(&self, issuer: &Issuer) -> Result<JwkSet, KeyError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        fetchable_url(&issuer.url).map_err(|e| KeyError(format!("issuer url: {e}")))?;
        let round = async {
            let discovery_url = format!("{}/.well-known/openid-configuration", issuer.url.trim_end_matches('/'));
            let body = self.get(&discovery_url).await?;
            let doc: Value = serde_json::from_slice(&body)
                .map_err(|e| KeyError(format!("discovery document {discovery_url} is not JSON: {e}")))?;
            // OpenID Connect Discovery §4.3: the document must be the issuer's own.
            if let Some(iss) = doc.get("issuer")
                && iss.as_str() != Some(issuer.url.as_str())
            {
                return Err(KeyError(format!(
                    "discovery document {discovery_url} names another issuer"
                )));
            }
            let jwks_uri = doc
                .get("jwks_uri")
                .and_then(Value::as_str)
                .ok_or_else(|| KeyError(format!("discovery document {discovery_url} has no jwks_uri")))?;
            fetchable_url(jwks_uri).map_err(|e| KeyError(format!("jwks_uri: {e}")))?;
            let body = self.get(jwks_uri).await?;
            JwkSet::parse(&body).map_err(|e| KeyError(format!("key set {jwks_uri}: {e}")))
        };
        tokio::time::timeout(self.limits.total, round)
            .await
            .map_err(|_| KeyError(format!("fetching keys took over {:?}", self.limits.total)))?
    }

    async fn get(&self, url: &str) -> Result<Bytes, KeyError> {
        let uri: Uri = url.parse().map_err(|e| KeyError(format!("{url} is not a URL: {e}")))?;
        let request = Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "latch")
            .body(Empty::new())
            .map_err(|e| KeyError(format!("GET {url}: {e}")))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| KeyError(format!("GET {url}: {e}")))?;
        if response.status() != StatusCode::OK {
            return Err(KeyError(format!("GET {url}: HTTP {}", response.status())));
        }
        let limited = Limited::new(response.into_body(), self.limits.max_body);
        let collected = limited.collect().await.map_err(|e| {
            KeyError(format!(
                "GET {url}: body unreadable or over {} bytes: {e}",
                self.limits.max_body
            ))
        })?;
        Ok(collected.to_bytes())
    }
}

impl KeySource for HttpKeySource {
    async fn keys(&self, issuer: &Issuer, refresh: bool) -> Result<Arc<JwkSet>, KeyError> {
        if let Some(pinned) = &issuer.pinned_keys {
            return Ok(pinned.clone());
        }
        let slot = self.slot(issuer);
        let mut slot = slot.lock().await;
        let now = Instant::now();
        if let Some(cached) = &slot.keys {
            let stale = slot
                .fetched_at
                .is_none_or(|t| now.duration_since(t) >= self.limits.max_age);
            let may_fetch = slot
                .attempted_at
                .is_none_or(|t| now.duration_since(t) >= self.limits.refresh_interval);
            if !(refresh || stale) || !may_fetch {
                return Ok(cached.clone());
            }
        }
        slot.attempted_at = Some(now);
        match self.fetch(issuer).await {
            Ok(set) => {
                let set = Arc::new(set);
                slot.keys = Some(set.clone());
                slot.fetched_at = Some(now);
                Ok(set)
            }
            // Only age asked for this fetch: the cached keys are still the issuer's best known.
            Err(e) if !refresh && slot.keys.is_some() => {
                tracing::warn!(issuer = %issuer.name, error = %e, "refetching issuer keys failed; using cached keys");
                slot.keys.clone().ok_or(e)
            }
            Err(e) => Err(e),
        }
    }
}

/// An HTTP client on the stack the AWS SDK already carries (hyper 1, hyper-rustls over aws-lc-rs,
/// the platform's roots): `https` to any host, plain `http` where the caller allows it (loopback).
/// Fails only when the platform has no root certificates.
pub fn https_client(connect_timeout: Duration) -> std::io::Result<Client<HttpsConnector<HttpConnector>, Empty<Bytes>>> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    // The TLS layer wraps this connector, so it must accept https URIs.
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// Whether keys may be fetched from `url`: `https` to any host, or `http` to a loopback host
/// (`127.0.0.1`, `localhost`, `[::1]`) only. Policy loading should check issuer URLs with this
/// too, so a bad one is a load error rather than a retry loop.
pub fn fetchable_url(url: &str) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") => Ok(()),
        Some("http") => Err(format!("{url:?} is plain http to a host that is not loopback")),
        _ => Err(format!("{url:?} is neither https nor loopback http")),
    }
}

#[cfg(test)]
mod tests {
    use super::fetchable_url;

    #[test]
    fn given_urls_when_checked_then_https_or_loopback_http_only() {
        for ok in [
            "https://token.actions.githubusercontent.com",
            "http://127.0.0.1:8080/jwks",
            "http://localhost",
            "http://[::1]:9/x",
        ] {
            assert!(fetchable_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com",
            "http://127.0.0.2",
            "ftp://x",
            "file:///etc/passwd",
            "",
            "https://",
            "/jwks",
        ] {
            assert!(fetchable_url(bad).is_err(), "{bad}");
        }
    }
}
