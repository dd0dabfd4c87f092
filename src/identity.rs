//! The verified client certificate → the identity kube-apiserver would derive from it
//! (user = CN, groups = every O in order, credential-id extra, optional UID), and the one
//! function that strips client-sent identity headers and sets ours.
//!
//! Mirrors kube-apiserver's x509 authenticator: when a subject has several CNs the last
//! one wins (as Go's pkix.Name does); empty O values are skipped; a certificate without a
//! (non-empty) CN gets no identity at all. Values with control characters are refused
//! rather than escaped, so no two certificates can map to the same header bytes.

use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use x509_parser::der_parser::asn1_rs::Any;
use x509_parser::prelude::*;

/// Subject attribute carrying the user's UID (Kubernetes 1.33+).
pub const UID_OID: &str = "1.3.6.1.4.1.57683.2";
/// The extra kube-apiserver sets for x509 users since 1.32.
pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";

/// Names of the identity headers (lower-case, as HTTP/2 and hyper carry them).
#[derive(Debug, Clone)]
pub struct HeaderNames {
    /// All names are stripped from requests; the first is set.
    pub username: Vec<HeaderName>,
    pub group: Vec<HeaderName>,
    pub uid: Vec<HeaderName>,
    /// Lower-cased prefix.
    pub extra_prefix: String,
    /// The extra header that carries the credential id (prefix + escaped key), built once.
    pub credential_id: Option<HeaderName>,
}

impl HeaderNames {
    pub fn new(username: Vec<HeaderName>, group: Vec<HeaderName>, uid: Vec<HeaderName>, extra_prefix: String) -> Self {
        let key = CREDENTIAL_ID_KEY.replace('/', "%2F");
        let credential_id = HeaderName::from_bytes(format!("{extra_prefix}{key}").as_bytes()).ok();
        Self { username, group, uid, extra_prefix, credential_id }
    }
}

/// Who the client is, as the upstream will be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
    pub uid: Option<String>,
    /// `X509SHA256=<hex>` of the leaf certificate.
    pub credential_id: String,
}

/// Why a verified certificate cannot be mapped to headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate's {0} contains a control character")]
    ControlCharacter(&'static str),
    #[error("the certificate's {0} is not a decodable string")]
    Undecodable(&'static str),
    #[error("the certificate has more than one UID attribute")]
    MultipleUids,
    #[error("the certificate does not parse: {0}")]
    Parse(String),
}

/// Maps a leaf certificate (already verified) to an identity. `Ok(None)`: no CN, so the
/// request is forwarded without identity headers.
pub fn from_leaf(der: &[u8]) -> Result<Option<Identity>, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
    from_parsed(&cert, der)
}

/// [`from_leaf`] for a certificate the caller has already parsed (`der` is its encoding).
pub fn from_parsed(cert: &X509Certificate<'_>, der: &[u8]) -> Result<Option<Identity>, IdentityError> {
    let mut user = None;
    let mut groups = Vec::new();
    let mut uid = None;
    for rdn in cert.subject().iter() {
        for attr in rdn.iter() {
            let oid = attr.attr_type();
            if *oid == x509_parser::oid_registry::OID_X509_COMMON_NAME {
                user = Some(clean(attr.attr_value(), "CN")?);
            } else if *oid == x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME {
                let o = clean(attr.attr_value(), "O")?;
                if !o.is_empty() {
                    groups.push(o);
                }
            } else if oid.to_id_string() == UID_OID {
                if uid.is_some() {
                    return Err(IdentityError::MultipleUids);
                }
                uid = Some(clean(attr.attr_value(), "UID")?);
            }
        }
    }
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    Ok(Some(Identity {
        user,
        groups,
        uid: uid.filter(|u| !u.is_empty()),
        credential_id: format!("X509SHA256={}", hex::encode(Sha256::digest(der))),
    }))
}

