//! The revocation model against generated PKIs, through the verifier a handshake uses:
//! partitions, reasons, users-only and CA-only CRLs, several keys per CA name, dedicated and
//! indirect CRL signers, deltas, signed serials, time policy, and a randomized property.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::KeyUsagePurpose;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::UnixTime;
use time::Duration;

use super::*;
use crate::ca::CaBundle;
use crate::config::{ClientCertMode, Policy, RevocationCheck, RevocationPolicy};
use crate::error::{ConfigError, RefusalReason};
use crate::tls::verifier::{CrlVerifier, Refusal};
use kube_crl_proxy_testkit::pki::{Authority, CrlEntrySpec, CrlSpec, DpSpec, IdpSpec, Issued, Spec};

fn policy(missing: Policy, expired: Policy, grace: u64) -> RevocationPolicy {
    RevocationPolicy {
        check: RevocationCheck::Chain,
        crl_missing: missing,
        crl_expired: expired,
        crl_expired_grace: std::time::Duration::from_secs(grace),
    }
}

fn deny() -> RevocationPolicy {
    policy(Policy::Deny, Policy::Deny, 0)
}

fn algs() -> WebPkiSupportedAlgorithms {
    crate::crypto::provider().signature_verification_algorithms
}

fn pem_crl(pem: String) -> Vec<u8> {
    pem.into_bytes()
}

/// CAs in `--client-ca-file`, CRL files (PEM or DER, CRL signer certificates allowed).
struct World {
    dir: tempfile::TempDir,
    cas: Vec<String>,
    crls: Vec<Vec<u8>>,
}

impl World {
    fn new(cas: &[&Authority]) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            cas: cas.iter().map(|c| c.cert_pem.clone()).collect(),
            crls: Vec::new(),
        }
    }

    fn crl(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.crls.push(bytes.into());
        self
    }

    fn bundle(&self) -> CaBundle {
        let path = self.dir.path().join("ca.pem");
        std::fs::write(&path, self.cas.concat()).unwrap();
        CaBundle::load(&path, None).unwrap()
    }

    fn sources(&self) -> Vec<CrlSource> {
        let paths: Vec<PathBuf> = self
            .crls
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let p = self.dir.path().join(format!("crl{i}"));
                std::fs::write(&p, b).unwrap();
                p
            })
            .collect();
        CrlSource::files(&paths).unwrap()
    }

    fn load(&self, policy: RevocationPolicy) -> Result<(CrlVerifier, Vec<Warning>), ConfigError> {
        let bundle = self.bundle();
        let (index, warnings) = RevocationIndex::load(&bundle, &self.sources(), policy, &algs())?;
        Ok((CrlVerifier::new(&bundle, Arc::new(index), ClientCertMode::Required, algs(), None), warnings))
    }

    fn verifier(&self) -> CrlVerifier {
        self.load(deny()).unwrap().0
    }
}

fn check(v: &CrlVerifier, leaf: &Issued) -> Result<(), Refusal> {
    v.check(&leaf.der, &[], UnixTime::now())
}

fn refused(v: &CrlVerifier, leaf: &Issued) -> RefusalReason {
    check(v, leaf).expect_err("must be refused").reason
}

fn entry(i: &Issued) -> CrlEntrySpec {
    CrlEntrySpec::serial(&i.serial)
}

fn with_dp(cn: &str, uri: &str) -> Spec {
    Spec { dps: vec![DpSpec { uri: Some(uri.into()), ..DpSpec::default() }], ..Spec::client(cn, &[]) }
}

fn partition(uri: &str) -> Option<IdpSpec> {
    Some(IdpSpec { uri: Some(uri.into()), ..IdpSpec::default() })
}

/// Root → users intermediate, the root's CRL empty.
fn two_level() -> (Authority, Authority, Vec<u8>) {
    let root = Authority::root("t-root");
    let users = root.intermediate("t-users");
    let root_crl = pem_crl(root.crl(&[], 1, Duration::days(1)));
    (root, users, root_crl)
}

