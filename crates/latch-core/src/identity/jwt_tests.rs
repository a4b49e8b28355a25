use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::*;
use crate::identity::testing::{TestSigner, jwks, shared};

const ISS: &str = "https://issuer.example";

fn claims() -> Value {
    json!({"iss": ISS, "sub": "repo:acme/app:ref:refs/heads/main", "aud": "latch", "jti": "j-1", "iat": 1, "exp": 2})
}

fn header(alg: &str, kid: &str) -> String {
    json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string()
}

fn set() -> JwkSet {
    let k = shared();
    JwkSet::from_value(&jwks(&[&k.rsa, &k.ec])).expect("key set")
}

fn replace_segment(token: &str, index: usize, with: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[index] = with;
    parts.join(".")
}

/// The same bytes with non-zero unused trailing bits: decodes leniently, not canonically.
fn non_canonical(segment: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_ne!(segment.len() % 4, 0, "needs a partial final group");
    let last = segment.as_bytes()[segment.len() - 1];
    let idx = ALPHABET.iter().position(|c| *c == last).expect("alphabet");
    let mut out = segment[..segment.len() - 1].to_owned();
    out.push(ALPHABET[idx | 1] as char);
    out
}

fn der_integer(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut body = if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        vec![0]
    } else {
        vec![]
    };
    body.extend(trimmed);
    let mut out = vec![0x02, body.len() as u8];
    out.extend(body);
    out
}

#[test]
fn given_a_signed_token_when_parsed_then_alg_kid_and_claims_are_read() {
    let token = shared().rsa.sign(&claims()).expect("sign");
    let t = parse(&token).expect("parse");
    assert_eq!(t.alg(), "RS256");
    assert_eq!(t.kid(), "rsa-1");
    assert_eq!(t.issuer(), Some(ISS));
    assert_eq!(
        t.claims().get("sub").and_then(Value::as_str),
        Some("repo:acme/app:ref:refs/heads/main")
    );
}

#[test]
fn given_a_token_over_the_size_cap_when_parsed_then_too_large_before_anything_else() {
    let token = "!".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(
        parse(&token).unwrap_err(),
        TokenError::TooLarge {
            size: MAX_TOKEN_BYTES + 1
        }
    );
}

