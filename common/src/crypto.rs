//! Secrets at rest (AES-SIV) and API token generation and hashing.
//!
//! Each stored secret is `nonce(16) || siv-ciphertext`, encrypted under the
//! newest key with two associated-data headers: the owning row's id (so a
//! ciphertext copied to another row does not decrypt) and the random nonce
//! (so equal passwords never produce equal ciphertexts).

use std::fmt;

use aes_siv::{KeyInit, siv::Aes256Siv};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use rand::RngCore;
use sha2::{Digest, Sha256};

const KEY_BYTES: usize = 64;
const NONCE_BYTES: usize = 16;

/// The encryption keys from `MH_ENCRYPTION_KEYS`; the last one encrypts.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(String, [u8; KEY_BYTES])>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("expected id:base64key[,id:base64key...]")]
    Format,
    #[error("key {0:?} is not valid base64")]
    Base64(String),
    #[error("key {0:?} must be 64 bytes (512 bits) after base64 decoding")]
    Length(String),
    #[error("key id {0:?} appears twice")]
    Duplicate(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("secret was encrypted with key {0:?}, which is not configured")]
    UnknownKey(String),
    #[error("secret does not decrypt with its key and owner")]
    Integrity,
}

/// A ciphertext with the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub ciphertext: Vec<u8>,
}

impl Keyring {
    /// Parses `id:base64key[,id:base64key…]`.
    pub fn parse(spec: &str) -> Result<Self, KeyringError> {
        let mut keys: Vec<(String, [u8; KEY_BYTES])> = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, b64) = entry.split_once(':').ok_or(KeyringError::Format)?;
            let id = id.trim();
            if id.is_empty() {
                return Err(KeyringError::Format);
            }
            let raw = BASE64
                .decode(b64.trim())
                .map_err(|_| KeyringError::Base64(id.to_owned()))?;
            let key: [u8; KEY_BYTES] = raw
                .try_into()
                .map_err(|_| KeyringError::Length(id.to_owned()))?;
            if keys.iter().any(|(k, _)| k == id) {
                return Err(KeyringError::Duplicate(id.to_owned()));
            }
            keys.push((id.to_owned(), key));
        }
        if keys.is_empty() {
            return Err(KeyringError::Format);
        }
        Ok(Self { keys })
    }

    /// A fresh random key in the `id:base64` form, for set-up scripts.
    pub fn generate_entry(id: &str) -> String {
        let mut key = [0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        format!("{id}:{}", BASE64.encode(key))
    }

    pub fn current_key_id(&self) -> &str {
        &self.keys.last().expect("keyring is never empty").0
    }

    fn cipher(key: &[u8; KEY_BYTES]) -> Aes256Siv {
        Aes256Siv::new_from_slice(key).expect("64-byte key fits AES-256-SIV")
    }

    /// Encrypts `plaintext` for the row `owner` with the newest key.
    pub fn seal(&self, owner: &[u8], plaintext: &[u8]) -> Sealed {
        let (key_id, key) = self.keys.last().expect("keyring is never empty");
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = Self::cipher(key)
            .encrypt([owner, &nonce[..]], plaintext)
            .expect("two headers are within the SIV limit");
        let mut out = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Sealed {
            key_id: key_id.clone(),
            ciphertext: out,
        }
    }

    /// Decrypts a secret of the row `owner`.
    pub fn open(&self, owner: &[u8], sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
        let (_, key) = self
            .keys
            .iter()
            .find(|(id, _)| *id == sealed.key_id)
            .ok_or_else(|| CryptoError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.ciphertext.len() < NONCE_BYTES {
            return Err(CryptoError::Integrity);
        }
        let (nonce, body) = sealed.ciphertext.split_at(NONCE_BYTES);
        Self::cipher(key)
            .decrypt([owner, nonce], body)
            .map_err(|_| CryptoError::Integrity)
    }
}

/// Prefix of every API token, so secret scanners can recognise a leaked one.
pub const TOKEN_PREFIX: &str = "mh_";

/// A new random API token (shown once) and the hash that is stored.
pub fn new_api_token() -> (String, Vec<u8>) {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
    let hash = hash_api_token(&token);
    (token, hash)
}

/// SHA-256 of a presented token; tokens have 256 bits of entropy, so a plain
/// hash (no salt, no stretching) is enough and allows an indexed look-up.
pub fn hash_api_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ids: &[&str]) -> Keyring {
        let spec: Vec<String> = ids.iter().map(|id| Keyring::generate_entry(id)).collect();
        Keyring::parse(&spec.join(",")).unwrap()
    }

    #[test]
    fn round_trips_under_its_owner_only() {
        let keys = ring(&["k1"]);
        let sealed = keys.seal(b"target-a", b"s3cret");
        assert_eq!(keys.open(b"target-a", &sealed).unwrap(), b"s3cret");
        assert_eq!(keys.open(b"target-b", &sealed), Err(CryptoError::Integrity));
    }

    #[test]
    fn equal_secrets_give_different_ciphertexts() {
        let keys = ring(&["k1"]);
        assert_ne!(
            keys.seal(b"t", b"pw").ciphertext,
            keys.seal(b"t", b"pw").ciphertext
        );
    }

    #[test]
    fn newest_key_encrypts_and_old_keys_still_decrypt() {
        let k1 = Keyring::generate_entry("k1");
        let old = Keyring::parse(&k1).unwrap();
        let sealed_old = old.seal(b"t", b"pw");
        let both = Keyring::parse(&format!("{k1},{}", Keyring::generate_entry("k2"))).unwrap();
        assert_eq!(both.current_key_id(), "k2");
        assert_eq!(both.open(b"t", &sealed_old).unwrap(), b"pw");
        assert_eq!(both.seal(b"t", b"pw").key_id, "k2");
    }

    #[test]
    fn unknown_key_id_is_reported() {
        let sealed = ring(&["k1"]).seal(b"t", b"pw");
        assert_eq!(
            ring(&["k2"]).open(b"t", &sealed),
            Err(CryptoError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn tampering_is_detected() {
        let keys = ring(&["k1"]);
        let mut sealed = keys.seal(b"t", b"pw");
        let last = sealed.ciphertext.len() - 1;
        sealed.ciphertext[last] ^= 1;
        assert_eq!(keys.open(b"t", &sealed), Err(CryptoError::Integrity));
    }

    #[test]
    fn rejects_malformed_key_specs() {
        assert_eq!(Keyring::parse("").unwrap_err(), KeyringError::Format);
        assert_eq!(Keyring::parse("nokey").unwrap_err(), KeyringError::Format);
        assert_eq!(
            Keyring::parse("k:!!").unwrap_err(),
            KeyringError::Base64("k".into())
        );
        assert_eq!(
            Keyring::parse(&format!("k:{}", BASE64.encode([0u8; 32]))).unwrap_err(),
            KeyringError::Length("k".into())
        );
        let e = Keyring::generate_entry("k");
        assert_eq!(
            Keyring::parse(&format!("{e},{e}")).unwrap_err(),
            KeyringError::Duplicate("k".into())
        );
    }

    #[test]
    fn debug_never_prints_key_material() {
        let keys = ring(&["k1"]);
        let text = format!("{keys:?}");
        assert!(text.contains("k1"));
        assert!(!text.contains(&BASE64.encode(keys.keys[0].1)));
    }

    #[test]
    fn api_tokens_are_random_and_hashed() {
        let (a, hash_a) = new_api_token();
        let (b, _) = new_api_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(hash_api_token(&a), hash_a);
        assert_eq!(hash_a.len(), 32);
    }
}