#[test]
fn a_partition_covers_only_the_certificates_that_point_at_it() {
    // EJBCA-style partitioned CRLs: A revokes nothing, B revokes xavier.
    let (root, users, root_crl) = two_level();
    let (a, b) = ("http://pki.example/users-a.crl", "http://pki.example/users-b.crl");
    let xavier = users.issue(&with_dp("xavier", b));
    let yolanda = users.issue(&with_dp("yolanda", a));
    let crl_a = users.custom_crl(&CrlSpec { idp: partition(a), ..CrlSpec::default() });
    let crl_b = users.custom_crl(&CrlSpec {
        idp: partition(b),
        entries: vec![entry(&xavier)],
        number: 2,
        ..CrlSpec::default()
    });

    let both = World::new(&[&root, &users]).crl(root_crl.clone()).crl(crl_a.clone()).crl(crl_b.clone()).verifier();
    assert_eq!(refused(&both, &xavier), RefusalReason::Revoked);
    assert_eq!(check(&both, &yolanda), Ok(()));
    assert_eq!(both.index().crls().count(), 3, "both partitions are kept");

    // Only partition A: xavier's status is undetermined, never "not revoked".
    let only_a = World::new(&[&root, &users]).crl(root_crl.clone()).crl(crl_a).verifier();
    let r = check(&only_a, &xavier).unwrap_err();
    assert_eq!(r.reason, RefusalReason::NoCrl, "{r:?}");
    assert!(r.detail.contains("partitions for other distribution points"), "{}", r.detail);
    assert_eq!(check(&only_a, &yolanda), Ok(()));

    // A certificate without distribution points is covered by no partition.
    let plain = users.issue(&Spec::client("plain", &[]));
    assert_eq!(refused(&only_a, &plain), RefusalReason::NoCrl);
    // ... but by a full CRL without an issuingDistributionPoint.
    let full = users.custom_crl(&CrlSpec { number: 3, ..CrlSpec::default() });
    let with_full = World::new(&[&root, &users]).crl(root_crl).crl(full).crl(crl_b).verifier();
    assert_eq!(check(&with_full, &plain), Ok(()));
    assert_eq!(refused(&with_full, &xavier), RefusalReason::Revoked, "listed in an applicable partition");
}

#[test]
fn serials_compare_as_signed_integers() {
    let (root, users, root_crl) = two_level();
    // +255 is encoded 00 ff; a CRL listing ff lists -1.
    let plus_255 = users.issue(&Spec { serial: Some(vec![0x00, 0xff]), ..Spec::client("p255", &[]) });
    let minus_one =
        CrlSpec { entries: vec![CrlEntrySpec { serial: vec![0xff], ..Default::default() }], ..Default::default() };
    let v = World::new(&[&root, &users]).crl(root_crl.clone()).crl(users.custom_crl(&minus_one)).verifier();
    assert_eq!(check(&v, &plus_255), Ok(()), "-1 listed, +255 presented");
    let listed = CrlSpec {
        entries: vec![CrlEntrySpec { serial: vec![0x00, 0xff], ..Default::default() }],
        ..Default::default()
    };
    let v = World::new(&[&root, &users]).crl(root_crl.clone()).crl(users.custom_crl(&listed)).verifier();
    assert_eq!(refused(&v, &plus_255), RefusalReason::Revoked);
    // A redundant leading zero in the CRL still matches.
    let padded = CrlSpec {
        entries: vec![CrlEntrySpec { serial: vec![0x00, 0x00, 0xff], ..Default::default() }],
        ..Default::default()
    };
    let v = World::new(&[&root, &users]).crl(root_crl).crl(users.custom_crl(&padded)).verifier();
    assert_eq!(refused(&v, &plus_255), RefusalReason::Revoked);
}

#[test]
fn users_only_and_ca_only_crls_are_both_kept() {
    let (root, users, _) = two_level();
    let alice = users.issue(&Spec::client("alice", &[]));
    let users_crl = pem_crl(users.crl(&[], 1, Duration::days(1)));
    let only_users = IdpSpec { only_user: true, ..IdpSpec::default() };
    let only_cas = IdpSpec { only_ca: true, ..IdpSpec::default() };
    // The users-only CRL has the higher number: it must not replace the ARL.
    let root_users = root.custom_crl(&CrlSpec { idp: Some(only_users.clone()), number: 9, ..CrlSpec::default() });
    let root_arl = root.custom_crl(&CrlSpec { idp: Some(only_cas.clone()), number: 2, ..CrlSpec::default() });
    let v = World::new(&[&root, &users]).crl(root_users.clone()).crl(root_arl).crl(users_crl.clone()).verifier();
    assert_eq!(check(&v, &alice), Ok(()));
    // The users-only CRL alone does not cover the intermediate.
    let v = World::new(&[&root, &users]).crl(root_users).crl(users_crl.clone()).verifier();
    let r = check(&v, &alice).unwrap_err();
    assert!(r.detail.contains("intermediate"), "{r:?}");
    // An ARL revoking the intermediate.
    let users_facts = CertFacts::parse(users.der.as_ref()).unwrap();
    let revoking = CrlSpec {
        idp: Some(only_cas),
        entries: vec![CrlEntrySpec { serial: users_facts.serial.clone(), ..Default::default() }],
        ..CrlSpec::default()
    };
    let v = World::new(&[&root, &users]).crl(root.custom_crl(&revoking)).crl(users_crl).verifier();
    assert_eq!(refused(&v, &alice), RefusalReason::Revoked);
}

