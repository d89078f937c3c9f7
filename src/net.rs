//! HTTP clients. reqwest is built with rustls but without a default crypto provider (ring
//! is lighter to build than aws-lc-rs), so every client is made here, after installing
//! ring's provider once per process.

use std::sync::Once;

static PROVIDER: Once = Once::new();

/// Installs ring as the process's TLS provider (once). Every reqwest client needs it,
/// including ones other crates build (the OTLP span exporter).
pub fn install_tls_provider() {
    PROVIDER.call_once(|| {
        // Err only means another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A reqwest client builder with TLS ready to use.
pub fn client_builder() -> reqwest::ClientBuilder {
    install_tls_provider();
    reqwest::Client::builder()
}

/// A client with default settings.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    client_builder().build()
}
