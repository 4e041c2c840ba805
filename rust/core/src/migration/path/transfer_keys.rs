//! The secrets of one direct transfer, made afresh for every migration: the receiver's
//! certificate (pinned by the sender) and private key, and the token the sender presents.

use base64::Engine;

use crate::error::{Error, ProviderError};
use vimigrate_protocol::Secret;

/// The secrets of one direct transfer: the receiver's certificate and key, and the token.
#[derive(Clone)]
pub(crate) struct TransferKeys {
    /// What the sender presents to the receiver.
    pub token: Secret,
    /// The receiver's certificate (DER, base64), the only one the sender accepts.
    pub cert_b64: String,
    /// Its private key (PKCS#8 DER, base64).
    pub key_b64: Secret,
}

impl std::fmt::Debug for TransferKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransferKeys(<redacted>)")
    }
}

impl TransferKeys {
    /// A fresh certificate (P-256, self-signed) and a 256-bit token, for one migration.
    pub(crate) fn generate() -> Result<TransferKeys, Error> {
        let fail = |detail: String| ProviderError::Failed {
            provider: "broker".into(),
            step: "make the transfer keys".into(),
            detail,
        };
        let made = rcgen::generate_simple_self_signed(vec!["vimigrate-transfer".to_string()])
            .map_err(|e| fail(format!("cannot generate a certificate: {e}")))?;
        let mut token = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut token)
            .map_err(|_| fail("no system randomness".into()))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(TransferKeys {
            token: Secret::new(token.iter().map(|b| format!("{b:02x}")).collect::<String>()),
            cert_b64: b64.encode(made.cert.der()),
            key_b64: Secret::new(b64.encode(made.key_pair.serialize_der())),
        })
    }
}
