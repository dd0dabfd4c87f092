//! Parsing one CRL (v1 or v2, RFC 5280 §5) in a single pass over its DER, and verifying its
//! signature against a CA's public key. Entries are walked lazily, so a 1,000,000-entry
//! CRL is never materialised as a million parsed structs.

use rustls::crypto::WebPkiSupportedAlgorithms;

use crate::der::{self, DerError, Reader, Tlv, oid_string};

const OID_CRL_NUMBER: &[u8] = &[0x55, 0x1d, 0x14];
const OID_REASON_CODE: &[u8] = &[0x55, 0x1d, 0x15];
const OID_INVALIDITY_DATE: &[u8] = &[0x55, 0x1d, 0x18];
const OID_DELTA_CRL_INDICATOR: &[u8] = &[0x55, 0x1d, 0x1b];
const OID_ISSUING_DISTRIBUTION_POINT: &[u8] = &[0x55, 0x1d, 0x1c];
const OID_CERTIFICATE_ISSUER: &[u8] = &[0x55, 0x1d, 0x1d];
const OID_AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1d, 0x23];
const OID_FRESHEST_CRL: &[u8] = &[0x55, 0x1d, 0x2e];
const OID_AUTHORITY_INFO_ACCESS: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01];

/// Why a CRL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error("{0}")]
    Der(#[from] DerError),
    #[error("unsupported CRL version {0}")]
    Version(u8),
    #[error("the inner and outer signature algorithms differ")]
    AlgorithmMismatch,
    #[error("unsupported critical CRL extension {0}")]
    UnsupportedCriticalExtension(String),
    #[error(
        "an entry names a certificateIssuer, but the CRL is not indirect (its issuingDistributionPoint lacks indirectCRL)"
    )]
    EntryIssuerInDirectCrl,
    #[error("the signature algorithm {0} is not supported with the signer's key")]
    UnsupportedAlgorithm(String),
    #[error("the signer's key is not supported: {0}")]
    UnsupportedKey(String),
    #[error("signature does not verify against the CA's public key")]
    BadSignature,
}

/// One revoked certificate, borrowed from the CRL's DER.
#[derive(Debug, Clone, Copy)]
pub struct RawEntry<'a> {
    /// INTEGER contents in minimal form (see [`normalize_serial`]).
    pub serial: &'a [u8],
    pub revoked_at: i64,
    /// RFC 5280 CRLReason code, if the entry carries one.
    pub reason: Option<u8>,
    /// In an indirect CRL: the GeneralNames contents of the certificateIssuer in force for
    /// this entry (RFC 5280 §5.3.3: it carries over to the following entries); `None` means
    /// the CRL's own issuer.
    pub issuer: Option<&'a [u8]>,
}

/// The reasons a CRL or distribution point covers, as ReasonFlags bits (bit 1 keyCompromise
/// ... bit 8 aACompromise, RFC 5280 §4.2.1.13); bit 0 is unused.
pub type Reasons = u16;

/// Every reason: what a CRL without onlySomeReasons (and a distribution point without
/// reasons) covers.
pub const ALL_REASONS: Reasons = 0x1fe;

/// Reads a ReasonFlags BIT STRING's contents.
pub fn reason_flags(bits: &[u8]) -> Result<Reasons, DerError> {
    let Some((&unused, bytes)) = bits.split_first() else { return Err(DerError("ReasonFlags")) };
    if unused > 7 || bytes.len() > 2 || (bytes.is_empty() && unused != 0) {
        return Err(DerError("ReasonFlags"));
    }
    let mut mask: Reasons = 0;
    for bit in 0..(bytes.len() * 8) {
        if bytes[bit / 8] & (0x80 >> (bit % 8)) != 0 {
            mask |= 1 << bit;
        }
    }
    Ok(mask & ALL_REASONS)
}