#[test]
fn reason_partitions_decide_only_together() {
    let (root, users, root_crl) = two_level();
    let alice = users.issue(&Spec::client("alice", &[]));
    const KEY_AND_CA_COMPROMISE: u16 = 0b110;
    let some = users.custom_crl(&CrlSpec {
        idp: Some(IdpSpec { reasons: Some(KEY_AND_CA_COMPROMISE), ..IdpSpec::default() }),
        ..CrlSpec::default()
    });
    let v = World::new(&[&root, &users]).crl(root_crl.clone()).crl(some.clone()).verifier();
    let r = check(&v, &alice).unwrap_err();
    assert_eq!(r.reason, RefusalReason::NoCrl);
    assert!(r.detail.contains("affiliationChanged") && !r.detail.contains("keyCompromise"), "{}", r.detail);
    let rest = users.custom_crl(&CrlSpec {
        idp: Some(IdpSpec { reasons: Some(crl::ALL_REASONS & !KEY_AND_CA_COMPROMISE), ..IdpSpec::default() }),
        number: 2,
        ..CrlSpec::default()
    });
    let v = World::new(&[&root, &users]).crl(root_crl.clone()).crl(some).crl(rest.clone()).verifier();
    assert_eq!(check(&v, &alice), Ok(()));
    // Listed in one reason partition: revoked.
    let listing = users.custom_crl(&CrlSpec {
        idp: Some(IdpSpec { reasons: Some(KEY_AND_CA_COMPROMISE), ..IdpSpec::default() }),
        entries: vec![entry(&alice)],
        number: 3,
        ..CrlSpec::default()
    });
    let v = World::new(&[&root, &users]).crl(root_crl).crl(listing).crl(rest).verifier();
    assert_eq!(refused(&v, &alice), RefusalReason::Revoked);
}

#[test]
fn a_renewed_ca_key_keeps_its_own_crl() {
    // AD CS after a renewal with a new key: one name, two keys, one CRL per key.
    let root = Authority::root("t-root");
    let old = root.intermediate("t-users");
    let new = root.intermediate("t-users");
    let root_crl = pem_crl(root.crl(&[], 1, Duration::days(1)));
    let under_old = old.issue(&Spec::client("old-key-user", &[]));
    let under_new = new.issue(&Spec::client("new-key-user", &[]));
    // The new key's CRL has the higher number and does not list the old key's user.
    let old_crl = pem_crl(old.crl(&[&under_old.serial], 5, Duration::days(1)));
    let new_crl = pem_crl(new.crl(&[], 7, Duration::days(1)));
    let v = World::new(&[&root, &old, &new]).crl(root_crl.clone()).crl(old_crl).crl(new_crl.clone()).verifier();
    assert_eq!(refused(&v, &under_old), RefusalReason::Revoked);
    assert_eq!(check(&v, &under_new), Ok(()));
    // Without the old key's CRL, its certificates are undetermined, not covered by the new one's.
    let err = World::new(&[&root, &old, &new]).crl(root_crl).crl(new_crl).load(deny()).expect_err("old key uncovered");
    assert!(matches!(err, ConfigError::MissingCrl { .. }), "{err}");
}

#[test]
fn a_dedicated_crl_signer_speaks_for_its_ca() {
    let root = Authority::root("t-root");
    let users = root.ca_with_usages("t-users", &[KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature]);
    let signer = root.ca_with_usages("t-users", &[KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature]);
    let bob = users.issue(&Spec::client("bob", &[]));
    let alice = users.issue(&Spec::client("alice", &[]));
    let crl = signer.custom_crl(&CrlSpec { entries: vec![entry(&bob)], ..CrlSpec::default() });
    let root_crl = pem_crl(root.crl(&[], 1, Duration::days(1)));
    // The signer's certificate shipped beside the CRLs.
    let v = World::new(&[&root, &users]).crl(root_crl).crl(crl.clone()).crl(signer.cert_pem.clone()).verifier();
    assert_eq!(refused(&v, &bob), RefusalReason::Revoked);
    assert_eq!(check(&v, &alice), Ok(()));
    let described = v.index().crls().find(|c| c.signer.dedicated).expect("signed by the dedicated signer").describe();
    assert!(described.contains("dedicated CRL signer"), "{described}");

    // The signer's own certificate revoked by the root: its CRL decides nothing.
    let signer_serial = CertFacts::parse(signer.der.as_ref()).unwrap().serial;
    let root_revokes = root.custom_crl(&CrlSpec {
        entries: vec![CrlEntrySpec { serial: signer_serial, ..Default::default() }],
        ..CrlSpec::default()
    });
    let v = World::new(&[&root, &users]).crl(root_revokes).crl(crl).crl(signer.cert_pem.clone()).verifier();
    let r = check(&v, &alice).unwrap_err();
    assert_eq!(r.reason, RefusalReason::NoCrl, "{r:?}");
    assert!(r.detail.contains("no applicable CRL could be used") && r.detail.contains("is revoked"), "{}", r.detail);
    // Without the signer's certificate, the CRL is left out with a reason.
    let err = World::new(&[&root, &users])
        .crl(pem_crl(root.crl(&[], 1, Duration::days(1))))
        .crl(signer.custom_crl(&CrlSpec::default()))
        .load(deny())
        .expect_err("users uncovered");
    assert!(err.to_string().contains("left out") && err.to_string().contains("signature does not verify"), "{err}");
}

