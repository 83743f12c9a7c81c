//! The TLS files of a listener (`[server.tls]`, `[admin.tls]`): their paths,
//! validated with the rest of the config without I/O ([`files`]), and
//! reading them ([`TlsFiles::load`]): the PEM certificate chain, the private
//! key, whether the key belongs to the certificate, the client CAs. Used at
//! load ([`check_files`], so `check-config` and a start report a bad file by
//! its key path) and by `server::tls` at start and at every certificate
//! reload. Builds no listener and opens no socket.

use super::{Config, ConfigIssue, Issues};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The files of one TLS listener. Relative paths are taken from the
/// gateway's working directory, like `sqlite://` store paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Where in the config (`server.tls` or `admin.tls`), for messages.
    pub section: &'static str,
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CAs a client certificate must chain to; `Some`: mutual TLS, required.
    pub client_ca_file: Option<PathBuf>,
}

/// What the files of a [`TlsFiles`] held, checked.
#[derive(Debug)]
pub struct TlsMaterial {
    pub key: Arc<CertifiedKey>,
    pub client_roots: Option<Arc<rustls::RootCertStore>>,
}

/// A TLS file that cannot serve: which setting names it, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {file}: {message}")]
pub struct TlsFileError {
    /// The key path, e.g. `server.tls.cert_file`.
    pub setting: String,
    /// The file as configured.
    pub file: String,
    pub message: String,
    pub hint: &'static str,
}

impl TlsFileError {
    fn new(
        files: &TlsFiles,
        field: &str,
        path: &Path,
        message: String,
        hint: &'static str,
    ) -> Self {
        TlsFileError {
            setting: format!("{}.{field}", files.section),
            file: path.display().to_string(),
            message,
            hint,
        }
    }
}

const READ_HINT: &str = "check the path (a relative one is taken from the working directory) and that the gateway's user may read the file";
const CERT_HINT: &str =
    "cert_file must hold the PEM certificate chain, leaf first (-----BEGIN CERTIFICATE-----)";
const KEY_HINT: &str = "key_file must hold one PEM private key (PKCS#8 BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY): RSA, ECDSA P-256/P-384 or Ed25519";
const PAIR_HINT: &str =
    "cert_file and key_file must be the pair issued together, the leaf certificate first in cert_file";
const CA_HINT: &str =
    "client_ca_file must hold the PEM certificates of the CAs that sign client certificates";

impl TlsFiles {
    /// Reads and checks every file: the chain parses, the key is supported
    /// and belongs to the leaf certificate, the client CAs parse.
    pub fn load(&self) -> Result<TlsMaterial, TlsFileError> {
        let provider = rustls::crypto::ring::default_provider();
        let chain = self.certificates("cert_file", &self.cert_file, CERT_HINT)?;
        let key_pem = self.read("key_file", &self.key_file)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            let message = format!("no usable private key: {e}");
            TlsFileError::new(self, "key_file", &self.key_file, message, KEY_HINT)
        })?;
        let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| self.pair_error(e))?;
        let client_roots = match &self.client_ca_file {
            None => None,
            Some(path) => Some(Arc::new(self.roots(path)?)),
        };
        Ok(TlsMaterial {
            key: Arc::new(key),
            client_roots,
        })
    }

    fn read(&self, field: &str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
        std::fs::read(path).map_err(|e| {
            TlsFileError::new(self, field, path, format!("cannot read: {e}"), READ_HINT)
        })
    }

    fn certificates(
        &self,
        field: &str,
        path: &Path,
        hint: &'static str,
    ) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
        let pem = self.read(field, path)?;
        let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
        let problem = match certs {
            Ok(certs) if !certs.is_empty() => return Ok(certs),
            Ok(_) => "no PEM certificate in the file".to_owned(),
            Err(e) => format!("not a PEM certificate file: {e}"),
        };
        Err(TlsFileError::new(self, field, path, problem, hint))
    }

    /// A rustls error from pairing the chain with its key, on the file at
    /// fault: the key (unsupported, or not the leaf's) or the leaf.
    fn pair_error(&self, e: rustls::Error) -> TlsFileError {
        use rustls::{Error, InconsistentKeys};
        match e {
            Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => TlsFileError::new(
                self,
                "key_file",
                &self.key_file,
                format!(
                    "the key does not belong to the first certificate of {}",
                    self.cert_file.display()
                ),
                PAIR_HINT,
            ),
            Error::InvalidCertificate(_) | Error::NoCertificatesPresented => TlsFileError::new(
                self,
                "cert_file",
                &self.cert_file,
                format!("the leaf certificate cannot be parsed: {e}"),
                CERT_HINT,
            ),
            other => TlsFileError::new(
                self,
                "key_file",
                &self.key_file,
                format!("unusable private key: {other}"),
                KEY_HINT,
            ),
        }
    }

    fn roots(&self, path: &Path) -> Result<rustls::RootCertStore, TlsFileError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in self.certificates("client_ca_file", path, CA_HINT)? {
            roots.add(cert).map_err(|e| {
                let message = format!("not a usable CA certificate: {e}");
                TlsFileError::new(self, "client_ca_file", path, message, CA_HINT)
            })?;
        }
        Ok(roots)
    }
}

/// The files of a `[… .tls]` table from its raw fields: both the
/// certificate and the key are required, none may be empty. No I/O.
pub(super) fn files(
    issues: &mut Issues,
    section: &'static str,
    cert_file: Option<&str>,
    key_file: Option<&str>,
    client_ca_file: Option<&str>,
) -> Option<TlsFiles> {
    let mut path = |field: &str, value: Option<&str>, required: bool| match value {
        Some(text) if !text.trim().is_empty() => Some(PathBuf::from(text)),
        Some(_) => {
            issues.hint(
                format!("{section}.{field}"),
                "empty path",
                "the path of a PEM file",
            );
            None
        }
        None if required => {
            issues.hint(
                format!("{section}.{field}"),
                "missing",
                format!("set both cert_file and key_file, or remove [{section}] for plain HTTP"),
            );
            None
        }
        None => None,
    };
    let cert = path("cert_file", cert_file, true);
    let key = path("key_file", key_file, true);
    let ca = path("client_ca_file", client_ca_file, false);
    if client_ca_file.is_some() && ca.is_none() {
        return None;
    }
    Some(TlsFiles {
        section,
        cert_file: cert?,
        key_file: key?,
        client_ca_file: ca,
    })
}

/// Reads the TLS files of every listener `config` has, one issue per file
/// that cannot serve (the first problem of each listener).
pub(super) fn check_files(config: &Config) -> Vec<ConfigIssue> {
    [config.server.tls.as_ref(), config.admin.tls.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|files| files.load().err())
        .map(|e| ConfigIssue {
            path: e.setting,
            message: format!("{}: {}", e.file, e.message),
            hint: Some(e.hint.to_owned()),
            line: None,
        })
        .collect()
}