/// The names of the reasons in a mask, for messages.
pub fn reason_names(mask: Reasons) -> String {
    if mask == ALL_REASONS {
        return "all reasons".into();
    }
    let names: Vec<&str> =
        (1..=8u8).filter(|b| mask & (1 << b) != 0).map(|b| reason_name(Some(flag_code(b)))).collect();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

/// The CRLReason code of a ReasonFlags bit (they differ after certificateHold: there is
/// no bit for removeFromCRL, code 8).
fn flag_code(bit: u8) -> u8 {
    match bit {
        7 => 9,
        8 => 10,
        b => b,
    }
}

/// A CRL's issuingDistributionPoint (RFC 5280 §5.2.5): which certificates it covers.
#[derive(Debug, Clone, Default)]
pub struct Idp<'a> {
    /// The whole extension value, to tell scopes apart (a delta must have its base's).
    pub raw: &'a [u8],
    /// `distributionPoint`: the DistributionPointName's encoding (fullName `[0]` or
    /// nameRelativeToCRLIssuer `[1]`), if present.
    pub name: Option<der::Tlv<'a>>,
    pub only_user: bool,
    pub only_ca: bool,
    /// `onlySomeReasons`, when present.
    pub reasons: Option<Reasons>,
    pub indirect: bool,
    pub only_attribute: bool,
}

/// A CRL's envelope, parsed; entries are read on demand with [`ParsedCrl::entries`].
#[derive(Debug)]
pub struct ParsedCrl<'a> {
    /// 1 or 2.
    pub version: u8,
    /// `TBSCertList`, the signed bytes.
    tbs: &'a [u8],
    /// Contents of the signature AlgorithmIdentifier.
    sig_alg: &'a [u8],
    signature: &'a [u8],
    /// Issuer Name contents (without the outer SEQUENCE header).
    pub issuer: &'a [u8],
    /// The full issuer Name encoding.
    pub issuer_der: &'a [u8],
    pub this_update: i64,
    pub next_update: Option<i64>,
    /// CRL number INTEGER contents, normalised.
    pub crl_number: Option<&'a [u8]>,
    /// For a delta CRL (RFC 5280 §5.2.4): the BaseCRLNumber it applies to, normalised.
    pub delta_base: Option<&'a [u8]>,
    /// The issuingDistributionPoint, if the CRL has one.
    pub idp: Option<Idp<'a>>,
    /// authorityKeyIdentifier's keyIdentifier, a hint to which key signed it.
    pub authority_key_id: Option<&'a [u8]>,
    revoked: &'a [u8],
}

/// The minimal two's-complement form of an INTEGER's contents: redundant leading `00`
/// (before an octet below 0x80) and `ff` (before one at or above 0x80) octets removed, so
/// that a serial compares equal however a CA padded it, and the sign is kept: `00 ff` is
/// +255, `ff` is −1.
pub fn normalize_serial(s: &[u8]) -> &[u8] {
    let mut s = s;
    while let [first, second, ..] = s {
        let redundant = (*first == 0x00 && *second < 0x80) || (*first == 0xff && *second >= 0x80);
        if !redundant {
            break;
        }
        s = &s[1..];
    }
    s
}