#[test]
fn an_indirect_crl_covers_the_certificates_that_name_its_issuer() {
    let (root, users, root_crl) = two_level();
    let authority = root.ca_with_usages("t-crl-authority", &[KeyUsagePurpose::CrlSign]);
    let dp = DpSpec { crl_issuer: Some(authority.subject_der()), ..DpSpec::default() };
    let spec = |cn: &str| Spec { dps: vec![dp.clone()], ..Spec::client(cn, &[]) };
    let (xavier, yolanda) = (users.issue(&spec("xavier")), users.issue(&spec("yolanda")));
    let indirect = authority.custom_crl(&CrlSpec {
        idp: Some(IdpSpec { indirect: true, ..IdpSpec::default() }),
        entries: vec![CrlEntrySpec { cert_issuer: Some(users.subject_der()), ..entry(&xavier) }],
        ..CrlSpec::default()
    });
    let v = World::new(&[&root, &users, &authority]).crl(root_crl.clone()).crl(indirect.clone()).verifier();
    assert_eq!(refused(&v, &xavier), RefusalReason::Revoked);
    assert_eq!(check(&v, &yolanda), Ok(()));
    // The same serial under another issuer in the indirect CRL does not revoke xavier.
    let other_issuer = authority.custom_crl(&CrlSpec {
        idp: Some(IdpSpec { indirect: true, ..IdpSpec::default() }),
        entries: vec![CrlEntrySpec { cert_issuer: Some(root.subject_der()), ..entry(&xavier) }],
        ..CrlSpec::default()
    });
    let v = World::new(&[&root, &users, &authority]).crl(root_crl.clone()).crl(other_issuer).verifier();
    assert_eq!(check(&v, &xavier), Ok(()));
    // A certificate without that distribution point is not covered by the indirect CRL.
    let plain = users.issue(&Spec::client("plain", &[]));
    let v = World::new(&[&root, &users, &authority]).crl(root_crl).crl(indirect).verifier();
    assert_eq!(refused(&v, &plain), RefusalReason::NoCrl);
}

#[test]
fn delta_crls_add_and_remove_within_their_scope() {
    let (root, users, root_crl) = two_level();
    let (a, b, c) = (
        users.issue(&Spec::client("a", &[])),
        users.issue(&Spec::client("b", &[])),
        users.issue(&Spec::client("c", &[])),
    );
    let base = pem_crl(users.crl(&[&a.serial, &b.serial], 5, Duration::days(1)));
    let delta = users.delta_crl(&[(&c.serial, 1), (&b.serial, 8)], 6, 5, Duration::hours(2));
    let v = World::new(&[&root, &users]).crl(root_crl.clone()).crl(base.clone()).crl(delta).verifier();
    assert_eq!(refused(&v, &a), RefusalReason::Revoked, "a stays revoked");
    assert_eq!(check(&v, &b), Ok(()), "b removed by removeFromCRL");
    assert_eq!(refused(&v, &c), RefusalReason::Revoked, "c added by the delta");
    let r = check(&v, &c).unwrap_err();
    assert!(r.detail.contains("crl2 CRL #1"), "names the delta that lists it: {}", r.detail);
    let r = check(&v, &a).unwrap_err();
    assert!(r.detail.contains("crl1 CRL #1"), "names the base that lists it: {}", r.detail);
    let crl = v.index().crls().find(|c| c.delta.is_some()).expect("merged");
    assert_eq!(crl.crl_number.as_deref(), Some(&[6u8][..]));
    assert!(crl.next_update.unwrap() - now_secs() < 3 * 3600, "freshness comes from the delta");

    // A delta for a newer base than the one loaded is left out: the base decides alone.
    let (v, warnings) = World::new(&[&root, &users])
        .crl(root_crl.clone())
        .crl(base)
        .crl(users.delta_crl(&[(&c.serial, 1)], 9, 7, Duration::hours(2)))
        .load(deny())
        .unwrap();
    assert!(warnings.iter().any(|w| w.contains("base CRL numbered 07")), "{warnings:?}");
    assert_eq!(check(&v, &c), Ok(()));
    // A delta alone is no complete CRL: the CA is uncovered.
    let err = World::new(&[&root, &users])
        .crl(root_crl)
        .crl(users.delta_crl(&[], 9, 7, Duration::hours(2)))
        .load(deny())
        .expect_err("no base");
    assert!(matches!(err, ConfigError::MissingCrl { .. }), "{err}");
}

#[test]
fn stale_policy_and_grace() {
    let (root, users, root_crl) = two_level();
    let alice = users.issue(&Spec::client("alice", &[]));
    let world = World::new(&[&root, &users]).crl(root_crl).crl(pem_crl(users.crl(&[], 1, Duration::hours(-2))));
    let r = check(&world.load(deny()).unwrap().0, &alice).unwrap_err();
    assert_eq!(r.reason, RefusalReason::StaleCrl, "{r:?}");
    let graced = world.load(policy(Policy::Deny, Policy::Deny, 3 * 3600)).unwrap().0;
    assert_eq!(check(&graced, &alice), Ok(()));
    let allow = world.load(policy(Policy::Deny, Policy::Allow, 0)).unwrap().0;
    assert_eq!(check(&allow, &alice), Ok(()));
}

