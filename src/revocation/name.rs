//! Names compared as RFC 5280 §7.1 says (CRL issuer against CA subject, `cRLIssuer`,
//! `certificateIssuer`, distribution point names): every Name is reduced once to a canonical
//! byte string ([`NameKey`]) in which string attributes are case-folded, insignificant
//! whitespace is removed and PrintableString, UTF8String, IA5String, BMPString and
//! UniversalString of the same text are equal, and the attributes of a multi-valued RDN are
//! in a fixed order. Two names match exactly when their keys are equal, so keys can be
//! hashed. (Chain building stays with rustls-webpki, which matches names byte for byte.)

use crate::der::{self, DerError, Reader};

const SET: u8 = 0x31;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const TELETEX_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const UNIVERSAL_STRING: u8 = 0x1c;
const BMP_STRING: u8 = 0x1e;

/// A Name in canonical form (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameKey(Vec<u8>);

impl NameKey {
    /// The canonical key of a Name (its full DER encoding, SEQUENCE header included).
    pub fn of(name_der: &[u8]) -> Result<Self, DerError> {
        let seq = Reader::new(name_der).expect(der::SEQUENCE, "Name")?;
        Self::of_rdns(seq.value)
    }

    /// The canonical key of a Name given by its RDNSequence contents (no SEQUENCE header).
    pub fn of_rdns(rdns: &[u8]) -> Result<Self, DerError> {
        let mut out = Vec::with_capacity(rdns.len());
        let mut r = Reader::new(rdns);
        while !r.is_empty() {
            let rdn = r.expect(SET, "RelativeDistinguishedName")?;
            push_rdn(&mut out, rdn.value)?;
        }
        Ok(Self(out))
    }

    /// The key of `base` with one more RDN appended (a distribution point's
    /// `nameRelativeToCRLIssuer`: RFC 5280 §4.2.1.13). `rdn_contents` is the SET's contents.
    pub fn with_rdn(&self, rdn_contents: &[u8]) -> Result<Self, DerError> {
        let mut out = self.0.clone();
        push_rdn(&mut out, rdn_contents)?;
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn push_rdn(out: &mut Vec<u8>, rdn_contents: &[u8]) -> Result<(), DerError> {
    let mut avas = Vec::new();
    let mut r = Reader::new(rdn_contents);
    while !r.is_empty() {
        let ava = r.expect(der::SEQUENCE, "AttributeTypeAndValue")?;
        let mut a = Reader::new(ava.value);
        let oid = a.expect(der::OID, "AttributeType")?;
        let value = a.any("AttributeValue")?;
        if !a.is_empty() {
            return Err(DerError("trailing data in AttributeTypeAndValue"));
        }
        let mut key = der::tlv(der::OID, oid.value);
        match text_of(value.tag, value.value) {
            Some(text) => {
                key.push(b'S');
                key.extend(der::tlv(UTF8_STRING, prepare(&text).as_bytes()));
            }
            None => {
                key.push(b'R');
                key.extend_from_slice(value.full);
            }
        }
        avas.push(key);
    }
    if avas.is_empty() {
        return Err(DerError("empty RelativeDistinguishedName"));
    }
    avas.sort();
    out.extend(der::tlv(SET, &avas.concat()));
    Ok(())
}

/// The text of a directory string, or `None` for other values (compared byte for byte).
fn text_of(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        UTF8_STRING | PRINTABLE_STRING | IA5_STRING => std::str::from_utf8(value).ok().map(str::to_owned),
        // T.61 in practice carries Latin-1.
        TELETEX_STRING => Some(value.iter().map(|&b| char::from(b)).collect()),
        BMP_STRING if value.len().is_multiple_of(2) => {
            let units: Vec<u16> = value.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).ok()
        }
        UNIVERSAL_STRING if value.len().is_multiple_of(4) => {
            value.chunks_exact(4).map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))).collect()
        }
        _ => None,
    }
}

/// RFC 4518 string preparation, as far as RFC 5280 §7.1 asks of conforming implementations:
/// case folding, and insignificant space handling (leading and trailing spaces removed,
/// inner runs of white space become one space).
fn prepare(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(char::is_whitespace).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// One GeneralName in comparable form: directory names by their [`NameKey`], DNS names
/// and e-mail addresses lower-cased, everything else (URIs included) byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GeneralNameKey {
    Directory(NameKey),
    Other(u8, Vec<u8>),
}

impl GeneralNameKey {
    /// The directory name, if this is one.
    pub fn directory(&self) -> Option<&NameKey> {
        match self {
            Self::Directory(n) => Some(n),
            Self::Other(..) => None,
        }
    }