impl<'a> ParsedCrl<'a> {
    /// Parses the CRL envelope and its extensions. Entries are checked by [`Self::entries`].
    pub fn parse(der_bytes: &'a [u8]) -> Result<Self, CrlError> {
        let mut outer = Reader::new(der_bytes);
        let list = outer.expect(der::SEQUENCE, "CertificateList")?;
        if !outer.is_empty() {
            return Err(DerError("trailing data after CertificateList").into());
        }
        let mut r = Reader::new(list.value);
        let tbs = r.expect(der::SEQUENCE, "tbsCertList")?;
        let sig_alg = r.expect(der::SEQUENCE, "signatureAlgorithm")?;
        let sig = r.expect(der::BIT_STRING, "signatureValue")?;
        if !r.is_empty() {
            return Err(DerError("trailing data in CertificateList").into());
        }
        let signature = match sig.value.split_first() {
            Some((0, bits)) => bits,
            _ => return Err(DerError("signatureValue unused bits").into()),
        };

        let mut t = Reader::new(tbs.value);
        let version = match t.optional(der::INTEGER, "version")? {
            None => 1,
            Some(v) if v.value == [1] => 2,
            Some(v) if v.value == [0] => return Err(CrlError::Version(1)),
            Some(v) => return Err(CrlError::Version(v.value.first().copied().unwrap_or(0).saturating_add(1))),
        };
        let inner_alg = t.expect(der::SEQUENCE, "signature")?;
        if inner_alg.value != sig_alg.value {
            return Err(CrlError::AlgorithmMismatch);
        }
        let issuer = t.expect(der::SEQUENCE, "issuer")?;
        let this_update = der::time(&read_time(&mut t, "thisUpdate")?)?;
        let next_update = match t.peek_tag() {
            Some(der::UTC_TIME | der::GENERALIZED_TIME) => Some(der::time(&read_time(&mut t, "nextUpdate")?)?),
            _ => None,
        };
        let revoked = t.optional(der::SEQUENCE, "revokedCertificates")?.map_or(&[][..], |s| s.value);
        let mut crl = ParsedCrl {
            version,
            tbs: tbs.full,
            sig_alg: sig_alg.value,
            signature,
            issuer: issuer.value,
            issuer_der: issuer.full,
            this_update,
            next_update,
            crl_number: None,
            delta_base: None,
            idp: None,
            authority_key_id: None,
            revoked,
        };
        if let Some(exts) = t.optional(der::CONTEXT_0, "crlExtensions")? {
            if version == 1 {
                return Err(DerError("extensions in a v1 CRL").into());
            }
            crl.read_extensions(exts.value)?;
        }
        if !t.is_empty() {
            return Err(DerError("trailing data in tbsCertList").into());
        }
        Ok(crl)
    }

    fn read_extensions(&mut self, explicit: &'a [u8]) -> Result<(), CrlError> {
        let mut wrapper = Reader::new(explicit);
        let seq = wrapper.expect(der::SEQUENCE, "crlExtensions")?;
        let mut exts = Reader::new(seq.value);
        while !exts.is_empty() {
            let (oid, critical, value) = der::extension(&mut exts)?;
            match oid {
                OID_CRL_NUMBER => {
                    let n = Reader::new(value).expect(der::INTEGER, "cRLNumber")?;
                    self.crl_number = Some(normalize_serial(n.value));
                }
                OID_DELTA_CRL_INDICATOR => {
                    let n = Reader::new(value).expect(der::INTEGER, "BaseCRLNumber")?;
                    self.delta_base = Some(normalize_serial(n.value));
                }
                OID_ISSUING_DISTRIBUTION_POINT => self.idp = Some(read_idp(value)?),
                OID_AUTHORITY_KEY_ID => {
                    let seq = Reader::new(value).expect(der::SEQUENCE, "authorityKeyIdentifier")?;
                    self.authority_key_id = Reader::new(seq.value).optional(0x80, "keyIdentifier")?.map(|k| k.value);
                }
                OID_FRESHEST_CRL | OID_AUTHORITY_INFO_ACCESS => {}
                other if critical => return Err(CrlError::UnsupportedCriticalExtension(oid_string(other))),
                _ => {}
            }
        }
        Ok(())
    }

    /// Verifies the CRL's signature with the CA's SubjectPublicKeyInfo (full DER).
    pub fn verify_signature(&self, ca_spki_der: &[u8], algs: &WebPkiSupportedAlgorithms) -> Result<(), CrlError> {
        der::verify_signed(ca_spki_der, self.sig_alg, self.tbs, self.signature, algs).map_err(|e| match e {
            der::SignatureError::Der(e) => e.into(),
            der::SignatureError::Unsupported => match der::unsupported_key(ca_spki_der) {
                Some(why) => CrlError::UnsupportedKey(why),
                None => CrlError::UnsupportedAlgorithm(der::algorithm_name(self.sig_alg)),
            },
            der::SignatureError::Bad => match der::unsupported_key(ca_spki_der) {
                Some(why) => CrlError::UnsupportedKey(why),
                None => CrlError::BadSignature,
            },
        })
    }

