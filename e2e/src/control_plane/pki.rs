//! The cluster's certificates, as kubeadm lays them out: one CA that signs the API
//! server's serving certificate and every client certificate (the admin, the
//! controller-manager, the scheduler, each node's kubelet and any test user), and the key
//! that signs service-account tokens. ECDSA P-256 throughout: quick to generate, and
//! accepted by every component.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::error::Error;

/// A certificate and its key, PEM-encoded, and DER (the key as PKCS#8).
#[derive(Debug, Clone)]
pub(crate) struct CertKey {
    pub(crate) cert: String,
    pub(crate) key: String,
    pub(crate) cert_der: Vec<u8>,
    pub(crate) key_der: Vec<u8>,
}

/// The cluster's CA and the service-account signing key, written under `dir`.
pub(crate) struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_der: Vec<u8>,
    pub(crate) ca_file: PathBuf,
    pub(crate) service_account_key_file: PathBuf,
    pub(crate) service_account_public_key_file: PathBuf,
}

fn failed(what: &str, source: rcgen::Error) -> Error {
    Error::Certificate {
        what: what.to_string(),
        source,
    }
}

pub(crate) fn write(path: &Path, contents: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Keys are private to the test's user, as a real node keeps them.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|source| Error::WriteFile {
            path: path.to_path_buf(),
            source,
        })
}

impl Pki {
    /// Makes a new CA and service-account key in `dir`.
    pub(crate) fn create(dir: &Path) -> Result<Self, Error> {
        let ca_key = KeyPair::generate().map_err(|e| failed("the CA key", e))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "px-e2e-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params
            .self_signed(&ca_key)
            .map_err(|e| failed("the CA certificate", e))?;
        let ca_pem = ca.pem();
        let ca_der = ca.der().to_vec();
        let ca_file = dir.join("ca.crt");
        write(&ca_file, &ca_pem)?;
        write(&dir.join("ca.key"), &ca_key.serialize_pem())?;
        let sa_key = KeyPair::generate().map_err(|e| failed("the service-account key", e))?;
        let service_account_key_file = dir.join("sa.key");
        write(&service_account_key_file, &sa_key.serialize_pem())?;
        // The API server reads the verifying key from a public-key PEM.
        let service_account_public_key_file = dir.join("sa.pub");
        write(&service_account_public_key_file, &sa_key.public_key_pem())?;
        Ok(Self {
            issuer: Issuer::new(params, ca_key),
            ca_pem,
            ca_der,
            ca_file,
            service_account_key_file,
            service_account_public_key_file,
        })
    }

    /// The CA certificate, PEM.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER.
    pub(crate) fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// A serving certificate for `ips` and `dns` names.
    pub(crate) fn serving(
        &self,
        cn: &str,
        ips: &[std::net::IpAddr],
        dns: &[&str],
    ) -> Result<CertKey, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        for name in dns {
            let name = (*name).try_into().map_err(|e| failed("a DNS name", e))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, cn)
    }

    /// A client certificate for user `user`, in `group` if given (Kubernetes reads the
    /// user from the CN and a group from the O).
    pub(crate) fn client(&self, user: &str, group: Option<&str>) -> Result<CertKey, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, user);
        if let Some(group) = group {
            params
                .distinguished_name
                .push(DnType::OrganizationName, group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, user)
    }

    fn sign(&self, mut params: CertificateParams, what: &str) -> Result<CertKey, Error> {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().map_err(|e| failed(what, e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| failed(what, e))?;
        Ok(CertKey {
            cert: cert.pem(),
            key: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }
}
