//! Envelope encryption for secrets.
//!
//! Each secret gets its own random 256-bit data key; the value is sealed with AES-256-GCM under
//! that key, and the data key is wrapped by a [`KeyEncryptionKey`]. Only wrapped keys and
//! ciphertexts are stored. The local master key is one implementation of the wrapping trait; a
//! KMS or Vault-transit backend implements the same two calls (wrap, unwrap) over the network.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use futures::future::BoxFuture;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("decryption failed: wrong key, or the data was altered")]
    Open,
    #[error("master key must be 32 bytes, given as 64 hex characters or base64 (got {0} bytes)")]
    KeyLength(usize),
    #[error("master key is neither hex nor base64")]
    KeyEncoding,
    #[error("key backend: {0}")]
    Backend(String),
}

/// Wraps and unwraps data keys. Implementations: [`MasterKey`] (local), later KMS/Vault.
pub trait KeyEncryptionKey: Send + Sync + fmt::Debug {
    /// Identifies the key, stored beside each wrapped data key (for rotation).
    fn key_id(&self) -> &str;
    fn wrap<'a>(
        &'a self,
        data_key: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, CryptoError>>;
    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, CryptoError>>;
}

/// A local 256-bit master key (from `DRAVEN_MASTER_KEY` or the key file). `Debug` never prints it.
pub struct MasterKey {
    cipher: Aes256Gcm,
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<MasterKey, CryptoError> {
        if bytes.len() != 32 {
            return Err(CryptoError::KeyLength(bytes.len()));
        }
        let id = format!("local:{}", &hex::encode(Sha256::digest(bytes))[..12]);
        let cipher =
            Aes256Gcm::new_from_slice(bytes).map_err(|_| CryptoError::KeyLength(bytes.len()))?;
        Ok(MasterKey { cipher, id })
    }

    /// Parses 64 hex characters or standard/url-safe base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<MasterKey, CryptoError> {
        use base64::Engine;
        let text = text.trim();
        let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| CryptoError::KeyEncoding)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
                .map_err(|_| CryptoError::KeyEncoding)?
        };
        MasterKey::from_bytes(&bytes)
    }

    /// A fresh random key, hex encoded (for the key file).
    pub fn generate_hex() -> String {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        hex::encode(key)
    }
}

impl KeyEncryptionKey for MasterKey {
    fn key_id(&self) -> &str {
        &self.id
    }

    fn wrap<'a>(
        &'a self,
        data_key: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, CryptoError>> {
        Box::pin(async move { seal(&self.cipher, data_key, aad) })
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, CryptoError>> {
        Box::pin(async move { open(&self.cipher, wrapped, aad) })
    }
}

/// nonce (12 bytes) ‖ ciphertext+tag
fn seal(cipher: &Aes256Gcm, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Open)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < 12 + 16 {
        return Err(CryptoError::Open);
    }
    let (nonce, ct) = sealed.split_at(12);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| CryptoError::Open)
}

/// A sealed value as stored: which key wrapped it, the wrapped data key, the ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub key_id: String,
    pub wrapped_key: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Seals `plaintext` under a fresh data key. `aad` binds the ciphertext to its owner (tenant and
/// name), so a row copied onto another secret does not decrypt.
pub async fn seal_envelope(
    kek: &dyn KeyEncryptionKey,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Envelope, CryptoError> {
    let mut data_key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut data_key);
    let cipher = Aes256Gcm::new_from_slice(&data_key).map_err(|_| CryptoError::KeyLength(32))?;
    let ciphertext = seal(&cipher, plaintext, aad)?;
    let wrapped_key = kek.wrap(&data_key, aad).await?;
    data_key.fill(0);
    Ok(Envelope {
        key_id: kek.key_id().to_owned(),
        wrapped_key,
        ciphertext,
    })
}

pub async fn open_envelope(
    kek: &dyn KeyEncryptionKey,
    env: &Envelope,
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut data_key = kek.unwrap(&env.wrapped_key, aad).await?;
    let cipher = Aes256Gcm::new_from_slice(&data_key).map_err(|_| CryptoError::Open)?;
    data_key.fill(0);
    open(&cipher, &env.ciphertext, aad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::parse(&MasterKey::generate_hex()).unwrap()
    }

    #[tokio::test]
    async fn round_trip_and_tamper() {
        let k = key();
        let env = seal_envelope(&k, b"hunter2", b"t1/db-password")
            .await
            .unwrap();
        assert!(!env.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            open_envelope(&k, &env, b"t1/db-password").await.unwrap(),
            b"hunter2"
        );
        // Another owner, another key, or a flipped bit: refused.
        assert!(open_envelope(&k, &env, b"t2/db-password").await.is_err());
        assert!(open_envelope(&key(), &env, b"t1/db-password")
            .await
            .is_err());
        let mut bad = env.clone();
        *bad.ciphertext.last_mut().unwrap() ^= 1;
        assert!(open_envelope(&k, &bad, b"t1/db-password").await.is_err());
    }

    #[test]
    fn key_parsing() {
        assert!(MasterKey::parse(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").is_ok());
        assert!(matches!(
            MasterKey::parse("abcd"),
            Err(CryptoError::KeyLength(_)) | Err(CryptoError::KeyEncoding)
        ));
        assert!(!format!("{:?}", key()).contains(&"ab".repeat(4)));
    }
}