/// Decodes a DirectoryString (UTF8, Printable, IA5, T61 as Latin-1, BMP, Universal) and
/// refuses control characters.
fn clean(value: &Any<'_>, field: &'static str) -> Result<String, IdentityError> {
    let bytes = value.data;
    let s = match value.tag().0 {
        12 | 19 | 22 | 26 => String::from_utf8(bytes.to_vec()).map_err(|_| IdentityError::Undecodable(field))?,
        20 => bytes.iter().map(|b| char::from(*b)).collect(),
        30 => {
            if !bytes.len().is_multiple_of(2) {
                return Err(IdentityError::Undecodable(field));
            }
            let units = bytes.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units).collect::<Result<String, _>>().map_err(|_| IdentityError::Undecodable(field))?
        }
        28 => {
            if !bytes.len().is_multiple_of(4) {
                return Err(IdentityError::Undecodable(field));
            }
            bytes
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect::<Option<String>>()
                .ok_or(IdentityError::Undecodable(field))?
        }
        _ => return Err(IdentityError::Undecodable(field)),
    };
    if s.chars().any(char::is_control) {
        return Err(IdentityError::ControlCharacter(field));
    }
    Ok(s)
}

/// True when a header is one of ours: a configured username, group or uid header, or any
/// header starting with the extra prefix. Header names are lower-case in hyper.
pub fn is_identity_header(name: &HeaderName, names: &HeaderNames) -> bool {
    names.username.contains(name)
        || names.group.contains(name)
        || names.uid.contains(name)
        || name.as_str().starts_with(&names.extra_prefix)
}

/// An identity as header values, built once per connection: every request of the
/// connection clones them instead of converting the strings again.
#[derive(Debug, Clone)]
pub struct IdentityValues {
    user: HeaderValue,
    groups: Vec<HeaderValue>,
    uid: Option<HeaderValue>,
    credential_id: HeaderValue,
}

impl Identity {
    /// The header values. Values were checked for control characters, so the conversions
    /// cannot fail; if the user's or the credential id's ever did, there is no identity to
    /// send rather than part of one (a group or uid that failed would be left out).
    pub fn values(&self) -> Option<IdentityValues> {
        let value = |s: &str| HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(s.as_bytes())).ok();
        Some(IdentityValues {
            user: value(&self.user)?,
            groups: self.groups.iter().filter_map(|g| value(g)).collect(),
            uid: self.uid.as_deref().and_then(value),
            credential_id: value(&self.credential_id)?,
        })
    }
}

impl IdentityValues {
    /// The user name, for logs.
    pub fn user(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.user.as_bytes())
    }

    /// The groups, comma-separated, for logs.
    pub fn groups(&self) -> String {
        let groups: Vec<_> = self.groups.iter().map(|g| String::from_utf8_lossy(g.as_bytes())).collect();
        groups.join(",")
    }
}