    /// A short text for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Directory(_) => "a directory name".into(),
            Self::Other(0x86, uri) => String::from_utf8_lossy(uri).into_owned(),
            Self::Other(tag, v) => format!("name [{}] {}", tag & 0x1f, String::from_utf8_lossy(v)),
        }
    }
}

/// Reads GeneralNames (the contents of the SEQUENCE OF, or of an implicitly tagged one).
pub fn general_names(contents: &[u8]) -> Result<Vec<GeneralNameKey>, DerError> {
    let mut out = Vec::new();
    let mut r = Reader::new(contents);
    while !r.is_empty() {
        let gn = r.any("GeneralName")?;
        out.push(match gn.tag {
            // directoryName [4] EXPLICIT Name
            0xa4 => GeneralNameKey::Directory(NameKey::of(gn.value)?),
            // rfc822Name [1], dNSName [2]: IA5String, case-insensitive
            0x81 | 0x82 => GeneralNameKey::Other(gn.tag, gn.value.to_ascii_lowercase()),
            tag => GeneralNameKey::Other(tag, gn.value.to_vec()),
        });
    }
    Ok(out)
}

/// A Name as RFC 4514-like text, for messages.
pub fn display(name_der: &[u8]) -> String {
    use x509_parser::prelude::FromDer;
    match x509_parser::x509::X509Name::from_der(name_der) {
        Ok((_, n)) => n.to_string(),
        Err(_) => format!("<undecodable name {}>", hex::encode(name_der)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(rdns: &[&[(u8, &[u8])]]) -> Vec<u8> {
        const CN: &[u8] = &[0x55, 0x04, 0x03];
        let rdns: Vec<u8> = rdns
            .iter()
            .flat_map(|avas| {
                let avas: Vec<u8> = avas
                    .iter()
                    .flat_map(|(tag, v)| der::tlv(der::SEQUENCE, &[der::tlv(der::OID, CN), der::tlv(*tag, v)].concat()))
                    .collect();
                der::tlv(SET, &avas)
            })
            .collect();
        der::tlv(der::SEQUENCE, &rdns)
    }

    fn key(rdns: &[&[(u8, &[u8])]]) -> NameKey {
        NameKey::of(&name(rdns)).unwrap()
    }

    #[test]
    fn case_whitespace_and_string_type_are_insignificant() {
        let a = key(&[&[(PRINTABLE_STRING, b"Good CA")]]);
        assert_eq!(a, key(&[&[(UTF8_STRING, b"good ca")]]));
        assert_eq!(a, key(&[&[(PRINTABLE_STRING, b"  Good    CA ")]]));
        assert_eq!(a, key(&[&[(BMP_STRING, &[0, b'G', 0, b'o', 0, b'o', 0, b'd', 0, b' ', 0, b'C', 0, b'A'])]]));
        assert_ne!(a, key(&[&[(PRINTABLE_STRING, b"Good CA2")]]));
        assert_ne!(a, key(&[&[(PRINTABLE_STRING, b"GoodCA")]]));
        // Non-ASCII case folding.
        assert_eq!(key(&[&[(UTF8_STRING, "ÉCOLE".as_bytes())]]), key(&[&[(UTF8_STRING, "école".as_bytes())]]));
    }

    #[test]
    fn rdn_order_matters_and_multi_valued_rdns_do_not() {
        let ab = key(&[&[(UTF8_STRING, b"a")], &[(UTF8_STRING, b"b")]]);
        let ba = key(&[&[(UTF8_STRING, b"b")], &[(UTF8_STRING, b"a")]]);
        assert_ne!(ab, ba);
        let multi_ab = key(&[&[(UTF8_STRING, b"a"), (UTF8_STRING, b"b")]]);
        let multi_ba = key(&[&[(UTF8_STRING, b"b"), (UTF8_STRING, b"a")]]);
        assert_eq!(multi_ab, multi_ba);
        assert_ne!(multi_ab, ab);
    }

    #[test]
    fn relative_names_append_one_rdn() {
        let base = key(&[&[(UTF8_STRING, b"ca")]]);
        let rdn =
            der::tlv(der::SEQUENCE, &[der::tlv(der::OID, &[0x55, 0x04, 0x03]), der::tlv(UTF8_STRING, b"P1")].concat());
        let joined = base.with_rdn(&rdn).unwrap();
        assert_eq!(joined, key(&[&[(UTF8_STRING, b"ca")], &[(PRINTABLE_STRING, b"p1")]]));
    }

    #[test]
    fn malformed_names_are_errors() {
        assert!(NameKey::of(&[0x30, 0x02, 0x31, 0x00]).is_err());
        assert!(NameKey::of(&[0x31, 0x00]).is_err());
        assert!(NameKey::of(&[0x30, 0x00]).unwrap().is_empty());
    }
}
