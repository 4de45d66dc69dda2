//! TLS for `rediss` URLs: [`TlsConfig`] (CA, client certificate) and its environment variables.

use std::path::Path;

use redis::TlsCertificates;

use crate::error::{Error, Result};

/// Environment variable: path of a PEM file of CA certificates to trust for `rediss` URLs.
pub const ENV_TLS_CA_FILE: &str = "SCHEDULER_TLS_CA_FILE";
/// Environment variable: path of a PEM client certificate, for mutual TLS (with the key below).
pub const ENV_TLS_CERT_FILE: &str = "SCHEDULER_TLS_CERT_FILE";
/// Environment variable: path of the PEM private key of the client certificate.
pub const ENV_TLS_KEY_FILE: &str = "SCHEDULER_TLS_KEY_FILE";

/// Certificates for TLS connections (`rediss` URLs), all PEM.
///
/// Without one, TLS connections trust the system's root certificates and present no client
/// certificate.
///
/// # Examples
///
/// ```no_run
/// # fn demo() -> Result<(), scheduler_core::Error> {
/// use scheduler_core::conn::{ConnectOptions, TlsConfig};
/// let opts = ConnectOptions::new("rediss://redis.internal:6380")
///     .tls(TlsConfig::new().ca_file("/etc/redis/ca.pem")?);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct TlsConfig {
    pub(super) ca: Option<Vec<u8>>,
    pub(super) client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field("client_cert", &self.client.as_ref().map(|_| "<pem>"))
            .finish()
    }
}

pub(super) fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::InvalidConfig(format!(
            "cannot read the {what} file {}: {e}",
            path.display()
        ))
    })
}

impl TlsConfig {
    /// No CA (the system's roots), no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust exactly the CA certificates of this PEM text (instead of the system's roots).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(pem.into());
        self
    }

    /// As [`TlsConfig::ca_pem`], read from a file.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when the file cannot be read.
    pub fn ca_file(self, path: impl AsRef<Path>) -> Result<Self> {
        Ok(self.ca_pem(read_pem(path.as_ref(), "CA certificate")?))
    }

    /// Present this client certificate and key (PEM) to servers that ask (mutual TLS).
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client = Some((cert.into(), key.into()));
        self
    }

    /// As [`TlsConfig::client_cert_pem`], read from files.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when a file cannot be read.
    pub fn client_cert_files(self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        let c = read_pem(cert.as_ref(), "client certificate")?;
        let k = read_pem(key.as_ref(), "client key")?;
        Ok(self.client_cert_pem(c, k))
    }

    /// The configuration named by the environment: [`ENV_TLS_CA_FILE`], and [`ENV_TLS_CERT_FILE`]
    /// with [`ENV_TLS_KEY_FILE`]; `None` when none is set. Workers and the CLI use this, so a
    /// deployment sets certificates without code.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when a named file cannot be read, or only one of the client
    /// certificate and key is set.
    pub fn from_env() -> Result<Option<Self>> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let (ca, cert, key) = (
            var(ENV_TLS_CA_FILE),
            var(ENV_TLS_CERT_FILE),
            var(ENV_TLS_KEY_FILE),
        );
        if ca.is_none() && cert.is_none() && key.is_none() {
            return Ok(None);
        }
        let mut cfg = Self::new();
        if let Some(ca) = ca {
            cfg = cfg.ca_file(ca)?;
        }
        match (cert, key) {
            (Some(c), Some(k)) => cfg = cfg.client_cert_files(c, k)?,
            (None, None) => {}
            _ => {
                return Err(Error::InvalidConfig(format!(
                    "set both {ENV_TLS_CERT_FILE} and {ENV_TLS_KEY_FILE}, or neither"
                )))
            }
        }
        Ok(Some(cfg))
    }

    pub(super) fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }
}
