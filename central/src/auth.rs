//! Central's authentication: system-client secrets (argon2id) and central's JWTs (EdDSA).
//!
//! Tokens carry OpenCRVS's claims (`sub`, `scope[]`, `userType`, `iss`, `aud`, `exp`). They are
//! signed with central's token key and `iss = crvs-edge:central`, so a node's token does not
//! validate here (and the other way round). The argon2id parameters are the node's: a secret
//! hash made here syncs down and must verify at a 1 GB node. A copy of the node's glue, adapted.

use std::time::Duration;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm as ArgonAlgorithm, Argon2, Params, Version};
use crvs_common::log::NodeSecretKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Issuer of every token central mints.
pub const ISSUER: &str = "crvs-edge:central";

/// Audiences OpenCRVS puts in a system token; the events API requires `opencrvs:events-user`.
pub const TOKEN_AUDIENCES: [&str; 2] = ["opencrvs:gateway-user", "opencrvs:events-user"];

/// The audience the events API checks.
pub const EVENTS_AUDIENCE: &str = "opencrvs:events-user";

/// Clock skew tolerated on `exp`, seconds (clinic clocks drift; RFC 8725 suggests small values).
pub const TOKEN_LEEWAY_SECS: u64 = 30;

/// argon2id parameters: OWASP's minimum (19 MiB, 2 passes, 1 lane), chosen so a 1 GB board can
/// verify a couple of secrets at once.
pub const ARGON2_M_KIB: u32 = 19_456;
/// argon2id passes.
pub const ARGON2_T: u32 = 2;
/// argon2id lanes.
pub const ARGON2_P: u32 = 1;

fn argon2() -> Argon2<'static> {
    // The parameters are constants within argon2's documented ranges.
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).unwrap_or_default();
    Argon2::new(ArgonAlgorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a client secret into a PHC string.
pub fn hash_secret(secret: &str) -> anyhow::Result<String> {
    let salt_bytes = crate::keys::random_bytes::<16>()?;
    let hash = argon2()
        .hash_password_with_salt(secret.as_bytes(), &salt_bytes)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(hash.to_string())
}

/// A PHC hash (with this module's parameters) of a random secret nobody kept, verified against
/// when the client id is unknown, so that an unknown id costs the same time as a wrong secret.
/// A constant, not hashed at start-up: that would cost a start-up 19 MiB of memory for nothing.
pub const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$IiVDAx6fALZlVroZjmO/Bw$KfdxtnyQImzjNSuPLkbcx0qg7iehEqcWE01jg9cO8ag";

/// Checks a secret against a PHC string.
pub fn verify_secret(phc: &str, secret: &str) -> bool {
    argon2().verify_password(secret.as_bytes(), phc).is_ok()
}

/// `userType` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUserType {
    /// A person.
    User,
    /// A system client.
    System,
}

/// JWT claims, as OpenCRVS spells them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// Subject: the client (or user) id.
    pub sub: String,
    /// Encoded scopes.
    pub scope: Vec<String>,
    /// `user` or `system`.
    pub user_type: TokenUserType,
    /// Issuer: [`ISSUER`].
    pub iss: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Issued at (seconds).
    pub iat: u64,
    /// Expiry (seconds).
    pub exp: u64,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct TokenError(String);

/// Mints and validates central's tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("issuer", &self.issuer)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): SEQUENCE { INTEGER 0,
/// AlgorithmIdentifier { id-Ed25519 }, OCTET STRING { OCTET STRING seed } }.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl TokenKeys {
    /// Builds the keys from central's token-signing key; `issuer` is normally [`ISSUER`].
    pub fn new(key: &NodeSecretKey, issuer: String, ttl: Duration) -> Self {
        let seed = key.to_bytes();
        let mut der = zeroize::Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&ED25519_PKCS8_PREFIX);
        der.extend_from_slice(seed.as_ref());
        let encoding = EncodingKey::from_ed_der(&der);
        let decoding = DecodingKey::from_ed_der(key.node_id().as_bytes());
        // Spelled out rather than relying on defaults: one algorithm, our issuer, the events
        // audience, exp required and checked with a small leeway.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_issuer(&[issuer.as_str()]);
        validation.set_audience(&[EVENTS_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = TOKEN_LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        Self {
            encoding,
            decoding,
            validation,
            issuer,
            ttl,
        }
    }

    /// The issuer central writes and accepts.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Mints a token for `sub` with `scopes`, valid from `now_secs` for the configured lifetime.
    pub fn mint(
        &self,
        sub: &str,
        scopes: Vec<String>,
        user_type: TokenUserType,
        now_secs: u64,
    ) -> Result<String, TokenError> {
        let claims = Claims {
            sub: sub.to_owned(),
            scope: scopes,
            user_type,
            iss: self.issuer.clone(),
            aud: TOKEN_AUDIENCES.iter().map(|s| (*s).to_owned()).collect(),
            iat: now_secs,
            exp: now_secs + self.ttl.as_secs(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("JWT".to_owned());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| TokenError(e.to_string()))
    }

    /// Validates a token: signature, algorithm, issuer, audience, expiry.
    pub fn validate(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoy_hash_costs_what_a_real_secret_costs() {
        let decoy = argon2::PasswordHash::new(DECOY_HASH).expect("a PHC string");
        let real_hash = hash_secret("s3cret").expect("hash");
        let real = argon2::PasswordHash::new(&real_hash).expect("a PHC string");
        assert_eq!(decoy.algorithm, real.algorithm);
        assert_eq!(decoy.version, real.version);
        assert_eq!(decoy.params, real.params);
        assert!(!verify_secret(DECOY_HASH, "s3cret"));
    }

    fn keys(seed: u8) -> TokenKeys {
        TokenKeys::new(
            &NodeSecretKey::from_bytes(&[seed; 32]),
            ISSUER.into(),
            Duration::from_secs(600),
        )
    }

    fn now() -> u64 {
        crate::store::wall_ms() / 1000
    }

    #[test]
    fn mint_and_validate() {
        let k = keys(1);
        let token = k
            .mint(
                "client",
                vec!["type=record.read".into()],
                TokenUserType::System,
                now(),
            )
            .unwrap();
        let claims = k.validate(&token).unwrap();
        assert_eq!(claims.sub, "client");
        assert_eq!(claims.user_type, TokenUserType::System);
        assert_eq!(claims.exp - claims.iat, 600);
    }

    #[test]
    fn rejects_other_key_expired_and_alg_none() {
        let k = keys(1);
        let other = keys(2)
            .mint("c", vec![], TokenUserType::System, now())
            .unwrap();
        assert!(k.validate(&other).is_err());
        let expired = k
            .mint("c", vec![], TokenUserType::System, now() - 3600)
            .unwrap();
        assert!(k.validate(&expired).is_err());
        // alg: none with the same claims.
        let good = k.mint("c", vec![], TokenUserType::System, now()).unwrap();
        let payload = good.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(k.validate(&none).is_err());
        assert!(k.validate("foobar").is_err());
    }

    #[test]
    fn secrets_hash_and_verify() {
        let h = hash_secret("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_secret(&h, "s3cret"));
        assert!(!verify_secret(&h, "wrong"));
        assert!(!verify_secret("not a hash", "s3cret"));
    }
}
