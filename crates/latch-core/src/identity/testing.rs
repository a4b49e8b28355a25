//! A token signer with keys generated at run time, for tests and the local OIDC issuer of
//! `latch dev` (feature `test-support`; never in a Lambda build).
//!
//! Keys are made with aws-lc-rs (RSA-2048 for RS256, P-256 for ES256) and tokens are signed with
//! `jsonwebtoken`'s aws-lc-rs signer: no hand-written crypto. [`TestSigner::sign_parts`] takes the
//! header and claims as raw JSON text, so hostile tokens (repeated keys, odd headers, a header
//! `alg` that is not the key's) can be made on purpose.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use super::TokenAlgorithm;

/// A private key with its kid, able to sign tokens and to show its public JWK.
pub struct TestSigner {
    kid: String,
    alg: TokenAlgorithm,
    key: EncodingKey,
    public_jwk: Value,
}

impl std::fmt::Debug for TestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSigner")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl TestSigner {
    /// A fresh key for `alg` (RSA-2048 or P-256) named `kid`.
    pub fn generate(alg: TokenAlgorithm, kid: &str) -> Result<Self, String> {
        let (key, public_jwk) = match alg {
            TokenAlgorithm::Rs256 => {
                let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| format!("RSA key generation: {e}"))?;
                let pkcs8 = pair.as_der().map_err(|e| format!("RSA key export: {e}"))?;
                // jsonwebtoken's RSA signer takes PKCS#1; aws-lc-rs exports PKCS#8, which wraps it.
                let pkcs1 = pkcs8_inner_key(pkcs8.as_ref()).ok_or("RSA PKCS#8 export is not the expected DER")?;
                let (n, e) = (DEFAULT_PROVIDER.key_utils.rsa_pub_components_from_private_key)(pkcs1)
                    .map_err(|e| format!("RSA public key: {e}"))?;
                let jwk = json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                    "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e)});
                (EncodingKey::from_rsa_der(pkcs1), jwk)
            }
            TokenAlgorithm::Es256 => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                    .map_err(|e| format!("P-256 key generation: {e}"))?;
                let (_, x, y) =
                    (DEFAULT_PROVIDER.key_utils.ec_pub_components_from_private_key)(doc.as_ref(), Algorithm::ES256)
                        .map_err(|e| format!("P-256 public key: {e}"))?;
                let jwk = json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                    "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
                (EncodingKey::from_ec_der(doc.as_ref()), jwk)
            }
        };
        Ok(Self {
            kid: kid.to_owned(),
            alg,
            key,
            public_jwk,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }
    pub fn alg(&self) -> TokenAlgorithm {
        self.alg
    }
    /// The public key as a JWK (with `kid`, `use: sig`, `alg`).
    pub fn public_jwk(&self) -> Value {
        self.public_jwk.clone()
    }

    /// `{"alg":<this key's alg>,"typ":"JWT","kid":<kid>}` over `claims`, signed.
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let header = json!({"alg": self.alg.as_str(), "typ": "JWT", "kid": self.kid});
        self.sign_parts(&header.to_string(), &claims.to_string())
    }

    /// Header and claims as raw JSON text, encoded as they are and signed with this key's
    /// algorithm whatever the header says.
    pub fn sign_parts(&self, header_json: &str, claims_json: &str) -> Result<String, String> {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header_json),
            URL_SAFE_NO_PAD.encode(claims_json)
        );
        let signature = self.sign_bytes(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// The raw signature of `message` (for tests that re-encode it, e.g. as DER).
    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let algorithm = match self.alg {
            TokenAlgorithm::Rs256 => Algorithm::RS256,
            TokenAlgorithm::Es256 => Algorithm::ES256,
        };
        let signer = (DEFAULT_PROVIDER.signer_factory)(&algorithm, &self.key).map_err(|e| format!("signer: {e}"))?;
        signer.try_sign(message).map_err(|e| format!("signing: {e}"))
    }
}

/// `{"keys":[...]}` of the signers' public keys.
pub fn jwks(signers: &[&TestSigner]) -> Value {
    json!({"keys": signers.iter().map(|s| s.public_jwk()).collect::<Vec<_>>()})
}

/// The `privateKey` OCTET STRING content of a PKCS#8 `PrivateKeyInfo`
/// (`SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey, ... }`).
fn pkcs8_inner_key(der: &[u8]) -> Option<&[u8]> {
    let (tag, body, _) = der_item(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _, rest) = der_item(body)?;
    if tag != 0x02 {
        return None;
    }
    let (tag, _, rest) = der_item(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, key, _) = der_item(rest)?;
    (tag == 0x04).then_some(key)
}

/// One DER item: (tag, contents, what follows).
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        (bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), 2 + n)
    };
    let contents = input.get(header..header.checked_add(len)?)?;
    Some((tag, contents, &input[header + len..]))
}

/// Keys made once per test binary (RSA key generation takes a while in a debug build).
#[cfg(test)]
pub(crate) struct SharedSigners {
    pub rsa: TestSigner,
    pub ec: TestSigner,
    /// Another RSA key that publishes the kid of `rsa`: "someone else's key".
    pub impostor: TestSigner,
}

#[cfg(test)]
pub(crate) fn shared() -> &'static SharedSigners {
    static KEYS: std::sync::OnceLock<SharedSigners> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| SharedSigners {
        rsa: TestSigner::generate(TokenAlgorithm::Rs256, "rsa-1").expect("rsa key"),
        ec: TestSigner::generate(TokenAlgorithm::Es256, "ec-1").expect("ec key"),
        impostor: TestSigner::generate(TokenAlgorithm::Rs256, "rsa-1").expect("impostor key"),
    })
}