#[test]
fn freshness_is_one_rule() {
    let p = policy(Policy::Deny, Policy::Deny, 600);
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(freshness(None, 1000, &p, hour), Freshness::Fresh);
    assert_eq!(freshness(Some(10_000), 1000, &p, hour), Freshness::Fresh);
    assert_eq!(freshness(Some(2000), 1000, &p, hour), Freshness::Expiring { seconds_left: 1000 });
    assert_eq!(freshness(Some(1000), 1500, &p, hour), Freshness::InGrace { seconds_past: 500 });
    assert_eq!(freshness(Some(1000), 1700, &p, hour), Freshness::Stale { seconds_past: 700 });
    assert!(is_stale(Some(1000), 1601, &p) && !is_stale(Some(1000), 1600, &p));
}

#[test]
fn missing_crl_is_a_start_up_error_unless_allowed() {
    let (root, users, root_crl) = two_level();
    let world = World::new(&[&root, &users]).crl(root_crl);
    let err = world.load(deny()).expect_err("users uncovered");
    assert!(err.to_string().contains("t-users") && err.to_string().contains("--crl-missing"), "{err}");
    let (v, warnings) = world.load(policy(Policy::Allow, Policy::Deny, 0)).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(check(&v, &users.issue(&Spec::client("alice", &[]))), Ok(()));
}

#[test]
fn crls_that_do_not_verify_are_left_out_and_said_so() {
    let (root, users, root_crl) = two_level();
    let alice = users.issue(&Spec::client("alice", &[]));
    let stranger = Authority::root("t-stranger");
    let mut tampered = users.custom_crl(&CrlSpec { entries: vec![entry(&alice)], number: 9, ..CrlSpec::default() });
    *tampered.last_mut().unwrap() ^= 1;
    let (v, warnings) = World::new(&[&root, &users])
        .crl(root_crl)
        .crl(pem_crl(users.crl(&[], 1, Duration::days(1))))
        .crl(tampered)
        .crl(stranger.custom_crl(&CrlSpec::default()))
        .load(deny())
        .unwrap();
    assert_eq!(v.index().rejected().len(), 2, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("crl2") && w.contains("signature does not verify")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("crl3") && w.contains("t-stranger")), "{warnings:?}");
    assert_eq!(check(&v, &alice), Ok(()), "the tampered CRL decides nothing");
}

#[test]
fn a_reload_reuses_unchanged_crl_sources_while_their_signers_stay() {
    let (root, users, root_crl) = two_level();
    let bob = users.issue(&Spec::client("bob", &[]));
    let world =
        World::new(&[&root, &users]).crl(root_crl).crl(pem_crl(users.crl(&[&bob.serial], 1, Duration::days(1))));
    let bundle = world.bundle();
    let sources = world.sources();
    let (first, _) = RevocationIndex::load(&bundle, &sources, deny(), &algs()).unwrap();
    let users_crl = |i: &RevocationIndex| i.crls().find(|c| c.issuer == "CN=t-users").unwrap().clone();
    // Same bytes: the serial tables are shared, not parsed again.
    let (second, _) = RevocationIndex::load_after(&bundle, &sources, deny(), &algs(), Some(&first)).unwrap();
    assert!(users_crl(&second).shares_serials_with(&users_crl(&first)));
    // The users CRL changes (the root's does not): the users CRL is read anew.
    std::fs::write(&sources[1].name, pem_crl(users.crl(&[], 2, Duration::days(1)))).unwrap();
    let changed = CrlSource::files(&[sources[0].name.clone(), sources[1].name.clone()]).unwrap();
    let (third, _) = RevocationIndex::load_after(&bundle, &changed, deny(), &algs(), Some(&second)).unwrap();
    assert!(!users_crl(&third).shares_serials_with(&users_crl(&second)));
    assert!(users_crl(&third).is_empty());
    let root_crl = |i: &RevocationIndex| i.crls().find(|c| c.issuer == "CN=t-root").unwrap().clone();
    assert!(root_crl(&third).shares_serials_with(&root_crl(&second)));
    // Another CA of the same name and key no longer in the bundle: nothing is reused blindly.
    let other_root = Authority::root("t-root");
    let other_world = World::new(&[&other_root, &users]);
    let err = RevocationIndex::load_after(&other_world.bundle(), &sources, deny(), &algs(), Some(&first))
        .expect_err("the old root's CRL no longer verifies");
    assert!(err.to_string().contains("left out"), "{err}");
}

#[test]
fn expiring_crls_are_counted_within_the_window() {
    let (root, users, _) = two_level();
    let (v, _) = World::new(&[&root, &users])
        .crl(pem_crl(root.crl(&[], 1, Duration::days(30))))
        .crl(pem_crl(users.crl(&[], 1, Duration::hours(2))))
        .load(deny())
        .unwrap();
    let now = now_secs();
    assert_eq!(v.index().warn_expiring(now, std::time::Duration::from_secs(24 * 3600)), 1);
    assert_eq!(v.index().warn_expiring(now, std::time::Duration::from_secs(3600)), 0);
}