/// Removes every client-sent identity header, then sets the identity's (if any).
pub fn apply(headers: &mut HeaderMap, identity: Option<&IdentityValues>, names: &HeaderNames) {
    if headers.keys().any(|n| is_identity_header(n, names)) {
        let ours: Vec<HeaderName> = headers.keys().filter(|n| is_identity_header(n, names)).cloned().collect();
        for name in ours {
            headers.remove(&name);
        }
    }
    let Some(id) = identity else { return };
    if let Some(h) = names.username.first() {
        headers.insert(h.clone(), id.user.clone());
    }
    if let Some(h) = names.group.first() {
        for g in &id.groups {
            headers.append(h.clone(), g.clone());
        }
    }
    if let (Some(h), Some(uid)) = (names.uid.first(), &id.uid) {
        headers.insert(h.clone(), uid.clone());
    }
    if let Some(name) = &names.credential_id {
        headers.insert(name.clone(), id.credential_id.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair};

    /// rcgen keeps one value per attribute type; a repeated O is pushed under the
    /// custom type with O's OID, which encodes identically.
    fn cert(dn: &[(DnType, DnValue)]) -> Vec<u8> {
        let mut p = CertificateParams::default();
        let mut name = DistinguishedName::new();
        for (t, v) in dn {
            let t = if *t == DnType::OrganizationName && name.get(t).is_some() {
                DnType::CustomDnType(vec![2, 5, 4, 10])
            } else {
                t.clone()
            };
            name.push(t, v.clone());
        }
        p.distinguished_name = name;
        let key = KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    fn names() -> HeaderNames {
        HeaderNames::new(
            vec![HeaderName::from_static("x-remote-user")],
            vec![HeaderName::from_static("x-remote-group")],
            vec![HeaderName::from_static("x-remote-uid")],
            "x-remote-extra-".into(),
        )
    }

    #[test]
    fn cn_and_every_o_in_order() {
        let der = cert(&[
            (DnType::OrganizationName, DnValue::Utf8String("dev".into())),
            (DnType::CommonName, DnValue::Utf8String("alice".into())),
            (DnType::OrganizationName, DnValue::PrintableString("ops".try_into().unwrap())),
        ]);
        let id = from_leaf(&der).unwrap().unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, vec!["dev", "ops"]);
        assert_eq!(id.credential_id, format!("X509SHA256={}", hex::encode(Sha256::digest(&der))));
        assert!(id.credential_id[11..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn utf8_passes_and_control_characters_are_refused() {
        let der = cert(&[(DnType::CommonName, DnValue::Utf8String("zoë 🚀".into()))]);
        assert_eq!(from_leaf(&der).unwrap().unwrap().user, "zoë 🚀");
        for bad in ["eve\r\nX-Remote-Group: system:masters", "a\0b", "tab\there", "c1\u{85}"] {
            let der = cert(&[(DnType::CommonName, DnValue::Utf8String(bad.into()))]);
            assert_eq!(from_leaf(&der), Err(IdentityError::ControlCharacter("CN")), "{bad:?}");
        }
        let der = cert(&[
            (DnType::CommonName, DnValue::Utf8String("bob".into())),
            (DnType::OrganizationName, DnValue::Utf8String("dev\nsystem:masters".into())),
        ]);
        assert_eq!(from_leaf(&der), Err(IdentityError::ControlCharacter("O")));
    }

    #[test]
    fn no_cn_means_no_identity() {
        let der = cert(&[(DnType::OrganizationName, DnValue::Utf8String("dev".into()))]);
        assert_eq!(from_leaf(&der).unwrap(), None);
    }

    #[test]
    fn uid_attribute_is_read() {
        let uid_type = DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 57683, 2]);
        let der = cert(&[
            (DnType::CommonName, DnValue::Utf8String("carol".into())),
            (uid_type.clone(), DnValue::Utf8String("u-123".into())),
        ]);
        assert_eq!(from_leaf(&der).unwrap().unwrap().uid.as_deref(), Some("u-123"));
    }

    #[test]
    fn values_keep_what_the_logs_show() {
        let id = Identity {
            user: "jürgen".into(),
            groups: vec!["dév".into(), "ops".into()],
            uid: None,
            credential_id: "X509SHA256=ab".into(),
        };
        let v = id.values().expect("no control characters");
        assert_eq!(v.user(), "jürgen");
        assert_eq!(v.groups(), "dév,ops");
        let mut h = HeaderMap::new();
        apply(&mut h, Some(&v), &names());
        assert_eq!(h.get("x-remote-user").unwrap().as_bytes(), "jürgen".as_bytes());
        assert!(h.get("x-remote-uid").is_none());
    }

    #[test]
    fn apply_strips_every_spelling_and_sets_ours() {
        let mut h = HeaderMap::new();
        h.insert("x-remote-user", HeaderValue::from_static("admin"));
        h.append("x-remote-group", HeaderValue::from_static("system:masters"));
        h.insert("x-remote-uid", HeaderValue::from_static("0"));
        h.insert("x-remote-extra-scopes", HeaderValue::from_static("all"));
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        h.insert("impersonate-user", HeaderValue::from_static("bob"));
        apply(&mut h, None, &names());
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["authorization", "impersonate-user"]);

        let id = Identity {
            user: "alice".into(),
            groups: vec!["dev".into(), "ops".into()],
            uid: Some("u1".into()),
            credential_id: "X509SHA256=ab".into(),
        };
        h.append("x-remote-group", HeaderValue::from_static("system:masters"));
        apply(&mut h, id.values().as_ref(), &names());
        assert_eq!(h.get_all("x-remote-user").iter().collect::<Vec<_>>(), vec!["alice"]);
        assert_eq!(h.get_all("x-remote-group").iter().collect::<Vec<_>>(), vec!["dev", "ops"]);
        assert_eq!(h.get("x-remote-uid").unwrap(), "u1");
        assert_eq!(h.get("x-remote-extra-authentication.kubernetes.io%2fcredential-id").unwrap(), "X509SHA256=ab");
    }
}
