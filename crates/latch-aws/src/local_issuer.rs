//! A local OIDC issuer on loopback for tests, `latch dev` and `latch demo` (feature `local`;
//! never in a Lambda build).
//!
//! Contract: [`LocalIssuer::start`] binds `127.0.0.1` (any free port), makes an RSA-2048 key
//! (RS256) and a P-256 key (ES256) with distinct kids, and serves
//! `/.well-known/openid-configuration` (`issuer`, `jwks_uri`) and `/jwks` over plain HTTP, which
//! [`crate::jwks::HttpKeySource`] accepts for loopback only. [`LocalIssuer::mint`] issues tokens
//! the way a CI would; [`LocalIssuer::mint_with`] takes raw claims text for hostile cases.
//! [`LocalIssuer::rotate`] replaces both keys (old kids leave the JWKS), [`LocalIssuer::set_down`]
//! makes every answer a 503 and [`LocalIssuer::set_delay`] holds every answer back, to exercise
//! key-fetch failures. For "another issuer's key", start a second issuer.
//!
//! The server stops when the [`LocalIssuer`] is dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use latch_core::identity::TokenAlgorithm;
use latch_core::identity::testing::{TestSigner, jwks};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Which of the issuer's current keys signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    /// The RSA key (RS256).
    Rsa,
    /// The P-256 key (ES256).
    Ec,
}

/// Why the local issuer could not start or sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("local issuer: {0}")]
pub struct LocalIssuerError(pub String);

struct Keys {
    generation: u32,
    rsa: Arc<TestSigner>,
    ec: Arc<TestSigner>,
}

impl Keys {
    fn generate(generation: u32) -> Result<Self, LocalIssuerError> {
        let make = |alg, kid: String| TestSigner::generate(alg, &kid).map(Arc::new).map_err(LocalIssuerError);
        Ok(Self {
            generation,
            rsa: make(TokenAlgorithm::Rs256, format!("local-rsa-{generation}"))?,
            ec: make(TokenAlgorithm::Es256, format!("local-ec-{generation}"))?,
        })
    }
}

struct Shared {
    url: String,
    keys: Mutex<Keys>,
    down: AtomicBool,
    delay_ms: AtomicU64,
    jwks_requests: AtomicU64,
    discovery_requests: AtomicU64,
    minted: AtomicU64,
}

impl Shared {
    fn keys(&self) -> std::sync::MutexGuard<'_, Keys> {
        // Poisoning only means a test thread panicked while holding the lock; the keys are whole.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn respond(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.down.load(Ordering::Relaxed) {
            return reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "down"}));
        }
        match request.uri().path() {
            "/.well-known/openid-configuration" => {
                self.discovery_requests.fetch_add(1, Ordering::Relaxed);
                reply(
                    StatusCode::OK,
                    json!({
                        "issuer": self.url,
                        "jwks_uri": format!("{}/jwks", self.url),
                        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                        "response_types_supported": ["id_token"],
                        "subject_types_supported": ["public"],
                    }),
                )
            }
            "/jwks" => {
                self.jwks_requests.fetch_add(1, Ordering::Relaxed);
                let keys = self.keys();
                reply(StatusCode::OK, jwks(&[&keys.rsa, &keys.ec]))
            }
            _ => reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
        }
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A running local OIDC issuer (see the module contract).
pub struct LocalIssuer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIssuer")
            .field("url", &self.shared.url)
            .finish_non_exhaustive()
    }
}

impl Drop for LocalIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl LocalIssuer {
    /// On `127.0.0.1`, any free port.
    pub async fn start() -> Result<Self, LocalIssuerError> {
        Self::start_at(0).await
    }

