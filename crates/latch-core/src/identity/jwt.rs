//! Strict compact-JWS parsing and signature checks (trust model v2; invariants I6, I7).
//!
//! Contract:
//! - [`parse`] looks at no token over [`MAX_TOKEN_BYTES`]; it takes exactly three segments of
//!   unpadded, canonical base64url; header and claims must be JSON objects with no key repeated at
//!   any depth (serde_json would silently keep the last `sub`, and a second parser in the chain
//!   might keep the first: the two would then disagree on who signed). A header that names its own
//!   key source (`jku`, `x5u`, `jwk`, `x5c`) or carries `crit` is refused: keys come only from the
//!   issuer, and extensions Latch does not understand must not be ignored. `alg` and `kid` are
//!   required strings; `typ`, if present, is `JWT`.
//! - [`UnverifiedToken::verify_signature`] checks the signature with `jsonwebtoken`'s aws-lc-rs
//!   verifier (no hand-written crypto), only when the key's type fits the algorithm and the key's
//!   own `alg`, if any, is that algorithm. ES256 signatures are the 64-byte JOSE `r||s` form.
//! - [`JwkSet`] keeps the keys of an issuer's JWKS usable for RS256 (RSA) or ES256 (EC P-256) and
//!   skips the others, so a real issuer's key set with encryption or other-curve keys still loads.
//!
//! Nothing here looks at the clock, the issuer or the audience: that is [`super::verify`].

use std::cell::RefCell;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{MAX_TOKEN_BYTES, TokenAlgorithm, TokenError};

/// The longest `kid` looked at (real ones are a few dozen characters).
const MAX_KID_CHARS: usize = 256;

/// What kind of public key a [`Jwk`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `kty: RSA`: verifies RS256.
    Rsa,
    /// `kty: EC`, `crv: P-256`: verifies ES256.
    EcP256,
}

/// One verification key from an issuer's JWKS.
#[derive(Clone)]
pub struct Jwk {
    kid: String,
    kind: KeyKind,
    alg: Option<TokenAlgorithm>,
    key: DecodingKey,
}

impl Jwk {
    pub fn kid(&self) -> &str {
        &self.kid
    }
    pub fn kind(&self) -> KeyKind {
        self.kind
    }
    /// The key's own `alg`, when its JWK names one.
    pub fn alg(&self) -> Option<TokenAlgorithm> {
        self.alg
    }
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish()
    }
}

/// An issuer's verification keys, validated on parse.
#[derive(Debug, Clone, Default)]
pub struct JwkSet {
    keys: Vec<Jwk>,
}

/// Why a key set could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyParseError(pub String);

impl JwkSet {
    /// A JWKS document as served by an issuer (`{"keys":[...]}`), from its bytes. Keys repeated
    /// inside a JSON object are refused, as in tokens.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeyParseError> {
        let v = strict_json(bytes).map_err(|e| match e {
            StrictError::Duplicate(k) => KeyParseError(format!("key set repeats the JSON key `{k}`")),
            StrictError::Json(m) => KeyParseError(format!("key set is not JSON: {m}")),
        })?;
        Self::from_value(&v)
    }

    /// A JWKS already parsed (pinned keys in the policy file).
    ///
    /// Kept: `kty: RSA` and `kty: EC` with `crv: P-256`, with a `kid`, whose `use` (if present) is
    /// `sig`, whose `key_ops` (if present) include `verify`, whose `alg` (if present) is RS256 or
    /// ES256. Skipped: every other key. Refused (error): a set that is not `{"keys":[objects]}`,
    /// a kept key whose members are missing, mistyped or not canonical base64url, two kept keys
    /// with one `kid`.
    pub fn from_value(v: &Value) -> Result<Self, KeyParseError> {
        let keys = v
            .as_object()
            .and_then(|o| o.get("keys"))
            .and_then(Value::as_array)
            .ok_or_else(|| KeyParseError("a key set is a JSON object with a `keys` array".into()))?;
        let mut out: Vec<Jwk> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(jwk) = parse_jwk(i, k)? {
                if out.iter().any(|o| o.kid == jwk.kid) {
                    return Err(KeyParseError(format!("key set has two keys with kid {:?}", jwk.kid)));
                }
                out.push(jwk);
            }
        }
        Ok(Self { keys: out })
    }

    pub fn get(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid == kid)
    }
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    /// The kids of the kept keys, in the set's order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }
}