/// A small deterministic generator for the property tests: `next(n)` is in `0..n`.
fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x = seed;
    move |n| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    }
}

/// Over generated CRL sets (partitions, reason partitions, deltas, two keys under one CA
/// name), a certificate listed in any applicable CRL is never accepted, and one whose
/// applicable CRLs do not cover every reason is never accepted under `deny`.
#[test]
fn property_listed_or_undetermined_is_never_accepted() {
    let root = Authority::root("p-root");
    let keys = [root.intermediate("p-users"), root.intermediate("p-users")];
    let root_crl = pem_crl(root.crl(&[], 1, Duration::days(1)));
    let uris = ["http://p.example/1.crl", "http://p.example/2.crl"];
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    // Certificates: under either key, with or without a distribution point.
    let certs: Vec<(usize, Option<usize>, Issued)> = (0..6)
        .map(|i| {
            let k = i % 2;
            let dp = (i / 2 % 3 != 2).then_some(i / 2 % 2);
            let spec = match dp {
                Some(d) => with_dp(&format!("u{i}"), uris[d]),
                None => Spec::client(&format!("u{i}"), &[]),
            };
            (k, dp, keys[k].issue(&spec))
        })
        .collect();
    let reason_sets = [crl::ALL_REASONS, 0b110, crl::ALL_REASONS & !0b110];
    let mut seen = [0usize; 3];
    for round in 0..24 {
        // Per key: 1-3 CRLs with random partition and reasons, listing random certificates.
        let mut world = World::new(&[&root, &keys[0], &keys[1]]).crl(root_crl.clone());
        let mut model: Vec<(usize, Option<usize>, u16, Vec<usize>)> = Vec::new();
        for (k, key) in keys.iter().enumerate() {
            for n in 0..(1 + next(3)) {
                let part = match next(3) {
                    2 => None,
                    d => Some(d as usize),
                };
                let reasons = reason_sets[next(3) as usize];
                // One CRL per scope and key (a second would supersede the first).
                if model.iter().any(|(mk, p, r, _)| *mk == k && *p == part && *r == reasons) {
                    continue;
                }
                let listed: Vec<usize> = (0..certs.len()).filter(|&c| certs[c].0 == k && next(3) == 0).collect();
                let idp = (part.is_some() || reasons != crl::ALL_REASONS).then(|| IdpSpec {
                    uri: part.map(|d| uris[d].to_string()),
                    reasons: (reasons != crl::ALL_REASONS).then_some(reasons),
                    ..IdpSpec::default()
                });
                let base_entries: Vec<CrlEntrySpec> = listed.iter().map(|&c| entry(&certs[c].2)).collect();
                // Sometimes split the listing into a base and a delta.
                if next(2) == 0 && !base_entries.is_empty() {
                    let (b, d) = base_entries.split_at(base_entries.len() / 2);
                    let spec = CrlSpec { entries: b.to_vec(), number: 10 + n, idp: idp.clone(), ..CrlSpec::default() };
                    world = world.crl(key.custom_crl(&spec));
                    let delta = CrlSpec {
                        entries: d.to_vec(),
                        number: 20 + n,
                        delta_base: Some(10 + n),
                        idp,
                        ..CrlSpec::default()
                    };
                    world = world.crl(key.custom_crl(&delta));
                } else {
                    world = world.crl(key.custom_crl(&CrlSpec {
                        entries: base_entries,
                        number: 10 + n,
                        idp,
                        ..CrlSpec::default()
                    }));
                }
                model.push((k, part, reasons, listed));
            }
        }
        let Ok((v, _)) = world.load(deny()) else { continue };
        for (c, (k, dp, cert)) in certs.iter().enumerate() {
            // The model: CRLs of this key whose partition fits the certificate's point.
            let applicable: Vec<&(usize, Option<usize>, u16, Vec<usize>)> =
                model.iter().filter(|(mk, part, _, _)| mk == k && part.is_none_or(|p| Some(p) == *dp)).collect();
            let listed = applicable.iter().any(|(_, _, _, l)| l.contains(&c));
            let covered = applicable.iter().fold(0u16, |m, (_, _, r, _)| m | r) == crl::ALL_REASONS;
            let got = check(&v, cert);
            if listed {
                assert_eq!(got.as_ref().map_err(|r| &r.reason), Err(&RefusalReason::Revoked), "round {round} cert {c}");
                seen[0] += 1;
            } else if !covered {
                assert_eq!(got.as_ref().map_err(|r| &r.reason), Err(&RefusalReason::NoCrl), "round {round} cert {c}");
                seen[1] += 1;
            } else {
                assert_eq!(got, Ok(()), "round {round} cert {c}");
                seen[2] += 1;
            }
        }
    }
    // The generator reached every outcome, often.
    assert!(seen.iter().all(|&n| n >= 10), "revoked, undetermined, good: {seen:?}");
}

