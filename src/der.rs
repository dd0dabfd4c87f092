//! A minimal, strict DER reader: just enough TLV walking to parse CRLs, OCSP responses (and a
//! SPKI) in one pass without allocating per entry. Definite lengths only, single-byte tags
//! only. Plus [`tlv`], the one DER writer (OCSP requests, test CRLs).

use std::fmt;

pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const OID: u8 = 0x06;
pub const ENUMERATED: u8 = 0x0a;
pub const BOOLEAN: u8 = 0x01;
pub const UTC_TIME: u8 = 0x17;
pub const GENERALIZED_TIME: u8 = 0x18;
pub const SEQUENCE: u8 = 0x30;
/// `[0]` constructed, context-specific (explicit tagging).
pub const CONTEXT_0: u8 = 0xa0;

/// A DER decoding error, with what was being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerError(pub &'static str);

impl fmt::Display for DerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed DER: {}", self.0)
    }
}

impl std::error::Error for DerError {}

/// Reads consecutive TLVs from a byte slice.
#[derive(Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
}

/// One TLV: its tag, value bytes, and the whole encoding (tag + length + value).
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
    pub full: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn peek_tag(&self) -> Option<u8> {
        self.data.first().copied()
    }

    /// Reads the next TLV, whatever its tag.
    pub fn any(&mut self, what: &'static str) -> Result<Tlv<'a>, DerError> {
        let d = self.data;
        let (&tag, rest) = d.split_first().ok_or(DerError(what))?;
        if tag & 0x1f == 0x1f {
            return Err(DerError(what));
        }
        let (&first, rest) = rest.split_first().ok_or(DerError(what))?;
        let (len, rest) = match first {
            n if n < 0x80 => (n as usize, rest),
            0x81..=0x84 => {
                let n = (first & 0x7f) as usize;
                if rest.len() < n {
                    return Err(DerError(what));
                }
                let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
                // DER: the shortest length form.
                if rest[0] == 0 || len < 0x80 {
                    return Err(DerError(what));
                }
                (len, &rest[n..])
            }
            _ => return Err(DerError(what)),
        };
        if rest.len() < len {
            return Err(DerError(what));
        }
        let header = d.len() - rest.len();
        let full = &d[..header + len];
        self.data = &rest[len..];
        Ok(Tlv { tag, value: &rest[..len], full })
    }

    /// Reads the next TLV and requires its tag.
    pub fn expect(&mut self, tag: u8, what: &'static str) -> Result<Tlv<'a>, DerError> {
        let t = self.any(what)?;
        if t.tag != tag {
            return Err(DerError(what));
        }
        Ok(t)
    }

    /// Reads the next TLV only if it has this tag.
    pub fn optional(&mut self, tag: u8, what: &'static str) -> Result<Option<Tlv<'a>>, DerError> {
        if self.peek_tag() == Some(tag) { self.expect(tag, what).map(Some) } else { Ok(None) }
    }
}

/// A DER TLV with a definite length (shortest form).
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// Parses a UTCTime or GeneralizedTime (the `Z` forms RFC 5280 requires) into Unix seconds.
pub fn time(t: &Tlv<'_>) -> Result<i64, DerError> {
    let s = t.value;
    let (year, rest) = match (t.tag, s.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(&s[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&s[..4])?, &s[4..]),
        _ => return Err(DerError("time")),
    };
    if rest[10] != b'Z' {
        return Err(DerError("time zone (must be Z)"));
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let hour = digits(&rest[4..6])?;
    let min = digits(&rest[6..8])?;
    let sec = digits(&rest[8..10])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return Err(DerError("time field out of range"));
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec)
}

fn digits(b: &[u8]) -> Result<i64, DerError> {
    b.iter().try_fold(0i64, |acc, c| {
        if c.is_ascii_digit() { Ok(acc * 10 + i64::from(c - b'0')) } else { Err(DerError("time digits")) }
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A SubjectPublicKeyInfo split into its algorithm (AlgorithmIdentifier contents) and key bits.
pub fn spki(spki_der: &[u8]) -> Result<(&[u8], &[u8]), DerError> {
    let outer = Reader::new(spki_der).expect(SEQUENCE, "SubjectPublicKeyInfo")?;
    let mut r = Reader::new(outer.value);
    let alg = r.expect(SEQUENCE, "SubjectPublicKeyInfo algorithm")?;
    let key = r.expect(BIT_STRING, "SubjectPublicKeyInfo key")?;
    match key.value.split_first() {
        Some((0, bits)) => Ok((alg.value, bits)),
        _ => Err(DerError("SubjectPublicKeyInfo key bits")),
    }
}

/// Why [`verify_signed`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    Der(DerError),
    /// No supported algorithm matches the signature algorithm and the key's type.
    Unsupported,
    /// The signature does not verify.
    Bad,
}

/// Verifies `signature` over `message` with the key of `spki_der` (full SubjectPublicKeyInfo),
/// by the algorithm whose AlgorithmIdentifier contents are `sig_alg`: the one signature check
/// of CRLs, OCSP responses and certificates read here.
pub fn verify_signed(
    spki_der: &[u8],
    sig_alg: &[u8],
    message: &[u8],
    signature: &[u8],
    algs: &rustls::crypto::WebPkiSupportedAlgorithms,
) -> Result<(), SignatureError> {
    let (key_alg, key) = spki(spki_der).map_err(SignatureError::Der)?;
    let mut candidates = algs
        .all
        .iter()
        .filter(|a| a.signature_alg_id().as_ref() == sig_alg && a.public_key_alg_id().as_ref() == key_alg)
        .peekable();
    if candidates.peek().is_none() {
        return Err(SignatureError::Unsupported);
    }
    if candidates.any(|a| a.verify_signature(key, message, signature).is_ok()) {
        Ok(())
    } else {
        Err(SignatureError::Bad)
    }
}

/// One Extension: (extnID contents, critical, extnValue contents).
pub fn extension<'a>(r: &mut Reader<'a>) -> Result<(&'a [u8], bool, &'a [u8]), DerError> {
    let ext = r.expect(SEQUENCE, "Extension")?;
    let mut e = Reader::new(ext.value);
    let oid = e.expect(OID, "extnID")?.value;
    let critical = match e.optional(BOOLEAN, "critical")? {
        Some(b) => b.value == [0xff],
        None => false,
    };
    let value = e.expect(OCTET_STRING, "extnValue")?.value;
    if !e.is_empty() {
        return Err(DerError("trailing data in Extension"));
    }
    Ok((oid, critical, value))
}

const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_DSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01];

/// Why the crypto library (ring, through rustls) cannot use this public key at all, if that
/// is the case: RSA keys outside 2048–8192 bits, DSA keys. Lets errors say "unsupported"
/// instead of sending an operator hunting for a corrupt CRL.
pub fn unsupported_key(spki_der: &[u8]) -> Option<String> {
    let (alg, key) = spki(spki_der).ok()?;
    let oid = Reader::new(alg).expect(OID, "algorithm").ok()?.value;
    if oid == OID_DSA {
        return Some("DSA keys are not supported by the crypto library (ring); re-key the CA with RSA or ECDSA".into());
    }
    if oid != OID_RSA_ENCRYPTION {
        return None;
    }
    let seq = Reader::new(key).expect(SEQUENCE, "RSAPublicKey").ok()?;
    let modulus = Reader::new(seq.value).expect(INTEGER, "modulus").ok()?.value;
    let modulus = &modulus[modulus.iter().position(|b| *b != 0).unwrap_or(modulus.len())..];
    let bits = modulus.first().map_or(0, |b| modulus.len() * 8 - b.leading_zeros() as usize);
    (!(2048..=8192).contains(&bits)).then(|| {
        format!(
            "an RSA key of {bits} bits; the crypto library (ring) verifies RSA signatures only with keys of 2048 to              8192 bits"
        )
    })
}

/// A signature AlgorithmIdentifier's contents by name (dotted OID when unknown), for messages.
pub fn algorithm_name(alg: &[u8]) -> String {
    let Ok(oid) = Reader::new(alg).expect(OID, "algorithm") else { return "<malformed>".into() };
    let rsa = |n: u8| [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, n];
    let ecdsa = |n: u8| [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, n];
    let known: [(&[u8], &str); 11] = [
        (&rsa(4), "md5WithRSAEncryption"),
        (&rsa(5), "sha1WithRSAEncryption (SHA-1, refused by the crypto library)"),
        (&rsa(10), "RSASSA-PSS"),
        (&rsa(11), "sha256WithRSAEncryption"),
        (&rsa(12), "sha384WithRSAEncryption"),
        (&rsa(13), "sha512WithRSAEncryption"),
        (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01], "ecdsa-with-SHA1 (SHA-1, refused by the crypto library)"),
        (&ecdsa(2), "ecdsa-with-SHA256"),
        (&ecdsa(3), "ecdsa-with-SHA384"),
        (&ecdsa(4), "ecdsa-with-SHA512"),
        (&[0x2b, 0x65, 0x70], "Ed25519"),
    ];
    match known.iter().find(|(o, _)| *o == oid.value) {
        Some((_, name)) => (*name).into(),
        None => oid_string(oid.value),
    }
}

/// Dotted form of an OID's contents, for messages.
pub fn oid_string(oid: &[u8]) -> String {
    let mut parts = Vec::new();
    if let Some((&first, rest)) = oid.split_first() {
        parts.push(u64::from(first / 40).min(2));
        parts.push(u64::from(first) - 40 * parts[0]);
        let mut acc = 0u64;
        for b in rest {
            acc = (acc << 7) | u64::from(b & 0x7f);
            if b & 0x80 == 0 {
                parts.push(acc);
                acc = 0;
            }
        }
    }
    parts.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths() {
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        long.extend([0x02, 0x01, 0x05]);
        let mut r = Reader::new(&long);
        let t = r.expect(OCTET_STRING, "x").unwrap();
        assert_eq!(t.value.len(), 0x80);
        assert_eq!(r.expect(INTEGER, "y").unwrap().value, &[5]);
        assert!(r.is_empty());
    }

    #[test]
    fn tlv_round_trips_short_and_long_lengths() {
        for len in [0usize, 1, 0x7f, 0x80, 0xff, 0x100, 70_000] {
            let content = vec![0x5a; len];
            let encoded = tlv(OCTET_STRING, &content);
            let mut r = Reader::new(&encoded);
            assert_eq!(r.expect(OCTET_STRING, "x").unwrap().value, &content[..], "length {len}");
            assert!(r.is_empty());
        }
    }

    #[test]
    fn rejects_non_der() {
        assert!(Reader::new(&[0x04, 0x80, 0x00, 0x00]).any("indef").is_err());
        assert!(Reader::new(&[0x04, 0x81, 0x05, 1, 2, 3, 4, 5]).any("long form for short").is_err());
        assert!(Reader::new(&[0x04, 0x05, 1, 2]).any("truncated").is_err());
        assert!(Reader::new(&[0x1f, 0x01, 0x00]).any("multi-byte tag").is_err());
        assert!(Reader::new(&[]).any("empty").is_err());
    }

    #[test]
    fn parses_times() {
        let utc = Tlv { tag: UTC_TIME, value: b"700101000000Z", full: &[] };
        assert_eq!(time(&utc).unwrap(), 0);
        let utc = Tlv { tag: UTC_TIME, value: b"491231235959Z", full: &[] };
        assert_eq!(time(&utc).unwrap(), 2_524_607_999);
        let generalized = Tlv { tag: GENERALIZED_TIME, value: b"20261123101500Z", full: &[] };
        assert_eq!(time(&generalized).unwrap(), 1_795_428_900);
        let bad = Tlv { tag: GENERALIZED_TIME, value: b"20261123101500+", full: &[] };
        assert!(time(&bad).is_err());
        let bad = Tlv { tag: UTC_TIME, value: b"7001010000Z", full: &[] };
        assert!(time(&bad).is_err());
    }
}
