//! Authentication shared by node and central: secrets and passwords (argon2id) and the JWTs
//! (EdDSA) each of them mints.
//!
//! Tokens carry OpenCRVS's claims (`sub`, `scope[]`, `userType`, `iss`, `aud`, `exp`). Each
//! server signs with its own token key, so a token from one node does not validate at another
//! node or at central; `iss` names the server so they are distinguishable by eye too. The
//! argon2id parameters are the node's: a hash made at central syncs down and must verify on a
//! 1 GB board.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::log::NodeSecretKey;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm as ArgonAlgorithm, Argon2, Params, Version};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

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
    let salt_bytes = super::keys::random_bytes::<16>()?;
    let hash = argon2()
        .hash_password_with_salt(secret.as_bytes(), &salt_bytes)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(hash.to_string())
}

/// A PHC hash (with this module's parameters) of a random secret nobody kept, verified against
/// when the client id is unknown, so that an unknown id costs the same time as a wrong secret.
/// A constant, not hashed at start-up: that would cost a start-up 19 MiB of memory for nothing.
pub const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$IiVDAx6fALZlVroZjmO/Bw$KfdxtnyQImzjNSuPLkbcx0qg7iehEqcWE01jg9cO8ag";

/// A short fingerprint of a user's password hash, carried in their tokens (`cred`): when the
/// password changes (or is reset), tokens minted before no longer match and are refused.
pub fn credential_tag(password_hash: &str) -> String {
    let digest = Sha256::digest(password_hash.as_bytes());
    hex::encode(&digest[..8])
}

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
    /// The user's role (user tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A unique token id (user tokens only): two tokens minted for one user in the same second
    /// differ, so logging one out leaves the other valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The user's credentials when the token was minted ([`credential_tag`]; user tokens only):
    /// a password change or reset makes every earlier token of the user invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cred: Option<String>,
    /// Issuer: `crvs-edge:node:<node id>` or `crvs-edge:central`.
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

/// Tokens whose signature and claims were checked, remembered so a client reusing its token
/// (as integrations do for its whole lifetime) is not re-verified on every request.
pub const VERIFIED_TOKENS_MAX: usize = 4096;

/// Mints and validates one server's tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    ttl: Duration,
    /// SHA-256 of a token → its verified claims. Expiry is still checked on every use.
    verified: Mutex<HashMap<[u8; 32], Claims>>,
    /// Lifetime of user tokens (OpenCRVS: 7 days).
    user_ttl: Duration,
    /// SHA-256 of logged-out tokens → their expiry (seconds); refused until then.
    revoked: Mutex<HashMap<[u8; 32], u64>>,
}

/// Logged-out tokens remembered at once (each until it would have expired). A node serves one
/// facility's staff, central a country's; past this, logout answers an error rather than forget
/// a revocation.
pub const REVOKED_TOKENS_MAX: usize = 100_000;

/// User token lifetime by default, seconds (OpenCRVS `CONFIG_TOKEN_EXPIRY_SECONDS`).
pub const USER_TOKEN_TTL_SECS: u64 = 604_800;

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

/// The key as PKCS#8 v1 DER (RFC 8410): what jsonwebtoken and rustls take. Zeroized on drop.
pub fn ed25519_pkcs8_der(key: &NodeSecretKey) -> zeroize::Zeroizing<Vec<u8>> {
    let seed = key.to_bytes();
    let mut der = zeroize::Zeroizing::new(Vec::with_capacity(48));
    der.extend_from_slice(&ED25519_PKCS8_PREFIX);
    der.extend_from_slice(seed.as_ref());
    der
}