// ---- What a change of the index re-checks (changes.rs) ----

/// The keys of a certificate's verified path, as the connection registry indexes them.
fn path_keys(v: &CrlVerifier, leaf: &Issued) -> Vec<u64> {
    let path = v.verified_path(&leaf.der, &[], UnixTime::now()).unwrap();
    path.certs().map(|c| cert_key(c.crl.issuer, c.crl.serial)).collect()
}

fn concerns(affected: &Affected, keys: &[u64]) -> bool {
    match affected {
        Affected::All => true,
        Affected::Certs(k) => keys.iter().any(|x| k.contains(x)),
    }
}

#[test]
fn a_crl_that_lists_one_more_certificate_concerns_that_certificate_only() {
    let (root, users, root_crl) = two_level();
    let alice = users.issue(&Spec::client("alice", &[]));
    let bob = users.issue(&Spec::client("bob", &[]));
    let before =
        World::new(&[&root, &users]).crl(root_crl.clone()).crl(users.crl(&[], 1, Duration::days(1))).verifier();
    let after = World::new(&[&root, &users])
        .crl(root_crl.clone())
        .crl(users.crl(&[&bob.serial], 2, Duration::days(1)))
        .verifier();
    let affected = after.affected_since(&before);
    assert!(matches!(&affected, Affected::Certs(k) if k.len() == 1), "{affected:?}");
    assert!(concerns(&affected, &path_keys(&after, &bob)));
    assert!(!concerns(&affected, &path_keys(&after, &alice)));
    // The same CRLs loaded again: nothing to re-check.
    let again = World::new(&[&root, &users]).crl(root_crl.clone()).crl(users.crl(&[&bob.serial], 3, Duration::days(1)));
    assert_eq!(again.verifier().affected_since(&after), Affected::Certs(Vec::new()));
    // Unlisting (a newer CRL without bob) re-checks nothing either: it can only accept more.
    let unlisted = World::new(&[&root, &users]).crl(root_crl.clone()).crl(users.crl(&[], 4, Duration::days(1)));
    assert_eq!(unlisted.verifier().affected_since(&after), Affected::Certs(Vec::new()));
    // A revoked intermediate concerns every certificate under it, through its own key.
    let users_serial = CertFacts::parse(users.der.as_ref()).unwrap().serial;
    let revoked_ca = World::new(&[&root, &users])
        .crl(pem_crl(root.crl(&[&users_serial], 2, Duration::days(1))))
        .crl(users.crl(&[], 1, Duration::days(1)))
        .verifier();
    let affected = revoked_ca.affected_since(&before);
    assert!(matches!(&affected, Affected::Certs(_)), "{affected:?}");
    assert!(concerns(&affected, &path_keys(&before, &alice)) && concerns(&affected, &path_keys(&before, &bob)));
}

#[test]
fn changes_that_can_leave_certificates_undetermined_or_stale_concern_every_connection() {
    let (root, users, root_crl) = two_level();
    let base = || World::new(&[&root, &users]).crl(root_crl.clone());
    let before = base().crl(users.crl(&[], 1, Duration::days(1))).verifier();
    // An earlier nextUpdate (the CRL may go stale sooner).
    let sooner = base().crl(users.crl(&[], 2, Duration::hours(1))).verifier();
    assert_eq!(sooner.affected_since(&before), Affected::All);
    // A scope gone: the full CRL replaced by one partition.
    let part = users.custom_crl(&CrlSpec { number: 2, idp: partition("http://u.example/1.crl"), ..CrlSpec::default() });
    let (v, _) = base().crl(part).load(policy(Policy::Allow, Policy::Deny, 0)).unwrap();
    assert_eq!(v.affected_since(&before), Affected::All);
    // Another policy.
    let (allow, _) =
        base().crl(users.crl(&[], 1, Duration::days(1))).load(policy(Policy::Allow, Policy::Deny, 0)).unwrap();
    assert_eq!(allow.affected_since(&before), Affected::All);
    // Another trust anchor set.
    let other = Authority::root("t-other");
    let more = World::new(&[&root, &users, &other])
        .crl(root_crl.clone())
        .crl(users.crl(&[], 1, Duration::days(1)))
        .crl(pem_crl(other.crl(&[], 1, Duration::days(1))))
        .verifier();
    assert_eq!(more.affected_since(&before), Affected::All);
}