fn parse_jwk(i: usize, v: &Value) -> Result<Option<Jwk>, KeyParseError> {
    let o = v
        .as_object()
        .ok_or_else(|| KeyParseError(format!("key {i} is not a JSON object")))?;
    let string = |name: &str| -> Result<Option<&str>, KeyParseError> {
        match o.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(KeyParseError(format!("key {i}: `{name}` is not a string"))),
        }
    };
    let required = |name: &str| -> Result<&str, KeyParseError> {
        string(name)?.ok_or_else(|| KeyParseError(format!("key {i}: `{name}` is missing")))
    };
    let kty = required("kty")?;
    // An encryption key must never verify a signature (RFC 7517 §4.2): not loaded.
    if string("use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = o.get("key_ops") {
        let ops = ops
            .as_array()
            .filter(|a| a.iter().all(Value::is_string))
            .ok_or_else(|| KeyParseError(format!("key {i}: `key_ops` is not an array of strings")))?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Ok(None);
        }
    }
    // Tokens must name their key, so a key without a kid could never be chosen.
    let Some(kid) = string("kid")? else { return Ok(None) };
    if kid.is_empty() || kid.chars().count() > MAX_KID_CHARS {
        return Ok(None);
    }
    let alg = match string("alg")? {
        None => None,
        Some("RS256") => Some(TokenAlgorithm::Rs256),
        Some("ES256") => Some(TokenAlgorithm::Es256),
        Some(_) => return Ok(None),
    };
    let b64 = |name: &str| -> Result<Vec<u8>, KeyParseError> {
        URL_SAFE_NO_PAD
            .decode(required(name)?)
            .map_err(|_| KeyParseError(format!("key {i} ({kid}): `{name}` is not unpadded base64url")))
    };
    let (kind, key) = match kty {
        "RSA" => {
            let n = b64("n")?;
            let e = b64("e")?;
            let bits = significant_bits(&n);
            // aws-lc-rs verifies RS256 with 2048- to 8192-bit moduli: anything else cannot verify.
            if !(2048..=8192).contains(&bits) || significant_bits(&e) == 0 {
                return Ok(None);
            }
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            if required("crv")? != "P-256" {
                return Ok(None);
            }
            let x = b64("x")?;
            let y = b64("y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err(KeyParseError(format!(
                    "key {i} ({kid}): P-256 `x` and `y` are 32 bytes each"
                )));
            }
            // The uncompressed SEC1 point aws-lc-rs takes; a point off the curve fails verification.
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (KeyKind::EcP256, DecodingKey::from_ec_der(&point))
        }
        _ => return Ok(None),
    };
    Ok(Some(Jwk {
        kid: kid.to_owned(),
        kind,
        alg,
        key,
    }))
}

fn significant_bits(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        None => 0,
        Some(first) => (be.len() - first - 1) * 8 + (8 - be[first].leading_zeros() as usize),
    }
}

/// A token whose structure has been checked and whose signature has not.
#[derive(Clone)]
pub struct UnverifiedToken {
    alg: String,
    kid: String,
    header: Map<String, Value>,
    claims: Map<String, Value>,
    /// `header.payload` exactly as received: what the signature covers.
    signing_input: String,
    /// The signature segment, canonical base64url (checked by decoding it).
    signature_b64: String,
    signature_len: usize,
}

impl fmt::Debug for UnverifiedToken {
    // Never the claims or the signature: a token is not logged (see the module doc of `identity`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnverifiedToken")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl UnverifiedToken {
    /// The header's `alg`, as written (not yet checked against any issuer).
    pub fn alg(&self) -> &str {
        &self.alg
    }
    pub fn kid(&self) -> &str {
        &self.kid
    }
    pub fn header(&self) -> &Map<String, Value> {
        &self.header
    }
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }
    /// The unverified `iss`, to choose the issuer whose keys may verify the token.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// Whether `key` signed this token with `alg`. Any mismatch is [`TokenError::BadSignature`]:
    /// the header's `alg` is not `alg`, the key's type does not fit `alg` (an RSA key never
    /// verifies ES256 nor the reverse), the key's own `alg` is another, an ES256 signature is not
    /// 64 bytes (DER-encoded signatures are refused), or the signature does not verify.
    pub fn verify_signature(&self, key: &Jwk, alg: TokenAlgorithm) -> Result<(), TokenError> {
        let fits = matches!(
            (key.kind, alg),
            (KeyKind::Rsa, TokenAlgorithm::Rs256) | (KeyKind::EcP256, TokenAlgorithm::Es256)
        );
        if !fits || self.alg != alg.as_str() || key.alg.is_some_and(|a| a != alg) {
            return Err(TokenError::BadSignature);
        }
        if alg == TokenAlgorithm::Es256 && self.signature_len != 64 {
            return Err(TokenError::BadSignature);
        }
        let algorithm = match alg {
            TokenAlgorithm::Rs256 => Algorithm::RS256,
            TokenAlgorithm::Es256 => Algorithm::ES256,
        };
        // The aws-lc-rs provider named, not the process default: no global to be set first, and no
        // way for another crate's feature choice to swap the verifier.
        let verifier =
            (DEFAULT_PROVIDER.verifier_factory)(&algorithm, &key.key).map_err(|_| TokenError::BadSignature)?;
        let signature = URL_SAFE_NO_PAD
            .decode(&self.signature_b64)
            .map_err(|_| TokenError::BadSignature)?;
        verifier
            .verify(self.signing_input.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)
    }
}

