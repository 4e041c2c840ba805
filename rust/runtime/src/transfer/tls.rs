//! TLS for the transfer between provider hosts: TLS 1.3 with a certificate the broker made for
//! this one migration. The receiver presents it; the sender accepts exactly that certificate
//! (pinned, byte for byte) and then proves itself with the migration's token. No CA is
//! involved, and a certificate is worthless after its migration.

use std::sync::Arc;

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

use crate::error::RuntimeError;

/// The name the sender asks for; the pinned certificate decides, not the name.
pub const SERVER_NAME: &str = "vimigrate-transfer";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(step: &'static str) -> impl Fn(rustls::Error) -> RuntimeError {
    move |e| RuntimeError::Tls { step, detail: e.to_string() }
}

/// Decodes base64 DER from a directive.
pub fn decode_der(step: &'static str, what: &str, b64: &str) -> Result<Vec<u8>, RuntimeError> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| RuntimeError::Directive(format!("{step}: {what} is not base64: {e}")))
}

/// The receiver's configuration: this migration's certificate and key, no client certificate.
pub fn server_config(cert_der: Vec<u8>, key_der: Vec<u8>) -> Result<Arc<ServerConfig>, RuntimeError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error("listen"))?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert_der)], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)))
        .map_err(tls_error("listen"))?;
    Ok(Arc::new(config))
}

/// The sender's configuration: only the pinned certificate is accepted.
pub fn client_config(pinned_der: Vec<u8>) -> Result<Arc<ClientConfig>, RuntimeError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCertificate { der: pinned_der, provider: Arc::clone(&provider) });
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error("connect"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The server name for [`SERVER_NAME`].
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

/// Accepts the one certificate made for this migration, and checks handshake signatures
/// against it as usual.
#[derive(Debug)]
struct PinnedCertificate {
    der: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