#[test]
fn given_two_or_four_segments_when_parsed_then_malformed() {
    let token = shared().rsa.sign(&claims()).expect("sign");
    let (hp, _) = token.rsplit_once('.').expect("dots");
    assert!(matches!(parse(hp), Err(TokenError::Malformed(_))));
    assert!(matches!(parse(&format!("{token}.x")), Err(TokenError::Malformed(_))));
    assert!(matches!(parse(""), Err(TokenError::Malformed(_))));
    assert!(matches!(
        parse(&replace_segment(&token, 2, "")),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn given_padding_bad_characters_or_non_canonical_bits_when_parsed_then_malformed() {
    let k = shared();
    // 13 bytes of claims text: the segment ends in a partial group.
    let token = k
        .rsa
        .sign_parts(&header("RS256", "rsa-1"), r#"{"sub":"abc"}"#)
        .expect("sign");
    let claims_segment = token.split('.').nth(1).expect("claims").to_owned();
    let padded = format!("{claims_segment}{}", "=".repeat((4 - claims_segment.len() % 4) % 4));
    assert!(padded.ends_with('='));
    for bad in [
        padded,
        format!("{claims_segment}+"),
        claims_segment.replace('e', "/"),
        non_canonical(&claims_segment),
    ] {
        let hostile = replace_segment(&token, 1, &bad);
        assert!(
            matches!(parse(&hostile), Err(TokenError::Malformed(_))),
            "accepted {bad}"
        );
    }
    let signature = token.split('.').nth(2).expect("sig").to_owned();
    assert!(matches!(
        parse(&replace_segment(&token, 2, &non_canonical(&signature))),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn given_header_or_claims_that_are_not_json_objects_when_parsed_then_malformed() {
    let k = shared();
    for (h, c) in [
        ("[1]", "{}"),
        (&*header("RS256", "rsa-1"), "\"sub\""),
        (&*header("RS256", "rsa-1"), "{\"sub\":"),
        ("{}x", "{}"),
    ] {
        let token = k.rsa.sign_parts(h, c).expect("sign");
        assert!(
            matches!(parse(&token), Err(TokenError::Malformed(_))),
            "accepted {h} {c}"
        );
    }
}

#[test]
fn given_a_repeated_claim_when_parsed_then_duplicate_key_names_it() {
    let k = shared();
    let token = k
        .rsa
        .sign_parts(&header("RS256", "rsa-1"), r#"{"sub":"a","sub":"b"}"#)
        .expect("sign");
    assert_eq!(
        parse(&token).unwrap_err(),
        TokenError::DuplicateKey {
            part: "claims",
            key: "sub".into()
        }
    );
}

#[test]
fn given_a_key_repeated_through_an_escape_when_parsed_then_duplicate_key() {
    let k = shared();
    let token = k
        .rsa
        .sign_parts(&header("RS256", "rsa-1"), r#"{"sub":"a","s\u0075b":"b"}"#)
        .expect("sign");
    assert_eq!(
        parse(&token).unwrap_err(),
        TokenError::DuplicateKey {
            part: "claims",
            key: "sub".into()
        }
    );
}

#[test]
fn given_a_key_repeated_deep_inside_claims_when_parsed_then_duplicate_key() {
    let k = shared();
    let token = k
        .rsa
        .sign_parts(&header("RS256", "rsa-1"), r#"{"sub":"a","x":[{"y":{"z":1,"z":2}}]}"#)
        .expect("sign");
    assert_eq!(
        parse(&token).unwrap_err(),
        TokenError::DuplicateKey {
            part: "claims",
            key: "z".into()
        }
    );
}

#[test]
fn given_a_repeated_header_key_when_parsed_then_duplicate_key_in_header() {
    let k = shared();
    let token = k
        .rsa
        .sign_parts(r#"{"alg":"RS256","kid":"rsa-1","alg":"none"}"#, r#"{"sub":"a"}"#)
        .expect("sign");
    assert_eq!(
        parse(&token).unwrap_err(),
        TokenError::DuplicateKey {
            part: "header",
            key: "alg".into()
        }
    );
}

#[test]
fn given_a_header_naming_its_own_key_source_when_parsed_then_foreign_key_source() {
    let k = shared();
    for source in ["jku", "x5u", "jwk", "x5c"] {
        let mut h = json!({"alg": "RS256", "kid": "rsa-1"});
        h[source] = json!("https://evil.example/keys");
        let h = h.to_string();
        let token = k.rsa.sign_parts(&h, r#"{"sub":"a"}"#).expect("sign");
        assert_eq!(parse(&token).unwrap_err(), TokenError::ForeignKeySource(source));
    }
}

#[test]
fn given_a_crit_header_when_parsed_then_critical_header() {
    let k = shared();
    let h = json!({"alg": "RS256", "kid": "rsa-1", "crit": ["b64"], "b64": false}).to_string();
    let token = k.rsa.sign_parts(&h, r#"{"sub":"a"}"#).expect("sign");
    assert_eq!(parse(&token).unwrap_err(), TokenError::CriticalHeader("b64".into()));
}

#[test]
fn given_a_missing_or_mistyped_alg_or_kid_when_parsed_then_malformed() {
    let k = shared();
    for h in [
        r#"{"kid":"rsa-1"}"#,
        r#"{"alg":1,"kid":"rsa-1"}"#,
        r#"{"alg":"RS256"}"#,
        r#"{"alg":"RS256","kid":7}"#,
        r#"{"alg":"RS256","kid":""}"#,
    ] {
        let token = k.rsa.sign_parts(h, r#"{"sub":"a"}"#).expect("sign");
        assert!(matches!(parse(&token), Err(TokenError::Malformed(_))), "accepted {h}");
    }
}

#[test]
fn given_typ_when_parsed_then_only_jwt_in_any_case_is_accepted() {
    let k = shared();
    for (typ, ok) in [("JWT", true), ("jwt", true), ("at+jwt", false), ("JWS", false)] {
        let h = json!({"alg": "RS256", "kid": "rsa-1", "typ": typ}).to_string();
        let token = k.rsa.sign_parts(&h, r#"{"sub":"a"}"#).expect("sign");
        assert_eq!(parse(&token).is_ok(), ok, "typ {typ}");
    }
    let token = k
        .rsa
        .sign_parts(r#"{"alg":"RS256","kid":"rsa-1","typ":1}"#, r#"{"sub":"a"}"#)
        .expect("sign");
    assert!(matches!(parse(&token), Err(TokenError::Malformed(_))));
}

#[test]
fn given_rs256_and_es256_tokens_when_verified_with_their_keys_then_ok() {
    let k = shared();
    let keys = set();
    let rs = parse(&k.rsa.sign(&claims()).expect("sign")).expect("parse");
    rs.verify_signature(keys.get("rsa-1").expect("rsa"), TokenAlgorithm::Rs256)
        .expect("rs256 verifies");
    let es = parse(&k.ec.sign(&claims()).expect("sign")).expect("parse");
    es.verify_signature(keys.get("ec-1").expect("ec"), TokenAlgorithm::Es256)
        .expect("es256 verifies");
}

#[test]
fn given_a_bit_flipped_or_truncated_signature_when_verified_then_bad_signature() {
    let k = shared();
    let keys = set();
    for (signer, alg) in [(&k.rsa, TokenAlgorithm::Rs256), (&k.ec, TokenAlgorithm::Es256)] {
        let token = signer.sign(&claims()).expect("sign");
        let (input, _) = token.rsplit_once('.').expect("dots");
        let mut sig = signer.sign_bytes(input.as_bytes()).expect("sig");
        sig[10] ^= 0x01;
        let flipped = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
        let truncated = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig[..sig.len() - 3]));
        for hostile in [flipped, truncated] {
            let t = parse(&hostile).expect("parses");
            assert_eq!(
                t.verify_signature(keys.get(signer.kid()).expect("key"), alg),
                Err(TokenError::BadSignature)
            );
        }
    }
}

#[test]
fn given_claims_changed_after_signing_when_verified_then_bad_signature() {
    let k = shared();
    let token = k.rsa.sign(&claims()).expect("sign");
    let mut forged = claims();
    forged["sub"] = json!("repo:evil/app:ref:refs/heads/main");
    let hostile = replace_segment(&token, 1, &URL_SAFE_NO_PAD.encode(forged.to_string()));
    let t = parse(&hostile).expect("parses");
    assert_eq!(
        t.verify_signature(set().get("rsa-1").expect("key"), TokenAlgorithm::Rs256),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn given_a_token_signed_by_another_key_with_the_same_kid_when_verified_then_bad_signature() {
    let k = shared();
    let t = parse(&k.impostor.sign(&claims()).expect("sign")).expect("parse");
    assert_eq!(
        t.verify_signature(set().get("rsa-1").expect("key"), TokenAlgorithm::Rs256),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn given_a_key_of_the_wrong_type_for_the_alg_when_verified_then_bad_signature() {
    let k = shared();
    let keys = set();
    let rs = parse(&k.rsa.sign(&claims()).expect("sign")).expect("parse");
    assert_eq!(
        rs.verify_signature(keys.get("ec-1").expect("ec"), TokenAlgorithm::Rs256),
        Err(TokenError::BadSignature)
    );
    // Header says ES256 but the caller asks for RS256: never verified under another alg.
    let es = parse(&k.ec.sign(&claims()).expect("sign")).expect("parse");
    assert_eq!(
        es.verify_signature(keys.get("rsa-1").expect("rsa"), TokenAlgorithm::Rs256),
        Err(TokenError::BadSignature)
    );
    assert_eq!(
        es.verify_signature(keys.get("rsa-1").expect("rsa"), TokenAlgorithm::Es256),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn given_a_key_whose_own_alg_differs_when_verified_then_bad_signature() {
    let k = shared();
    let mut jwk = k.rsa.public_jwk();
    jwk["alg"] = json!("ES256");
    let keys = JwkSet::from_value(&json!({"keys": [jwk]})).expect("set");
    let rs = parse(&k.rsa.sign(&claims()).expect("sign")).expect("parse");
    assert_eq!(
        rs.verify_signature(keys.get("rsa-1").expect("rsa"), TokenAlgorithm::Rs256),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn given_an_es256_signature_in_der_form_when_verified_then_bad_signature() {
    let k = shared();
    let token = k.ec.sign(&claims()).expect("sign");
    let (input, _) = token.rsplit_once('.').expect("dots");
    let raw = k.ec.sign_bytes(input.as_bytes()).expect("sig");
    let mut body = der_integer(&raw[..32]);
    body.extend(der_integer(&raw[32..]));
    let mut der = vec![0x30, body.len() as u8];
    der.extend(body);
    let t = parse(&format!("{input}.{}", URL_SAFE_NO_PAD.encode(&der))).expect("parses");
    assert_eq!(
        t.verify_signature(set().get("ec-1").expect("ec"), TokenAlgorithm::Es256),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn given_a_real_world_jwks_when_loaded_then_only_signing_keys_for_rs256_and_es256_are_kept() {
    let k = shared();
    let mut enc = k.rsa.public_jwk();
    enc["kid"] = json!("enc-1");
    enc["use"] = json!("enc");
    let mut rs384 = k.rsa.public_jwk();
    rs384["kid"] = json!("rs384");
    rs384["alg"] = json!("RS384");
    let mut no_kid = k.rsa.public_jwk();
    no_kid.as_object_mut().expect("object").remove("kid");
    let mut no_verify = k.ec.public_jwk();
    no_verify["kid"] = json!("wrap-only");
    no_verify["key_ops"] = json!(["wrapKey"]);
    let value = json!({"keys": [
        k.rsa.public_jwk(), k.ec.public_jwk(), enc, rs384, no_kid, no_verify,
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
    ]});
    let keys = JwkSet::from_value(&value).expect("loads");
    assert_eq!(keys.kids().collect::<Vec<_>>(), ["rsa-1", "ec-1"]);
    assert_eq!(keys.len(), 2);
    assert!(!keys.is_empty());
    assert_eq!(keys.get("ec-1").map(Jwk::kind), Some(KeyKind::EcP256));
    assert_eq!(keys.get("rsa-1").and_then(Jwk::alg), Some(TokenAlgorithm::Rs256));
    assert!(keys.get("enc-1").is_none());
}

#[test]
fn given_a_malformed_jwks_when_loaded_then_refused() {
    let k = shared();
    let mut bad_n = k.rsa.public_jwk();
    bad_n["n"] = json!("not base64!");
    let mut short_x = k.ec.public_jwk();
    short_x["x"] = json!("AAAA");
    let mut no_e = k.rsa.public_jwk();
    no_e.as_object_mut().expect("object").remove("e");
    let mut numeric_kid = k.rsa.public_jwk();
    numeric_kid["kid"] = json!(1);
    for bad in [
        json!([]),
        json!({}),
        json!({"keys": {}}),
        json!({"keys": [1]}),
        json!({"keys": [{"kid": "x"}]}),
        json!({"keys": [bad_n]}),
        json!({"keys": [short_x]}),
        json!({"keys": [no_e]}),
        json!({"keys": [numeric_kid]}),
        json!({"keys": [k.rsa.public_jwk(), k.impostor.public_jwk()]}),
    ] {
        assert!(JwkSet::from_value(&bad).is_err(), "loaded {bad}");
    }
}

#[test]
fn given_jwks_bytes_when_parsed_then_json_errors_and_repeated_keys_are_refused() {
    let k = shared();
    let good = jwks(&[&k.rsa]).to_string();
    assert_eq!(JwkSet::parse(good.as_bytes()).expect("parses").len(), 1);
    assert!(JwkSet::parse(b"{\"keys\":[").is_err());
    assert!(JwkSet::parse(b"{\"keys\":[]} trailing").is_err());
    let repeated = good.replacen("\"kty\":\"RSA\"", "\"kty\":\"RSA\",\"kty\":\"oct\"", 1);
    assert_ne!(repeated, good);
    let err = JwkSet::parse(repeated.as_bytes()).unwrap_err();
    assert!(err.0.contains("kty"), "{err}");
}

#[test]
fn given_a_short_rsa_key_when_loaded_then_skipped() {
    let mut small = shared().rsa.public_jwk();
    small["n"] = json!(URL_SAFE_NO_PAD.encode([0xff_u8; 128]));
    assert!(JwkSet::from_value(&json!({"keys": [small]})).expect("loads").is_empty());
}

#[test]
fn given_a_fresh_signer_when_its_key_is_loaded_then_it_verifies_its_own_tokens() {
    let signer = TestSigner::generate(TokenAlgorithm::Es256, "fresh").expect("key");
    let keys = JwkSet::from_value(&jwks(&[&signer])).expect("set");
    let t = parse(&signer.sign(&claims()).expect("sign")).expect("parse");
    t.verify_signature(keys.get("fresh").expect("key"), TokenAlgorithm::Es256)
        .expect("verifies");
}