    /// An upper bound on the number of entries, for pre-allocation (entries are ≥ 20 bytes).
    pub fn entries_hint(&self) -> usize {
        self.revoked.len() / 20
    }

    /// The revoked certificates, in CRL order. Ends after the first malformed entry (the
    /// reader cannot resynchronise past it), which it yields as an error.
    pub fn entries(&self) -> impl Iterator<Item = Result<RawEntry<'a>, CrlError>> + 'a {
        let mut r = Reader::new(self.revoked);
        let v2 = self.version == 2;
        let indirect = self.idp.as_ref().is_some_and(|i| i.indirect);
        let mut issuer = None;
        let mut failed = false;
        std::iter::from_fn(move || {
            if r.is_empty() || failed {
                return None;
            }
            let e = entry(&mut r, v2, indirect, &mut issuer);
            failed = e.is_err();
            Some(e)
        })
    }
}

fn read_time<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<Tlv<'a>, DerError> {
    let t = r.any(what)?;
    match t.tag {
        der::UTC_TIME | der::GENERALIZED_TIME => Ok(t),
        _ => Err(DerError(what)),
    }
}

/// issuingDistributionPoint ::= SEQUENCE { distributionPoint [0], onlyContainsUserCerts [1],
/// onlyContainsCACerts [2], onlySomeReasons [3], indirectCRL [4], onlyContainsAttributeCerts [5] }
fn read_idp(value: &[u8]) -> Result<Idp<'_>, CrlError> {
    let seq = Reader::new(value).expect(der::SEQUENCE, "issuingDistributionPoint")?;
    let mut idp = Idp { raw: value, ..Idp::default() };
    let mut r = Reader::new(seq.value);
    while !r.is_empty() {
        let field = r.any("issuingDistributionPoint field")?;
        let set = field.value == [0xff];
        match field.tag {
            0xa0 => {
                let name = Reader::new(field.value).any("distributionPoint name")?;
                if !matches!(name.tag, 0xa0 | 0xa1) {
                    return Err(DerError("distributionPoint name").into());
                }
                idp.name = Some(name);
            }
            0x81 => idp.only_user = set,
            0x82 => idp.only_ca = set,
            0x83 => idp.reasons = Some(reason_flags(field.value)?),
            0x84 => idp.indirect = set,
            0x85 => idp.only_attribute = set,
            _ => return Err(DerError("issuingDistributionPoint field").into()),
        }
    }
    Ok(idp)
}

fn entry<'a>(
    r: &mut Reader<'a>,
    v2: bool,
    indirect: bool,
    issuer: &mut Option<&'a [u8]>,
) -> Result<RawEntry<'a>, CrlError> {
    let seq = r.expect(der::SEQUENCE, "revokedCertificate")?;
    let mut e = Reader::new(seq.value);
    let serial = e.expect(der::INTEGER, "userCertificate")?.value;
    if serial.is_empty() {
        return Err(DerError("empty serial number").into());
    }
    let revoked_at = der::time(&read_time(&mut e, "revocationDate")?)?;
    let mut reason = None;
    if let Some(exts) = e.optional(der::SEQUENCE, "crlEntryExtensions")? {
        if !v2 {
            return Err(DerError("entry extensions in a v1 CRL").into());
        }
        let mut x = Reader::new(exts.value);
        while !x.is_empty() {
            let (oid, critical, value) = der::extension(&mut x)?;
            match oid {
                OID_REASON_CODE => {
                    let code = Reader::new(value).expect(der::ENUMERATED, "reasonCode")?;
                    reason = code.value.last().copied();
                }
                OID_CERTIFICATE_ISSUER if indirect => {
                    *issuer = Some(Reader::new(value).expect(der::SEQUENCE, "certificateIssuer")?.value);
                }
                OID_CERTIFICATE_ISSUER => return Err(CrlError::EntryIssuerInDirectCrl),
                OID_INVALIDITY_DATE => {}
                other if critical => return Err(CrlError::UnsupportedCriticalExtension(oid_string(other))),
                _ => {}
            }
        }
    }
    if !e.is_empty() {
        return Err(DerError("trailing data in revokedCertificate").into());
    }
    Ok(RawEntry { serial: normalize_serial(serial), revoked_at, reason, issuer: *issuer })
}

