//! TLS for the HTTP API (`[http] tls_cert`, `tls_key`) and the embedded broker's second
//! listener (`[broker] tls_listen`, `tls_cert`, `tls_key`, optional `tls_client_ca` for devices
//! that authenticate with a certificate): rustls with the aws-lc-rs provider, PEM files read
//! and checked at start so that a missing or wrong file is refused naming its key.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

use crate::settings::{Invalid, invalid};

/// A PEM file named by a configuration key (`http.tls_cert`).
#[derive(Debug, Clone, Copy)]
pub struct PemFile<'a> {
    /// The configuration key, for errors.
    pub key: &'a str,
    /// The file.
    pub path: &'a Path,
}

impl<'a> PemFile<'a> {
    /// `path` as set by `key`.
    pub fn new(key: &'a str, path: &'a Path) -> Self {
        Self { key, path }
    }

    fn invalid(&self, allowed: impl Into<String>) -> Invalid {
        invalid(self.key, self.path.display(), allowed)
    }

    fn read(&self, what: &str) -> Result<Vec<u8>, Invalid> {
        std::fs::read(self.path).map_err(|e| {
            self.invalid(format!(
                "a readable PEM file with {what} (cannot read it: {e})"
            ))
        })
    }

    /// The certificates in the file, in order (at least one).
    fn certificates(&self, what: &str) -> Result<Vec<CertificateDer<'static>>, Invalid> {
        let pem = self.read(what)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.invalid(format!("a PEM file with {what} (unreadable PEM: {e})")))?;
        if certs.is_empty() {
            return Err(self.invalid(format!(
                "a PEM file with {what} (no CERTIFICATE block in it)"
            )));
        }
        for (i, c) in certs.iter().enumerate() {
            if let Err(e) = webpki::EndEntityCert::try_from(c) {
                return Err(self.invalid(format!(
                    "a PEM file with {what} (certificate {} is not valid X.509: {e})",
                    i + 1
                )));
            }
        }
        Ok(certs)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, Invalid> {
        const WHAT: &str = "the private key (PKCS#8, PKCS#1 or SEC1)";
        let pem = self.read(WHAT)?;
        PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| self.invalid(format!("a PEM file with {WHAT} ({e})")))
    }
}

/// The TLS files of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ServerFiles<'a> {
    /// The certificate chain, the server's own certificate first.
    pub cert: PemFile<'a>,
    /// Its private key.
    pub key: PemFile<'a>,
    /// Clients must present a certificate signed by one of these CAs (mutual TLS).
    pub client_ca: Option<PemFile<'a>>,
    /// ALPN protocols offered, in preference order (empty: none negotiated).
    pub alpn: &'a [&'a [u8]],
}

/// Read and check the files, and build the server configuration. Every error names the key of
/// the file at fault.
pub fn server_config(files: ServerFiles<'_>) -> Result<Arc<ServerConfig>, Invalid> {
    let chain = files.cert.certificates("the certificate chain")?;
    let key = files.key.private_key()?;
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| files.cert.invalid(format!("a usable TLS setup ({e})")))?;
    let builder = match files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let what = "the CA certificate(s) that sign client certificates";
            let mut roots = RootCertStore::empty();
            for c in ca.certificates(what)? {
                roots
                    .add(c)
                    .map_err(|e| ca.invalid(format!("a PEM file with {what} ({e})")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca.invalid(format!("a PEM file with {what} ({e})")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => files.key.invalid(format!(
            "the private key of the certificate in {} ({e})",
            files.cert.key
        )),
        e => files.key.invalid(format!(
            "a private key usable with the certificate in {} ({e})",
            files.cert.key
        )),
    })?;
    config.alpn_protocols = files.alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The name a client certificate stands for: its subject's common name (CN), or, without one,
/// its first DNS subject alternative name. `None` when it has neither (or does not parse).
pub fn certificate_name(cert: &CertificateDer<'_>) -> Option<String> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    common_name(ee.subject()).or_else(|| ee.valid_dns_names().next().map(str::to_owned))
}

/// One DER element of `input`: its tag, its content and what follows it.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

/// The first common name (OID 2.5.4.3) in a DER `Name`'s content (the RDN sequence without
/// its outer SEQUENCE header, as webpki gives it).
fn common_name(subject: &[u8]) -> Option<String> {
    const SET: u8 = 0x31;
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (tag, set, rest) = der_next(rdns)?;
        rdns = rest;
        if tag != SET {
            return None;
        }
        let mut attributes = set;
        while !attributes.is_empty() {
            let (tag, attribute, rest) = der_next(attributes)?;
            attributes = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = der_next(attribute)?;
            if tag == OID && oid == CN {
                let (tag, text, _) = der_next(value)?;
                return match tag {
                    // UTF8String, PrintableString, TeletexString (ASCII in practice), IA5String.
                    0x0c | 0x13 | 0x14 | 0x16 => std::str::from_utf8(text).ok().map(str::to_owned),
                    // BMPString: UTF-16 big-endian.
                    0x1e if text.len() % 2 == 0 => {
                        let units: Vec<u16> = text
                            .chunks_exact(2)
                            .map(|c| u16::from_be_bytes([c[0], c[1]]))
                            .collect();
                        String::from_utf16(&units).ok()
                    }
                    _ => None,
                };
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walker_refuses_truncated_input() {
        assert_eq!(der_next(&[]), None);
        assert_eq!(der_next(&[0x30]), None);
        assert_eq!(der_next(&[0x30, 0x05, 0x00]), None);
        assert_eq!(der_next(&[0x30, 0x85, 0, 0, 0, 0, 1]), None);
        assert_eq!(der_next(&[0x30, 0x81]), None);
        assert_eq!(
            der_next(&[0x04, 0x01, 0xaa, 0xbb]),
            Some((0x04, &[0xaa][..], &[0xbb][..]))
        );
        // A name whose attribute is cut short has no common name (and does not panic).
        assert_eq!(
            common_name(&[0x31, 0x05, 0x30, 0x03, 0x06, 0x03, 0x55]),
            None
        );
    }

    #[test]
    fn common_name_is_found_among_other_attributes() {
        // O=City, CN=BN-1 (PrintableString), then CN=other (UTF8String): the first CN wins.
        let name = [
            0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x04, b'C', b'i', b't',
            b'y', 0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x13, 0x04, b'B', b'N',
            b'-', b'1', 0x31, 0x0e, 0x30, 0x0c, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x05, b'o',
            b't', b'h', b'e', b'r',
        ];
        assert_eq!(common_name(&name).as_deref(), Some("BN-1"));
        assert_eq!(common_name(&name[..15]), None);
    }
}
