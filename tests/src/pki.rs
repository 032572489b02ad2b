//! The local stack's certificate authority: it plays the module vendor's CA (device birth
//! certificates), AWS's issuer of the claim-thing certificate, and the broker's server CA. Real X.509
//! and real mutual TLS, made on the spot with rcgen, stored under `.local/pki/`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

pub struct LocalPki {
    dir: PathBuf,
}

/// Broker identities with fixed names (the ACL refers to them).
pub const CLAIM_THING: &str = "claim-thing";
pub const OBSERVER: &str = "observer";

impl LocalPki {
    /// Opens the PKI in `dir`, creating the CA and the broker's server certificate if missing.
    pub fn ensure(dir: &Path) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir.join("clients")).map_err(|e| io(dir, e))?;
        let pki = Self { dir: dir.to_owned() };
        if !pki.dir.join("ca.pem").exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name = name("ExpressLink claim local CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = params.self_signed(&key)?;
            write(&pki.dir.join("ca.key"), &key.serialize_pem())?;
            write(&pki.dir.join("ca.pem"), &cert.pem())?;
        }
        if !pki.dir.join("server.pem").exists() {
            let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
            params.distinguished_name = name("localhost");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let identity = pki.sign(params)?;
            write(&pki.dir.join("server.key"), &identity.key_pem)?;
            write(&pki.dir.join("server.pem"), &identity.cert_pem)?;
        }
        Ok(pki)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca_pem(&self) -> Result<String, PkiError> {
        read(&self.dir.join("ca.pem"))
    }

    /// The client identity whose certificate CN is `common_name` (a ThingName for devices), made on
    /// first use and kept for the next.
    pub fn client(&self, common_name: &str) -> Result<Identity, PkiError> {
        let cert_path = self.dir.join("clients").join(format!("{common_name}.pem"));
        let key_path = self.dir.join("clients").join(format!("{common_name}.key"));
        if cert_path.exists() && key_path.exists() {
            return Ok(Identity {
                cert_pem: read(&cert_path)?,
                key_pem: read(&key_path)?,
            });
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let identity = self.sign(params)?;
        write(&key_path, &identity.key_pem)?;
        write(&cert_path, &identity.cert_pem)?;
        Ok(identity)
    }

    /// A client identity from a CA the broker does not trust.
    pub fn rogue_client(common_name: &str) -> Result<Identity, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name);
        let cert = params.self_signed(&key)?;
        Ok(Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client identity from the local CA whose validity ended yesterday (made afresh each time).
    pub fn expired_client(&self, common_name: &str) -> Result<Identity, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(30);
        params.not_after = now - time::Duration::days(1);
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<Identity, PkiError> {
        let ca_key = KeyPair::from_pem(&read(&self.dir.join("ca.key"))?)?;
        let issuer = Issuer::from_ca_cert_pem(&read(&self.dir.join("ca.pem"))?, ca_key)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn io(path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|e| io(path, e))
}

/// Writes atomically (temp file + rename), so concurrent test processes never read half a file.
fn write(path: &Path, text: &str) -> Result<(), PkiError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}