/// RFC 5280 CRLReason names, for logs.
pub fn reason_name(code: Option<u8>) -> &'static str {
    match code {
        None => "unspecified",
        Some(0) => "unspecified",
        Some(1) => "keyCompromise",
        Some(2) => "cACompromise",
        Some(3) => "affiliationChanged",
        Some(4) => "superseded",
        Some(5) => "cessationOfOperation",
        Some(6) => "certificateHold",
        Some(8) => "removeFromCRL",
        Some(9) => "privilegeWithdrawn",
        Some(10) => "aACompromise",
        Some(_) => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_normalise_as_signed_integers() {
        // +0x8001 needs its leading zero; a redundant one goes.
        assert_eq!(normalize_serial(&[0, 0x80, 1]), &[0, 0x80, 1]);
        assert_eq!(normalize_serial(&[0, 0, 0x80, 1]), &[0, 0x80, 1]);
        assert_eq!(normalize_serial(&[0, 0x7f]), &[0x7f]);
        assert_eq!(normalize_serial(&[0x01]), &[0x01]);
        assert_eq!(normalize_serial(&[0]), &[0]);
        // +255 (00 ff) and -1 (ff) stay distinct; a redundant ff of a negative goes.
        assert_eq!(normalize_serial(&[0, 0xff]), &[0, 0xff]);
        assert_eq!(normalize_serial(&[0xff]), &[0xff]);
        assert_eq!(normalize_serial(&[0xff, 0xff]), &[0xff]);
        assert_eq!(normalize_serial(&[0xff, 0x7f]), &[0xff, 0x7f]);
    }

    #[test]
    fn reason_flags_read_msb_first() {
        // keyCompromise (bit 1) and cACompromise (bit 2): 0b0110_0000, 5 unused bits.
        assert_eq!(reason_flags(&[5, 0x60]).unwrap(), 0b110);
        // aACompromise (bit 8) is the second octet's first bit.
        assert_eq!(reason_flags(&[7, 0x00, 0x80]).unwrap(), 1 << 8);
        assert_eq!(reason_flags(&[1, 0xff, 0x80]).unwrap(), ALL_REASONS);
        assert!(reason_flags(&[]).is_err());
        assert_eq!(reason_names(0b110), "keyCompromise, cACompromise");
        assert_eq!(reason_names(ALL_REASONS & !0b110).split(", ").count(), 6);
    }

    #[test]
    fn oid_strings() {
        assert_eq!(oid_string(OID_CRL_NUMBER), "2.5.29.20");
        assert_eq!(oid_string(OID_AUTHORITY_INFO_ACCESS), "1.3.6.1.5.5.7.1.1");
    }

    #[test]
    fn entries_end_after_a_malformed_one() {
        // Found by the `crl` fuzz target: the reader does not advance past a malformed
        // entry, so the iterator must stop after reporting it instead of repeating it.
        let ca = kube_crl_proxy_testkit::pki::Authority::root("iter-ca");
        let pem = ca.crl(&[], 2, time::Duration::days(1));
        let ders = crate::pem::crls_in("--crl-file", std::path::Path::new("t"), pem.as_bytes()).unwrap();
        let parsed = ParsedCrl::parse(ders[0].as_ref()).unwrap();
        let garbage = ParsedCrl { revoked: &[0x04, 0x00, 0x04, 0x00], ..parsed };
        let items: Vec<_> = garbage.entries().take(10).collect();
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\x30", b"\x30\x03\x30\x01", b"\x30\x00", &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]] {
            assert!(ParsedCrl::parse(bytes).is_err());
        }
    }
}
