//! NATS JWTs, as nats-server reads and writes them for auth callout: header
//! `{"typ":"JWT","alg":"ed25519-nkey"}`, claims JSON, both base64url without padding, and an
//! ed25519 signature by the issuer's nkey over `header.claims` (base64url, no padding).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use blake2::{Blake2b, Digest};
use nkeys::KeyPair;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JwtError {
    #[error("not a JWT (expected three base64url parts)")]
    Shape,
    #[error("JWT {0} is not base64url JSON")]
    Encoding(&'static str),
    #[error("JWT header is {0}, not an ed25519-nkey JWT")]
    Header(String),
    #[error("JWT issuer {0:?} is not a public nkey")]
    Issuer(String),
    #[error("JWT signature does not verify under its issuer {0}")]
    Signature(String),
    #[error("cannot sign JWT: {0}")]
    Sign(String),
}

const ALG: &str = "ed25519-nkey";

/// Sign `claims` (an object) as `signer`: sets `iss` to the signer's public key, `iat` to now
/// and `jti` to a digest of the claims.
pub fn encode(mut claims: Value, signer: &KeyPair) -> Result<String, JwtError> {
    let obj = claims
        .as_object_mut()
        .ok_or_else(|| JwtError::Sign("claims are not an object".into()))?;
    obj.insert("iss".into(), json!(signer.public_key()));
    obj.insert("iat".into(), json!(unix_now()));
    obj.remove("jti");
    let body = serde_json::to_vec(&claims).map_err(|e| JwtError::Sign(e.to_string()))?;
    let jti = hex::encode_upper(Blake2b::<blake2::digest::consts::U32>::digest(&body));
    claims["jti"] = json!(jti);
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).map_err(|e| JwtError::Sign(e.to_string()))?);
    let signing_input = format!("{header}.{payload}");
    let signature = signer
        .sign(signing_input.as_bytes())
        .map_err(|e| JwtError::Sign(e.to_string()))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// Decode a JWT and verify its signature under the public nkey named by its `iss` claim.
/// The caller decides whether that issuer is one it trusts.
pub fn decode(token: &str) -> Result<Value, JwtError> {
    let mut parts = token.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Shape);
    };
    let json_part = |part: &str, what: &'static str| -> Result<Value, JwtError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| JwtError::Encoding(what))?;
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Encoding(what))
    };
    let header = json_part(h, "header")?;
    if header["alg"].as_str().map(|a| a.to_ascii_lowercase()) != Some(ALG.into())
        || header["typ"].as_str().map(|t| t.to_ascii_uppercase()) != Some("JWT".into())
    {
        return Err(JwtError::Header(header.to_string()));
    }
    let claims = json_part(p, "claims")?;
    let issuer = claims["iss"].as_str().unwrap_or_default().to_string();
    let key = KeyPair::from_public_key(&issuer).map_err(|_| JwtError::Issuer(issuer.clone()))?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JwtError::Encoding("signature"))?;
    key.verify(format!("{h}.{p}").as_bytes(), &signature)
        .map_err(|_| JwtError::Signature(issuer))?;
    Ok(claims)
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let account = KeyPair::new_account();
        let token = encode(json!({"sub": "UABC", "nats": {"type": "user"}}), &account).unwrap();
        let claims = decode(&token).unwrap();
        assert_eq!(claims["iss"], json!(account.public_key()));
        assert_eq!(claims["sub"], json!("UABC"));
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() == 64));

        // Another payload under the same signature.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&json!({"sub": "UXYZ", "iss": account.public_key()})).unwrap(),
        );
        let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
        assert!(matches!(decode(&tampered), Err(JwtError::Signature(_))));
        // Unsigned ("alg": "none") and garbage.
        let none = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"none"}"#);
        assert!(matches!(
            decode(&format!("{none}.{}.", parts[1])),
            Err(JwtError::Header(_))
        ));
        assert_eq!(decode("garbage"), Err(JwtError::Shape));
        assert_eq!(decode("a.b.c"), Err(JwtError::Encoding("header")));
        // A signature by someone else than the claimed issuer.
        let other = KeyPair::new_account();
        let by_other = encode(json!({"sub": "U"}), &other).unwrap();
        let p2: Vec<&str> = by_other.split('.').collect();
        assert!(matches!(
            decode(&format!("{}.{}.{}", parts[0], parts[1], p2[2])),
            Err(JwtError::Signature(_))
        ));
    }
}