/// For generated pairs of CRL sets (the second lists more certificates, sometimes in a
/// delta, sometimes drops or adds a scope): every certificate the first accepted and the
/// second refuses is concerned by `affected_since`, so an open connection is never missed.
#[test]
fn property_a_newly_refused_certificate_is_always_concerned() {
    let root = Authority::root("c-root");
    let keys = [root.intermediate("c-users"), root.intermediate("c-users")];
    let root_crl = pem_crl(root.crl(&[], 1, Duration::days(1)));
    let uris = ["http://c.example/1.crl", "http://c.example/2.crl"];
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let certs: Vec<(usize, Issued)> = (0..8)
        .map(|i| {
            let k = i % 2;
            let spec = match i / 2 % 3 {
                2 => Spec::client(&format!("c{i}"), &[]),
                d => with_dp(&format!("c{i}"), uris[d]),
            };
            (k, keys[k].issue(&spec))
        })
        .collect();
    let (mut targeted, mut all, mut newly_refused) = (0, 0, 0);
    for round in 0..24 {
        // Scopes per key: the full CRL, and maybe a partition (which is then the only one
        // for its certificates... together with the full CRL that still covers them).
        let scopes: Vec<(usize, Option<usize>)> = (0..2)
            .flat_map(|k| [(k, None)].into_iter().chain((next(2) == 0).then(|| (k, Some(next(2) as usize)))))
            .collect();
        let listed_before: Vec<Vec<usize>> = scopes
            .iter()
            .map(|(k, _)| (0..certs.len()).filter(|&c| certs[c].0 == *k && next(4) == 0).collect())
            .collect();
        let mut listed_after = listed_before.clone();
        for (s, (k, _)) in scopes.iter().enumerate() {
            listed_after[s].extend((0..certs.len()).filter(|&c| certs[c].0 == *k && next(3) == 0));
        }
        let drop_scope = (next(3) == 0).then(|| next(scopes.len() as u64) as usize);
        let build = |listed: &[Vec<usize>], number: u64, delta: bool, skip: Option<usize>| {
            let mut w = World::new(&[&root, &keys[0], &keys[1]]).crl(root_crl.clone());
            for (s, (k, part)) in scopes.iter().enumerate() {
                if Some(s) == skip {
                    continue;
                }
                let idp = part.map(|d| IdpSpec { uri: Some(uris[d].to_string()), ..IdpSpec::default() });
                let entries: Vec<CrlEntrySpec> = listed[s].iter().map(|&c| entry(&certs[c].1)).collect();
                if delta {
                    let base_entries: Vec<CrlEntrySpec> =
                        listed_before[s].iter().map(|&c| entry(&certs[c].1)).collect();
                    let base = CrlSpec { entries: base_entries, number: 10, idp: idp.clone(), ..CrlSpec::default() };
                    w = w.crl(keys[*k].custom_crl(&base));
                    let d = CrlSpec { entries, number, delta_base: Some(10), idp, ..CrlSpec::default() };
                    w = w.crl(keys[*k].custom_crl(&d));
                } else {
                    w = w.crl(keys[*k].custom_crl(&CrlSpec { entries, number, idp, ..CrlSpec::default() }));
                }
            }
            w
        };
        let Ok((before, _)) = build(&listed_before, 10, false, None).load(deny()) else { continue };
        let Ok((after, _)) = build(&listed_after, 20, next(2) == 0, drop_scope).load(deny()) else { continue };
        let affected = after.affected_since(&before);
        match affected {
            Affected::All => all += 1,
            Affected::Certs(_) => targeted += 1,
        }
        for (c, (_, cert)) in certs.iter().enumerate() {
            if check(&before, cert).is_ok() && check(&after, cert).is_err() {
                newly_refused += 1;
                assert!(concerns(&affected, &path_keys(&before, cert)), "round {round} cert {c}: {affected:?}");
            }
        }
    }
    eprintln!("targeted {targeted}, all {all}, newly refused {newly_refused}");
    assert!(
        targeted >= 10 && all >= 2 && newly_refused >= 20,
        "targeted {targeted}, all {all}, newly refused {newly_refused}"
    );
}

// ---- What paths share (path.rs, intern.rs) ----

#[test]
fn verified_paths_through_one_ca_share_its_facts_and_the_anchor() {
    let (root, users, root_crl) = two_level();
    let (alice, bob) = (users.issue(&Spec::client("alice", &[])), users.issue(&Spec::client("bob", &[])));
    let v = World::new(&[&root, &users]).crl(root_crl).crl(users.crl(&[&bob.serial], 1, Duration::days(1))).verifier();
    let a = v.verified_path(&alice.der, &[], UnixTime::now()).unwrap();
    let b = v.verified_path(&bob.der, &[], UnixTime::now()).unwrap();
    assert!(Arc::ptr_eq(&a.cas[0].cert, &b.cas[0].cert));
    assert!(Arc::ptr_eq(&a.anchor, &b.anchor));
    assert!(Arc::ptr_eq(&a.cas[0].issuer_spki, &b.cas[0].issuer_spki));
    let anchor = webpki::anchor_from_trusted_cert(&root.der).unwrap();
    assert_eq!(*a.anchor, *crate::ca::issuer_key(anchor.subject.as_ref(), webpki::spki_for_anchor(&anchor).as_ref()));
    // Shared or not, each path is checked as its own: bob is revoked, alice is not.
    assert_eq!(v.recheck(&a, UnixTime::now()), Ok(()));
    assert_eq!(v.recheck(&b, UnixTime::now()).map_err(|r| r.reason), Err(RefusalReason::Revoked));
}
