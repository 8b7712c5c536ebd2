//! The certificates inside a Vizier: a CA per Vizier, a serving certificate for its
//! PEMs, one for Kelvin (which Kelvin also presents to the PEMs as a client), and the
//! operator's own client certificate, issued with `rcgen`. Pure: the caller gives the
//! time and keeps the results (`tls.rs` stores them in the Secret [`TLS_SECRET`]).
//!
//! Decisions written down here, once:
//!
//! - **ECDSA P-256 keys**, which every gRPC stack speaks and `ring` generates fast.
//! - **The CA lives ten years** and is not rotated by the operator; the leaf
//!   certificates live [`DEFAULT_LIFETIME`] (or what `--certificate-lifetime` says) and
//!   are renewed once less than a third of their life is left, so a PEM or Kelvin that
//!   reads its files every few seconds always serves a valid one.
//! - **The PEMs share one certificate** for the name [`pem_server_name`], which every
//!   client asks for: PEM pods have no DNS names of their own, and their IPs change.
//! - **Roles by extended key usage**: the PEMs' certificate is for serving only, so a
//!   PEM (or whoever steals its key) cannot call another PEM as a client.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The Secret, one per namespace, holding every Vizier's CA and certificates there
/// under data keys that start with the Vizier's name. A fixed name, so that the
/// operator's RBAC can read it and no other Secret.
pub const TLS_SECRET: &str = "px-tls";
/// How long a leaf certificate lives unless `--certificate-lifetime` says otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// How long the CA lives.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far back a certificate's validity starts, for nodes whose clocks lag.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The PEMs' serving certificate.
    Pem,
    /// Kelvin's: its public API's serving certificate and its client certificate to the
    /// PEMs.
    Kelvin,
    /// The operator's client certificate to the PEMs (kept in memory only).
    Operator,
}

impl Role {
    /// The data-key part of the role (`<vizier>.<role>.crt`).
    pub fn key(self) -> &'static str {
        match self {
            Role::Pem => "pem",
            Role::Kelvin => "kelvin",
            Role::Operator => "operator",
        }
    }
}

/// A key pair and its certificate, in PEM, and when it expires (Unix seconds).
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// The end of its validity, in seconds since the Unix epoch.
    pub not_after: i64,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key: debug output reaches logs.
        f.debug_struct("Issued")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused.
    #[error("cannot make the {what}: {source}")]
    Generate {
        /// Which certificate.
        what: &'static str,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// A time outside what a certificate can say.
    #[error("time {0} is outside what a certificate can hold")]
    Time(i64),
}

/// The name every client of a Vizier's PEMs asks their certificate for.
pub fn pem_server_name(namespace: &str, vizier: &str) -> String {
    format!("{vizier}-pem.{namespace}.svc")
}

/// The names Kelvin's certificate carries: its Service's, in every form a client in
/// the cluster may use, and `localhost` for `kubectl port-forward`.
pub fn kelvin_names(namespace: &str, vizier: &str) -> Vec<String> {
    let service = format!("{vizier}-kelvin");
    vec![
        service.clone(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "localhost".to_string(),
    ]
}

/// A Vizier's CA: its key, and the certificate clients and servers trust.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, in PEM.
    pub cert_pem: String,
    /// The CA's private key, in PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca { .. }")
    }
}