/// Parses a compact JWS strictly (see the module contract). Nothing is verified yet.
pub fn parse(token: &str) -> Result<UnverifiedToken, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge { size: token.len() });
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed(
            "a token is three base64url segments separated by `.`".into(),
        ));
    };
    let header_bytes = segment(h, "header")?;
    let claims_bytes = segment(p, "claims")?;
    let signature = segment(s, "signature")?;
    let header = json_object(&header_bytes, "header")?;
    let claims = json_object(&claims_bytes, "claims")?;

    for source in ["jku", "x5u", "jwk", "x5c"] {
        if header.contains_key(source) {
            return Err(TokenError::ForeignKeySource(source));
        }
    }
    if let Some(crit) = header.get("crit") {
        let named = match crit {
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(", "),
            _ => "crit".into(),
        };
        return Err(TokenError::CriticalHeader(named));
    }
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err(TokenError::Malformed("header `alg` is missing or not a string".into())),
    };
    let kid = match header.get("kid") {
        Some(Value::String(k)) if !k.is_empty() && k.chars().count() <= MAX_KID_CHARS => k.clone(),
        _ => {
            return Err(TokenError::Malformed(
                "header `kid` is missing, empty, too long or not a string".into(),
            ));
        }
    };
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("JWT") => {}
        Some(_) => return Err(TokenError::Malformed("header `typ` is not JWT".into())),
    }
    Ok(UnverifiedToken {
        alg,
        kid,
        header,
        claims,
        signing_input: format!("{h}.{p}"),
        signature_b64: s.to_owned(),
        signature_len: signature.len(),
    })
}

/// Unpadded, canonical base64url: the engine refuses `=`, characters outside the URL-safe
/// alphabet and non-zero trailing bits, so one token has exactly one encoding.
fn segment(text: &str, part: &'static str) -> Result<Vec<u8>, TokenError> {
    if text.is_empty() {
        return Err(TokenError::Malformed(format!("{part} segment is empty")));
    }
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| TokenError::Malformed(format!("{part} segment is not unpadded canonical base64url")))
}

fn json_object(bytes: &[u8], part: &'static str) -> Result<Map<String, Value>, TokenError> {
    match strict_json(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(TokenError::Malformed(format!("{part} is not a JSON object"))),
        Err(StrictError::Duplicate(key)) => Err(TokenError::DuplicateKey { part, key }),
        Err(StrictError::Json(m)) => Err(TokenError::Malformed(format!("{part} is not JSON: {m}"))),
    }
}

#[derive(Debug)]
enum StrictError {
    Duplicate(String),
    Json(String),
}

/// JSON to a [`Value`], refusing any object that repeats a key, at any depth.
fn strict_json(bytes: &[u8]) -> Result<Value, StrictError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = StrictSeed { duplicate: &duplicate }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match result {
        Ok(v) => Ok(v),
        Err(e) => match duplicate.into_inner() {
            Some(key) => Err(StrictError::Duplicate(key)),
            None => Err(StrictError::Json(e.to_string())),
        },
    }
}

/// Builds a [`Value`] like serde_json's own, but records the first repeated key and stops.
#[derive(Clone, Copy)]
struct StrictSeed<'a> {
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let message = format!("repeated key `{key}`");
                *self.duplicate.borrow_mut() = Some(key);
                return Err(de::Error::custom(message));
            }
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
