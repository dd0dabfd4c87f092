//! docs/monitoring/: the alert rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`), and every metric name the rules and the Grafana dashboard use is
//! one the real binary exports, read from a `/metrics` scrape after real traffic, so a renamed
//! metric fails here instead of silently emptying a panel or an alert.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring")
}

/// Runs promtool in docs/monitoring/; panics with its output unless it succeeds.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(monitoring_dir())
        .output()
        .expect("run promtool (Debian package prometheus; scripts/test.sh installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_are_valid_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", "alerts.yaml"]);
    assert!(checked.contains("SUCCESS: 9 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a unit test that expects it to fire.
    let rules = std::fs::read_to_string(monitoring_dir().join("alerts.yaml")).unwrap();
    let tests = std::fs::read_to_string(monitoring_dir().join("alerts.test.yaml")).unwrap();
    for alert in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        let fires = tests.split("alertname: ").skip(1).any(|t| t.starts_with(alert) && t.contains("exp_labels"));
        assert!(fires, "no unit test in alerts.test.yaml expects {alert} to fire");
    }
}

/// Every `kube_crl_proxy_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("kube_crl_proxy_") {
        let tail = &rest[i..];
        let end =
            tail.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The series names a scrape exports: every sample's name, and for each `# TYPE` family the
/// names PromQL sees (`_total` for counters, `_bucket`/`_sum`/`_count` for histograms), so a
/// family with no series yet (no OCSP query made, say) still counts.
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            let mut parts = family.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
            match kind {
                "counter" => names.insert(format!("{name}_total")),
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                    true
                }
                _ => names.insert(name.to_string()),
            };
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

#[tokio::test]
async fn every_metric_the_rules_and_dashboard_use_is_exported() {
    // OCSP on, asking a responder that is not there: alice's query fails and, under
    // if-available, her handshake goes on; so the OCSP families have series too.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let responder = format!("http://{dead}/");
    let env = Env::start(&["--ocsp", "if-available", "--ocsp-responder-url", &responder]).await;
    wait_admin(env.proxy.admin, "/readyz", "ready", |s, _| s == 200).await;
    // Real traffic, so the labelled families have series: an accepted, a refused (revoked)
    // and an anonymous handshake, and requests through to the upstream.
    user_info(&env.request(Some(&env.pki.alice), Http::H2, whoami_request()).await.unwrap());
    assert!(env.request(Some(&env.pki.bob), Http::H1, whoami_request()).await.is_err());
    // Anonymous: forwarded without identity headers; the stand-in answers, whatever the status.
    env.request(None, Http::H1, get("https://localhost/api")).await.unwrap();
    let scrape = wait_admin(env.proxy.admin, "/metrics", "counting the revoked refusal and the OCSP query", |_, b| {
        series(b, r#"kube_crl_proxy_handshakes_total{outcome="revoked"}"#) == Some(1.0)
            && family_sum(b, "kube_crl_proxy_ocsp_queries_total") >= 1.0
    })
    .await;
    let exported = exported(&scrape);
    assert!(exported.contains("kube_crl_proxy_upstream_request_duration_seconds_bucket"), "{scrape}");

    let rules = std::fs::read_to_string(monitoring_dir().join("alerts.yaml")).unwrap();
    let dashboard = std::fs::read_to_string(monitoring_dir().join("dashboard.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard.json is JSON");
    let exprs: Vec<&str> = json["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().expect("every target has an expr"))
        .collect();
    assert!(exprs.len() >= 15, "{exprs:?}");

    // The lower bounds only guard against a scan that finds nothing.
    for (what, text, at_least) in
        [("docs/monitoring/alerts.yaml", rules, 7), ("docs/monitoring/dashboard.json", dashboard, 15)]
    {
        let used = metric_names(&text);
        assert!(used.len() >= at_least, "{what} uses only {used:?}");
        let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{what} uses metrics the binary does not export: {unknown:?}\nexported: {exported:?}"
        );
    }
}

#[test]
fn metric_name_scanning_and_suffixes() {
    let used = metric_names(r#"rate(kube_crl_proxy_handshakes_total{outcome="x"}[5m]) / kube_crl_proxy_upstream_up"#);
    assert_eq!(used.into_iter().collect::<Vec<_>>(), ["kube_crl_proxy_handshakes_total", "kube_crl_proxy_upstream_up"]);
    let scrape = "# TYPE kube_crl_proxy_a counter\n# TYPE kube_crl_proxy_h histogram\n# TYPE kube_crl_proxy_g gauge\n\
                  kube_crl_proxy_g{x=\"1\"} 2\n# EOF\n";
    let e = exported(scrape);
    for n in ["kube_crl_proxy_a_total", "kube_crl_proxy_h_bucket", "kube_crl_proxy_h_sum", "kube_crl_proxy_h_count"] {
        assert!(e.contains(n), "{n}: {e:?}");
    }
    assert!(
        e.contains("kube_crl_proxy_g") && !e.contains("kube_crl_proxy_a") && !e.contains("kube_crl_proxy_h"),
        "{e:?}"
    );
}