/// The CA's parameters: the same for a new CA and one read back, so that the
/// certificates issued by either name the same issuer.
fn ca_params(namespace: &str, vizier: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "px.dev");
    dn.push(DnType::CommonName, format!("px CA {namespace}/{vizier}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn at(seconds: i64) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| CertError::Time(seconds))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Ca {
    /// A new CA for Vizier `vizier` of `namespace`, valid from `now` (Unix seconds).
    ///
    /// # Errors
    /// When rcgen cannot make it.
    pub fn generate(namespace: &str, vizier: &str, now: i64) -> Result<Self, CertError> {
        let what = "CA";
        let key = KeyPair::generate().map_err(|source| CertError::Generate { what, source })?;
        let mut params = ca_params(namespace, vizier);
        params.not_before = at(now - secs(CLOCK_SKEW))?;
        params.not_after = at(now.saturating_add(secs(CA_LIFETIME)))?;
        let cert = params
            .self_signed(&key)
            .map_err(|source| CertError::Generate { what, source })?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(ca_params(namespace, vizier), key),
        })
    }

    /// The CA this operator made for `vizier` earlier, from its certificate and key.
    /// `None` when the key does not parse (the Secret was edited): the caller makes a
    /// new CA, and every certificate is issued again.
    pub fn read(namespace: &str, vizier: &str, cert_pem: &str, key_pem: &str) -> Option<Self> {
        let key = KeyPair::from_pem(key_pem).ok()?;
        cert_pem.contains("BEGIN CERTIFICATE").then(|| Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer: Issuer::new(ca_params(namespace, vizier), key),
        })
    }

    /// A certificate for `role`, with `names` as its DNS names, valid from `now` for
    /// `lifetime`.
    ///
    /// # Errors
    /// When rcgen cannot make it.
    pub fn issue(
        &self,
        role: Role,
        common_name: &str,
        names: &[String],
        now: i64,
        lifetime: Duration,
    ) -> Result<Issued, CertError> {
        let what = "certificate";
        let key = KeyPair::generate().map_err(|source| CertError::Generate { what, source })?;
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(|source| CertError::Generate { what, source })?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "px.dev");
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match role {
            Role::Pem => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Role::Kelvin => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Operator => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        let not_after = now.saturating_add(secs(lifetime));
        params.not_before = at(now - secs(CLOCK_SKEW))?;
        params.not_after = at(not_after)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| CertError::Generate { what, source })?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
        })
    }
}

/// A new key and a CSR for a client certificate with common name `common_name`, both in
/// PEM, for an issuer the operator does not hold (cert-manager).
///
/// # Errors
/// When rcgen cannot make them.
pub fn client_csr(common_name: &str) -> Result<(String, String), CertError> {
    let what = "certificate signing request";
    let key = KeyPair::generate().map_err(|source| CertError::Generate { what, source })?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "px.dev");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|source| CertError::Generate { what, source })?;
    Ok((key.serialize_pem(), csr))
}

/// When a certificate that expires at `not_after` and lives `lifetime` is renewed:
/// once less than a third of its life is left.
pub fn renew_at(not_after: i64, lifetime: Duration) -> i64 {
    not_after - secs(lifetime) / 3
}