    /// On `127.0.0.1:port` (`latch dev` uses a fixed port so clients can be told the URL).
    pub async fn start_at(port: u16) -> Result<Self, LocalIssuerError> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| LocalIssuerError(format!("cannot bind 127.0.0.1:{port}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| LocalIssuerError(format!("no local address: {e}")))?;
        // RSA key generation is slow in debug builds: off the async workers.
        let keys = tokio::task::spawn_blocking(|| Keys::generate(1))
            .await
            .map_err(|e| LocalIssuerError(format!("key generation: {e}")))??;
        let shared = Arc::new(Shared {
            url: format!("http://{addr}"),
            keys: Mutex::new(keys),
            down: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            jwks_requests: AtomicU64::new(0),
            discovery_requests: AtomicU64::new(0),
            minted: AtomicU64::new(0),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        Ok(Self { shared, addr, server })
    }

    /// The issuer URL: the `iss` of its tokens and the base of discovery.
    pub fn url(&self) -> &str {
        &self.shared.url
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The kid of the current key of `which`.
    pub fn kid(&self, which: SigningKey) -> String {
        let keys = self.shared.keys();
        match which {
            SigningKey::Rsa => keys.rsa.kid().to_owned(),
            SigningKey::Ec => keys.ec.kid().to_owned(),
        }
    }

    /// `/jwks` requests answered so far (503s not counted).
    pub fn jwks_requests(&self) -> u64 {
        self.shared.jwks_requests.load(Ordering::Relaxed)
    }
    pub fn discovery_requests(&self) -> u64 {
        self.shared.discovery_requests.load(Ordering::Relaxed)
    }

    /// The current public keys, for configurations that pin them.
    pub fn public_jwks(&self) -> Value {
        let keys = self.shared.keys();
        jwks(&[&keys.rsa, &keys.ec])
    }

    /// An RS256 token with the current RSA key over `claims`, with `iss` (this issuer), `iat`
    /// (now), `exp` (now + 5 min) and `jti` (unique) filled in unless `claims` has them.
    pub fn mint(&self, claims: Value) -> Result<String, LocalIssuerError> {
        let Value::Object(mut claims) = claims else {
            return Err(LocalIssuerError("claims must be a JSON object".into()));
        };
        let now = chrono::Utc::now().timestamp();
        let n = self.shared.minted.fetch_add(1, Ordering::Relaxed);
        claims.entry("iss").or_insert_with(|| json!(self.shared.url));
        claims.entry("iat").or_insert_with(|| json!(now));
        claims.entry("exp").or_insert_with(|| json!(now + 300));
        claims
            .entry("jti")
            .or_insert_with(|| json!(format!("local-{}-{now}-{n}", self.addr.port())));
        let signer = self.shared.keys().rsa.clone();
        signer.sign(&Value::Object(claims)).map_err(LocalIssuerError)
    }

    /// A token whose header is `header` and whose claims are `claims_json` as written (no
    /// defaults, repeated keys kept), signed with the current `key` whatever the header says.
    pub fn mint_with(&self, header: &Value, claims_json: &str, key: SigningKey) -> Result<String, LocalIssuerError> {
        let signer = {
            let keys = self.shared.keys();
            match key {
                SigningKey::Rsa => keys.rsa.clone(),
                SigningKey::Ec => keys.ec.clone(),
            }
        };
        signer
            .sign_parts(&header.to_string(), claims_json)
            .map_err(LocalIssuerError)
    }

    /// The header a real issuer would write for `key`: `alg`, `typ: JWT`, the current kid.
    pub fn header(&self, key: SigningKey) -> Value {
        let alg = match key {
            SigningKey::Rsa => "RS256",
            SigningKey::Ec => "ES256",
        };
        json!({"alg": alg, "typ": "JWT", "kid": self.kid(key)})
    }

    /// New keys with new kids; the old ones leave the JWKS (tokens they signed stop verifying
    /// once a verifier refreshes).
    pub async fn rotate(&self) -> Result<(), LocalIssuerError> {
        let next = self.shared.keys().generation + 1;
        let keys = tokio::task::spawn_blocking(move || Keys::generate(next))
            .await
            .map_err(|e| LocalIssuerError(format!("key generation: {e}")))??;
        *self.shared.keys() = keys;
        Ok(())
    }

    /// While down, every request is answered 503.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::Relaxed);
    }

    /// Every answer is held back this long (a slow issuer).
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "local issuer: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(shared.respond(request).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "local issuer: connection ended");
            }
        });
    }
}