impl TokenKeys {
    /// Builds the keys from a token-signing key; `issuer` names this server.
    pub fn new(key: &NodeSecretKey, issuer: String, ttl: Duration) -> Self {
        let der = ed25519_pkcs8_der(key);
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
            verified: Mutex::new(HashMap::new()),
            user_ttl: Duration::from_secs(USER_TOKEN_TTL_SECS),
            revoked: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the lifetime of user tokens.
    pub fn with_user_ttl(mut self, ttl: Duration) -> Self {
        self.user_ttl = ttl;
        self
    }

    /// Mints a user token: `sub` is the user id, `role` their role, `scopes` the role's.
    pub fn mint_user(
        &self,
        user_id: &str,
        role: &str,
        scopes: Vec<String>,
        cred: String,
        now_secs: u64,
    ) -> Result<String, TokenError> {
        self.mint_claims(Claims {
            sub: user_id.to_owned(),
            scope: scopes,
            user_type: TokenUserType::User,
            role: Some(role.to_owned()),
            jti: Some(uuid::Uuid::new_v4().to_string()),
            cred: Some(cred),
            iss: self.issuer.clone(),
            aud: TOKEN_AUDIENCES.iter().map(|s| (*s).to_owned()).collect(),
            iat: now_secs,
            exp: now_secs + self.user_ttl.as_secs(),
        })
    }

    /// Refuses `token` from now on (logout). Returns its claims, so the caller can persist the
    /// revocation until the token's expiry. An invalid token is refused with its reason.
    pub fn revoke(&self, token: &str, now_secs: u64) -> Result<Claims, TokenError> {
        let claims = self.validate_at(token, now_secs)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.remember_revoked(digest, claims.exp, now_secs)?;
        Ok(claims)
    }

    /// Loads revocations persisted earlier (at start-up).
    pub fn remember_revoked(
        &self,
        digest: [u8; 32],
        exp: u64,
        now_secs: u64,
    ) -> Result<(), TokenError> {
        let mut revoked = lock(&self.revoked);
        if revoked.len() >= REVOKED_TOKENS_MAX {
            revoked.retain(|_, e| e.saturating_add(TOKEN_LEEWAY_SECS) > now_secs);
            if revoked.len() >= REVOKED_TOKENS_MAX {
                return Err(TokenError("too many logged-out tokens to remember".into()));
            }
        }
        revoked.insert(digest, exp);
        drop(revoked);
        self.verified_lock().remove(&digest);
        Ok(())
    }

    /// The issuer this server writes and accepts.
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
        self.mint_claims(Claims {
            sub: sub.to_owned(),
            scope: scopes,
            user_type,
            role: None,
            jti: None,
            cred: None,
            iss: self.issuer.clone(),
            aud: TOKEN_AUDIENCES.iter().map(|s| (*s).to_owned()).collect(),
            iat: now_secs,
            exp: now_secs + self.ttl.as_secs(),
        })
    }

    /// Mints a single-record token (OpenCRVS §3.4) for a confirmation hook: `sub` names the
    /// requested action it may answer, `scopes` what it may do, valid as long as a user token
    /// (OpenCRVS: 7 days), since an asynchronous confirmation may take days.
    pub fn mint_single_record(
        &self,
        action_id: &str,
        scopes: Vec<String>,
        now_secs: u64,
    ) -> Result<String, TokenError> {
        self.mint_claims(Claims {
            sub: action_id.to_owned(),
            scope: scopes,
            user_type: TokenUserType::System,
            role: None,
            jti: Some(uuid::Uuid::new_v4().to_string()),
            cred: None,
            iss: self.issuer.clone(),
            aud: TOKEN_AUDIENCES.iter().map(|s| (*s).to_owned()).collect(),
            iat: now_secs,
            exp: now_secs + self.user_ttl.as_secs(),
        })
    }

    fn mint_claims(&self, claims: Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("JWT".to_owned());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| TokenError(e.to_string()))
    }

    /// Validates a token: signature, algorithm, issuer, audience, expiry. A token verified
    /// before is looked up instead of verified again; its expiry is checked against `now`.
    pub fn validate(&self, token: &str) -> Result<Claims, TokenError> {
        self.validate_at(token, jsonwebtoken::get_current_timestamp())
    }

    /// [`Self::validate`] with the time a remembered token's expiry is checked against.
    fn validate_at(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if lock(&self.revoked).contains_key(&digest) {
            return Err(TokenError("token revoked".into()));
        }
        if let Some(claims) = self.verified_lock().get(&digest)
            && claims.exp.saturating_add(TOKEN_LEEWAY_SECS) > now
        {
            return Ok(claims.clone());
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError(e.to_string()))?;
        if claims.exp.saturating_add(TOKEN_LEEWAY_SECS) <= now {
            return Err(TokenError("token expired".into()));
        }
        let mut verified = self.verified_lock();
        if verified.len() >= VERIFIED_TOKENS_MAX {
            verified.retain(|_, c| c.exp.saturating_add(TOKEN_LEEWAY_SECS) > now);
            if verified.len() >= VERIFIED_TOKENS_MAX {
                verified.clear();
            }
        }
        verified.insert(digest, claims.clone());
        Ok(claims)
    }

    fn verified_lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Claims>> {
        lock(&self.verified)
    }
}

/// Both maps are written by one insert or remove at a time; a panic elsewhere cannot leave them
/// half-written, so a poisoned lock is still sound.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
            "crvs-edge:node:test".into(),
            Duration::from_secs(600),
        )
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
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
    fn a_remembered_token_still_expires_and_others_are_still_verified() {
        let k = keys(1);
        let token = k.mint("c", vec![], TokenUserType::System, now()).unwrap();
        let claims = k.validate(&token).unwrap();
        assert_eq!(k.validate(&token).unwrap().sub, "c");
        let after = claims.exp + TOKEN_LEEWAY_SECS;
        assert!(k.validate_at(&token, after).is_err());
        assert!(k.validate_at(&token, after - 1).is_ok());
        // A token that differs in one signature byte is not the remembered one.
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert!(k.validate(&String::from_utf8(forged).unwrap()).is_err());
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