/// Parses a lifetime as `--certificate-lifetime` takes it: a number of seconds, or a
/// number followed by `s`, `m`, `h` or `d`.
///
/// # Errors
/// When it is not one, or shorter than a minute (renewal would never rest).
pub fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a lifetime; write it like 90d, 12h or 3600"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    let lifetime = Duration::from_secs(n.saturating_mul(unit));
    if lifetime < Duration::from_secs(60) {
        return Err(format!(
            "{text:?} is too short: a certificate must live at least a minute"
        ));
    }
    Ok(lifetime)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    const NOW: i64 = 1_800_000_000;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// Verifies `leaf` as webpki (hence rustls, hence tonic) does, for a server name or
    /// as a client.
    fn verify(ca: &str, leaf: &str, server: Option<&str>, at: i64) -> Result<(), String> {
        let ca_der = der(ca);
        let anchor = webpki::anchor_from_trusted_cert(&ca_der).map_err(|e| e.to_string())?;
        let leaf_der = der(leaf);
        let cert = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| e.to_string())?;
        let time = UnixTime::since_unix_epoch(Duration::from_secs(at.try_into().unwrap()));
        let usage = if server.is_some() {
            webpki::KeyUsage::server_auth()
        } else {
            webpki::KeyUsage::client_auth()
        };
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            time,
            usage,
            None,
            None,
        )
        .map_err(|e| e.to_string())?;
        if let Some(name) = server {
            cert.verify_is_valid_for_subject_name(&ServerName::try_from(name).unwrap())
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    #[test]
    fn each_role_is_trusted_for_what_it_does_and_nothing_else() {
        let ca = Ca::generate("pl", "pixie", NOW).unwrap();
        let day = Duration::from_secs(86_400);
        let pem_name = pem_server_name("pl", "pixie");
        let pem = ca
            .issue(
                Role::Pem,
                "vizier-pem",
                std::slice::from_ref(&pem_name),
                NOW,
                day,
            )
            .unwrap();
        let kelvin = ca
            .issue(
                Role::Kelvin,
                "kelvin",
                &kelvin_names("pl", "pixie"),
                NOW,
                day,
            )
            .unwrap();
        let operator = ca
            .issue(Role::Operator, "px-operator", &[], NOW, day)
            .unwrap();

        assert_eq!(
            verify(&ca.cert_pem, &pem.cert_pem, Some(&pem_name), NOW),
            Ok(())
        );
        for name in [
            "pixie-kelvin.pl.svc",
            "pixie-kelvin.pl.svc.cluster.local",
            "localhost",
        ] {
            assert_eq!(
                verify(&ca.cert_pem, &kelvin.cert_pem, Some(name), NOW),
                Ok(()),
                "{name}"
            );
        }
        assert_eq!(verify(&ca.cert_pem, &kelvin.cert_pem, None, NOW), Ok(()));
        assert_eq!(verify(&ca.cert_pem, &operator.cert_pem, None, NOW), Ok(()));
        // A PEM's certificate is no client's; the operator's serves nothing; Kelvin's
        // is not the PEMs'.
        assert!(verify(&ca.cert_pem, &pem.cert_pem, None, NOW).is_err());
        assert!(verify(&ca.cert_pem, &operator.cert_pem, Some(&pem_name), NOW).is_err());
        assert!(verify(&ca.cert_pem, &kelvin.cert_pem, Some(&pem_name), NOW).is_err());
        // Expired a day later; another Vizier's CA trusts none of them.
        assert!(verify(&ca.cert_pem, &pem.cert_pem, Some(&pem_name), NOW + 86_401).is_err());
        let other = Ca::generate("pl", "other", NOW).unwrap();
        assert!(verify(&other.cert_pem, &pem.cert_pem, Some(&pem_name), NOW).is_err());
        assert_eq!(pem.not_after, NOW + 86_400);
    }

    #[test]
    fn a_ca_read_back_issues_certificates_its_certificate_verifies() {
        let ca = Ca::generate("pl", "pixie", NOW).unwrap();
        let again = Ca::read("pl", "pixie", &ca.cert_pem, &ca.key_pem).unwrap();
        let name = pem_server_name("pl", "pixie");
        let pem = again
            .issue(
                Role::Pem,
                "vizier-pem",
                std::slice::from_ref(&name),
                NOW,
                DEFAULT_LIFETIME,
            )
            .unwrap();
        assert_eq!(
            verify(&ca.cert_pem, &pem.cert_pem, Some(&name), NOW),
            Ok(())
        );
        assert!(Ca::read("pl", "pixie", &ca.cert_pem, "not a key").is_none());
        assert!(format!("{ca:?} {pem:?}").find("PRIVATE").is_none());
    }

    #[test]
    fn renewal_comes_with_a_third_of_the_life_left_and_lifetimes_parse() {
        let day = Duration::from_secs(86_400);
        assert_eq!(renew_at(NOW + 3 * 86_400, 3 * day), NOW + 2 * 86_400);
        assert_eq!(parse_lifetime("90d"), Ok(DEFAULT_LIFETIME));
        assert_eq!(parse_lifetime("120"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_lifetime("2h"), Ok(Duration::from_secs(7200)));
        assert!(
            parse_lifetime("30s")
                .unwrap_err()
                .contains("at least a minute")
        );
        assert!(parse_lifetime("3w").unwrap_err().contains("unit"));
        assert!(parse_lifetime("soon").unwrap_err().contains("like 90d"));
    }
}
