//! OCSP for client certificates (`--ocsp`): the answer cache, the queries to responders, and
//! how a handshake gets an answer without stalling other connections.
//!
//! # How a handshake gets its answer
//! The rustls verifier is synchronous, so the status must be known when it runs:
//! - **cached** (the common case): a verified answer younger than its nextUpdate and
//!   `--ocsp-max-age` is used at once. When it has used three quarters of its life, the lookup
//!   also starts a refresh in the background, so busy certificates never wait.
//! - **miss**: the query runs as a task on the runtime; the handshake waits for it for at most
//!   `--ocsp-timeout`, inside [`tokio::task::block_in_place`], which hands this worker's other
//!   connections to another thread first — other connections are not stalled. Concurrent
//!   misses for one certificate share one query. At most [`MAX_WAITING`] handshakes wait at a
//!   time; beyond that (a flood of new certificates), they get "no answer" at once.
//! - **failed recently**: after a failed query (down, slow, bad signature, ...) the next
//!   [`FAILURE_BACKOFF`] of lookups for that certificate get "no answer" without asking again.
//!
//! "No answer" is then `--ocsp` policy: `if-available` lets the handshake go on (the CRL, if
//! any, still applies), `required` refuses it. A revoked answer refuses with the same
//! `certificate_revoked` alert as a CRL hit.
//!
//! # Live connections
//! Nothing sweeps the open connections for OCSP. Instead the cache tells which certificates
//! changed, by the key open connections are indexed by ([`Query::key`],
//! [`crate::revocation::cert_key`]), and only their connections are re-checked:
//! - [`Ocsp::tick`], every few seconds, walks the cache (not the connections): it refreshes
//!   the answers that are due and whose certificate an open connection holds (so they never
//!   lapse while in use), marks those in use as recently used (so eviction spares them), and
//!   names the certificates whose answer lapsed without a replacement (under `required`,
//!   their connections then have no answer).
//! - A query whose outcome may close connections (revoked or unknown, unlike the last answer
//!   or as the first; under `required`, a first failure) is queued for [`Ocsp::changed`].
//!
//! A re-check looks answers up without waiting ([`Ocsp::for_recheck`]): it closes connections
//! whose certificate is answered revoked (or, under `required`, has no answer), and starts a
//! query for a certificate the cache no longer holds; its outcome then counts as a change.

pub mod message;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::crypto::WebPkiSupportedAlgorithms;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Notify;

use crate::config::{OcspConfig, OcspMode};
use crate::metrics::{Metrics, ResultLabel};
use crate::revocation::now_secs;
pub use message::{CertRef, CertStatus, ResponseError};

/// Handshakes that may wait for a responder at the same time (each holds a thread).
pub const MAX_WAITING: usize = 64;
/// After a failed query, lookups of that certificate answer "no answer" this long.
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(5);
/// Largest response accepted.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why there is no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(
        "the certificate names no OCSP responder (Authority Information Access) and --ocsp-responder-url is not set"
    )]
    NoResponder,
    #[error("responder {url}: {message}")]
    Http { url: String, message: String },
    #[error("responder {url}: no answer within --ocsp-timeout ({timeout:?})")]
    Timeout { url: String, timeout: Duration },
    #[error("responder {url}: {error}")]
    Response { url: String, error: ResponseError },
    #[error("{0}")]
    NotAsked(&'static str),
}

impl QueryError {
    /// A fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NoResponder => "no_responder",
            Self::Http { .. } => "error",
            Self::Timeout { .. } => "timeout",
            Self::Response { error, .. } => error.label(),
            Self::NotAsked(_) => "not_asked",
        }
    }
}

/// A verified answer, as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: CertStatus,
    pub this_update: i64,
    pub next_update: Option<i64>,
    /// When it was received, and until when it is used (nextUpdate or `--ocsp-max-age`).
    pub fetched_at: i64,
    pub valid_until: i64,
    pub responder: String,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Answered(Answer),
    /// No usable answer (policy decides); the error says why.
    NoAnswer(QueryError),
    /// Re-check of a live connection: nothing known yet, a query has been started.
    Pending,
}

/// The outcome of one query, shared by everyone waiting for it.
#[derive(Default)]
struct Flight {
    done: Mutex<Option<Result<Answer, QueryError>>>,
    cond: Condvar,
}

impl Flight {
    fn finish(&self, outcome: Result<Answer, QueryError>) {
        *lock(&self.done) = Some(outcome);
        self.cond.notify_all();
    }

    fn wait(&self, timeout: Duration) -> Option<Result<Answer, QueryError>> {
        let guard = lock(&self.done);
        let (guard, _) =
            self.cond.wait_timeout_while(guard, timeout, |d| d.is_none()).unwrap_or_else(|p| p.into_inner());
        guard.clone()
    }
}

struct Slot {
    query: Arc<Query>,
    answer: Option<Answer>,
    failure: Option<(Instant, QueryError)>,
    flight: Option<Arc<Flight>>,
    last_used: Instant,
    /// The answer's lapse was already reported by [`Ocsp::tick`].
    lapse_reported: bool,
}

/// One certificate to ask about: its CertID and where to ask.
#[derive(Debug, Clone)]
pub struct Query {
    pub cert: CertRef,
    pub cert_id: Vec<u8>,
    /// The certificate's key in the index of open connections
    /// ([`crate::revocation::cert_key`] of its issuer and serial).
    pub key: u64,
    /// The responder (override or the certificate's AIA); `None` if there is none.
    pub url: Option<String>,
}

impl Query {
    /// A query for `cert` (`key`: see [`Query::key`]), asking `override_url` or else the
    /// first http responder of `aia`.
    pub fn new(
        cert: CertRef,
        key: u64,
        aia: &[String],
        override_url: Option<&str>,
    ) -> Result<Self, message::ResponseError> {
        let cert_id = cert.cert_id()?;
        let url = override_url.map(str::to_string).or_else(|| aia.iter().find(|u| u.starts_with("http://")).cloned());
        Ok(Self { cert, cert_id, key, url })
    }
}

/// The OCSP checker: policy, cache and client. Shared by every snapshot (the cache survives
/// reloads).
pub struct Ocsp {
    config: OcspConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    algs: WebPkiSupportedAlgorithms,
    runtime: Option<Handle>,
    slots: Mutex<HashMap<Vec<u8>, Slot>>,
    waiting: AtomicUsize,
    /// Keys of the certificates whose outcome changed, not yet taken by [`Self::changed`].
    changes: Mutex<Vec<u64>>,
    changed: Notify,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Ocsp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ocsp").field("mode", &self.config.mode).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the data consistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ocsp {
    /// A checker for `config` (mode not `off`); queries run on the current runtime, if any.
    pub fn new(config: &OcspConfig, metrics: Arc<Metrics>) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.timeout));
        http.set_nodelay(true);
        Self {
            config: config.clone(),
            client: Client::builder(TokioExecutor::new()).pool_max_idle_per_host(4).build(http),
            algs: crate::crypto::provider().signature_verification_algorithms,
            runtime: Handle::try_current().ok(),
            slots: Mutex::default(),
            waiting: AtomicUsize::new(0),
            changes: Mutex::default(),
            changed: Notify::new(),
            metrics,
        }
    }

    pub fn mode(&self) -> OcspMode {
        self.config.mode
    }

    pub fn config(&self) -> &OcspConfig {
        &self.config
    }

    /// Resolves when a query changed a certificate's outcome, with the keys
    /// ([`Query::key`]) of every certificate changed since the last call: the open
    /// connections to re-check.
    pub async fn changed(&self) -> Vec<u64> {
        loop {
            self.changed.notified().await;
            let keys = std::mem::take(&mut *lock(&self.changes));
            if !keys.is_empty() {
                return keys;
            }
        }
    }

    /// The periodic upkeep (see the module doc): for every cached certificate that `in_use`
    /// (an open connection holds it), marks it used and starts a refresh when its answer is
    /// due or gone; returns the keys of certificates whose answer lapsed since the last
    /// tick. Costs one walk over the cache, none over the connections.
    ///
    /// `in_use` is called with the cache locked; it must not call back into this checker.
    pub fn tick(self: &Arc<Self>, in_use: impl Fn(u64) -> bool) -> Vec<u64> {
        let now = now_secs();
        let mut lapsed = Vec::new();
        let mut slots = lock(&self.slots);
        for slot in slots.values_mut() {
            if let Some(a) = &slot.answer
                && a.valid_until < now
                && !slot.lapse_reported
            {
                slot.lapse_reported = true;
                lapsed.push(slot.query.key);
            }
            if !in_use(slot.query.key) {
                continue;
            }
            slot.last_used = Instant::now();
            // (A lapsed answer is due too.)
            let stale = slot.answer.as_ref().is_none_or(|a| due(a, now));
            if stale && slot.flight.is_none() && !recently_failed(slot) {
                self.start(slot);
            }
        }
        lapsed
    }

    /// The number of cached certificates.
    pub fn cached(&self) -> usize {
        lock(&self.slots).len()
    }

    /// What is known of every cached certificate: (responder, last answer, last failure).
    pub fn known(&self) -> Vec<(Option<String>, Option<Answer>, Option<QueryError>)> {
        lock(&self.slots)
            .values()
            .map(|s| (s.query.url.clone(), s.answer.clone(), s.failure.as_ref().map(|(_, e)| e.clone())))
            .collect()
    }

    /// The answer for a handshake: cached, or asked now (waiting at most `--ocsp-timeout`).
    pub fn for_handshake(self: &Arc<Self>, query: &Query) -> Verdict {
        let now = now_secs();
        let flight = {
            let mut slots = lock(&self.slots);
            let slot = self.slot(&mut slots, query);
            if let Some(answer) = self.usable(slot, now) {
                return Verdict::Answered(answer);
            }
            if let Some((_, e)) = slot.failure.clone().filter(|_| recently_failed(slot)) {
                return Verdict::NoAnswer(e);
            }
            match &slot.flight {
                Some(f) => f.clone(),
                None => self.start(slot),
            }
        };
        match self.wait(&flight) {
            Some(Ok(answer)) => Verdict::Answered(answer),
            Some(Err(e)) => Verdict::NoAnswer(e),
            None => Verdict::NoAnswer(QueryError::Timeout {
                url: query.url.clone().unwrap_or_default(),
                timeout: self.config.timeout,
            }),
        }
    }

    /// The answer for a live connection's re-check: never waits; starts a refresh when the
    /// answer is due or missing.
    pub fn for_recheck(self: &Arc<Self>, query: &Query) -> Verdict {
        let now = now_secs();
        let mut slots = lock(&self.slots);
        let slot = self.slot(&mut slots, query);
        if let Some(answer) = self.usable(slot, now) {
            return Verdict::Answered(answer);
        }
        let failed = recently_failed(slot);
        if let Some((_, e)) = slot.failure.clone() {
            if !failed && slot.flight.is_none() {
                self.start(slot);
            }
            return Verdict::NoAnswer(e);
        }
        if slot.flight.is_none() {
            self.start(slot);
        }
        Verdict::Pending
    }

    /// The slot's answer if it is still valid at `now`; starts a background refresh when it
    /// is due (and no query is in flight or failed recently).
    fn usable(self: &Arc<Self>, slot: &mut Slot, now: i64) -> Option<Answer> {
        let answer = slot.answer.clone().filter(|a| a.valid_until >= now)?;
        if due(&answer, now) && slot.flight.is_none() && !recently_failed(slot) {
            self.start(slot);
        }
        Some(answer)
    }

    /// The slot of `query`, created if needed (evicting the least recently used when full).
    fn slot<'a>(&self, slots: &'a mut HashMap<Vec<u8>, Slot>, query: &Query) -> &'a mut Slot {
        if !slots.contains_key(&query.cert_id) && slots.len() >= self.config.cache_size.max(1) {
            evict(slots, now_secs());
        }
        let slot = slots.entry(query.cert_id.clone()).or_insert_with(|| Slot {
            query: Arc::new(query.clone()),
            answer: None,
            failure: None,
            flight: None,
            last_used: Instant::now(),
            lapse_reported: false,
        });
        slot.last_used = Instant::now();
        self.metrics.ocsp_cache_entries.set(slots.len() as i64);
        slots.get_mut(&query.cert_id).expect("inserted above")
    }

    /// Starts a query for `slot` on the runtime; its outcome lands in the cache.
    fn start(self: &Arc<Self>, slot: &mut Slot) -> Arc<Flight> {
        let flight = Arc::new(Flight::default());
        slot.flight = Some(flight.clone());
        let query = slot.query.clone();
        let this = self.clone();
        let task_flight = flight.clone();
        let run = async move {
            let outcome = this.query(&query).await;
            this.store(&query, &outcome);
            task_flight.finish(outcome);
        };
        match &self.runtime {
            Some(rt) => {
                rt.spawn(run);
            }
            None => flight.finish(Err(QueryError::NotAsked("no async runtime to query the responder"))),
        }
        flight
    }

    /// Waits for `flight` without stalling the runtime's other tasks.
    fn wait(&self, flight: &Flight) -> Option<Result<Answer, QueryError>> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Some(Err(QueryError::NotAsked("too many handshakes are already waiting for an OCSP responder")));
        }
        // The query's own timeout ends the flight; the margin covers scheduling.
        let limit = self.config.timeout + Duration::from_millis(250);
        let outcome = match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::CurrentThread) => {
                Some(Err(QueryError::NotAsked("cannot wait for an OCSP responder on a single-threaded runtime")))
            }
            Ok(_) => tokio::task::block_in_place(|| flight.wait(limit)),
            Err(_) => flight.wait(limit),
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        outcome
    }

    /// Records a query's outcome; queues the certificate for [`Self::changed`] when it may
    /// close its open connections: revoked or unknown, unlike the last answer (or as the
    /// first), or under `required` a first failure.
    fn store(&self, query: &Query, outcome: &Result<Answer, QueryError>) {
        let mut slots = lock(&self.slots);
        let Some(slot) = slots.get_mut(&query.cert_id) else { return };
        slot.flight = None;
        let changed = match outcome {
            Ok(answer) => {
                let before = slot.answer.as_ref().map(|a| a.status);
                slot.answer = Some(answer.clone());
                slot.failure = None;
                slot.lapse_reported = false;
                // A good answer cannot close a connection, whatever came before.
                answer.status != CertStatus::Good && before != Some(answer.status)
            }
            Err(e) => {
                let first = slot.failure.is_none();
                slot.failure = Some((Instant::now(), e.clone()));
                first && self.config.mode == OcspMode::Required
            }
        };
        drop(slots);
        if changed {
            lock(&self.changes).push(query.key);
            self.changed.notify_one();
        }
    }

    /// Asks the responder about `query` once, bounded by `--ocsp-timeout`, and verifies the
    /// answer. Counted and timed in the metrics; failures are logged.
    pub async fn query(&self, query: &Query) -> Result<Answer, QueryError> {
        let started = Instant::now();
        let outcome = match &query.url {
            None => Err(QueryError::NoResponder),
            Some(url) => match tokio::time::timeout(self.config.timeout, self.ask(url, query)).await {
                Ok(r) => r,
                Err(_) => Err(QueryError::Timeout { url: url.clone(), timeout: self.config.timeout }),
            },
        };
        let result = match &outcome {
            Ok(a) => match a.status {
                CertStatus::Good => "good",
                CertStatus::Revoked { .. } => "revoked",
                CertStatus::Unknown => "unknown",
            },
            Err(e) => e.label(),
        };
        self.metrics.ocsp_queries.get_or_create(&ResultLabel { result }).inc();
        self.metrics.ocsp_latency.observe(started.elapsed().as_secs_f64());
        match &outcome {
            Ok(a) => tracing::debug!(result, responder = %a.responder, "OCSP answer"),
            Err(e) => tracing::warn!(event = "ocsp_query_failed", result, "OCSP query failed: {e}"),
        }
        outcome
    }

    async fn ask(&self, url: &str, query: &Query) -> Result<Answer, QueryError> {
        let http_err = |message: String| QueryError::Http { url: url.to_string(), message };
        let uri: Uri = url.parse().map_err(|e| http_err(format!("invalid URL: {e}")))?;
        let body = message::request(&query.cert_id);
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/ocsp-request")
            .header(header::ACCEPT, "application/ocsp-response")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| http_err(e.to_string()))?;
        let resp = self.client.request(req).await.map_err(|e| http_err(crate::error::error_chain(&e)))?;
        if resp.status() != StatusCode::OK {
            return Err(http_err(format!("HTTP status {}", resp.status())));
        }
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| http_err(format!("reading the response: {e}")))?
            .to_bytes();
        let now = now_secs();
        let max_age = i64::try_from(self.config.max_age.as_secs()).unwrap_or(i64::MAX);
        let verified = message::verify(&bytes, &query.cert, now, max_age, &self.algs)
            .map_err(|error| QueryError::Response { url: url.to_string(), error })?;
        Ok(Answer {
            status: verified.status,
            this_update: verified.this_update,
            next_update: verified.next_update,
            fetched_at: now,
            valid_until: verified.next_update.unwrap_or(i64::MAX).min(now.saturating_add(max_age)),
            responder: url.to_string(),
        })
    }
}

/// An answer is due for a refresh once three quarters of its cache life have passed.
fn due(answer: &Answer, now: i64) -> bool {
    let life = answer.valid_until.saturating_sub(answer.fetched_at);
    now >= answer.fetched_at.saturating_add(life.saturating_mul(3) / 4)
}

fn recently_failed(slot: &Slot) -> bool {
    slot.failure.as_ref().is_some_and(|(at, _)| at.elapsed() < FAILURE_BACKOFF)
}

/// Makes room: drops expired answers with no query in flight, then the least recently used
/// tenth of the cache.
fn evict(slots: &mut HashMap<Vec<u8>, Slot>, now: i64) {
    let before = slots.len();
    slots.retain(|_, s| s.flight.is_some() || s.answer.as_ref().is_some_and(|a| a.valid_until >= now));
    if slots.len() < before {
        return;
    }
    let mut by_age: Vec<(Instant, Vec<u8>)> =
        slots.iter().filter(|(_, s)| s.flight.is_none()).map(|(k, s)| (s.last_used, k.clone())).collect();
    by_age.sort_unstable_by_key(|(t, _)| *t);
    for (_, key) in by_age.into_iter().take(before / 10 + 1) {
        slots.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(fetched_at: i64, valid_until: i64) -> Answer {
        Answer {
            status: CertStatus::Good,
            this_update: fetched_at,
            next_update: None,
            fetched_at,
            valid_until,
            responder: String::new(),
        }
    }

    /// A checker without a runtime (queries it starts end at once, unasked), and a query
    /// for a made-up certificate of connection-index key `key`.
    fn checker(mode: OcspMode) -> Arc<Ocsp> {
        let config = OcspConfig {
            mode,
            responder_url: None,
            timeout: Duration::from_secs(1),
            max_age: Duration::from_secs(60),
            cache_size: 100,
        };
        Arc::new(Ocsp::new(&config, Arc::new(Metrics::new())))
    }

    fn query(key: u64) -> Query {
        let none = rustls_pki_types::Der::from_slice(&[]);
        let anchor = rustls_pki_types::TrustAnchor {
            subject: none.clone(),
            subject_public_key_info: none.clone(),
            name_constraints: None,
        };
        let cert = CertRef { serial: vec![1], issuer_name: vec![], issuer_spki: vec![], issuer_anchor: anchor };
        Query { cert, cert_id: key.to_be_bytes().to_vec(), key, url: None }
    }

    fn status(ocsp: &Ocsp, q: &Query, status: CertStatus, valid_until: i64) {
        ocsp.store(q, &Ok(Answer { status, ..answer(now_secs(), valid_until) }));
    }

    fn take_changes(ocsp: &Ocsp) -> Vec<u64> {
        std::mem::take(&mut *lock(&ocsp.changes))
    }

    #[test]
    fn only_outcomes_that_can_close_a_connection_are_changes() {
        let ocsp = checker(OcspMode::IfAvailable);
        let (a, b) = (query(1), query(2));
        ocsp.for_recheck(&a);
        ocsp.for_recheck(&b);
        let later = now_secs() + 3600;
        // A first good answer, and good again: nothing to close.
        status(&ocsp, &a, CertStatus::Good, later);
        status(&ocsp, &a, CertStatus::Good, later);
        assert_eq!(take_changes(&ocsp), Vec::<u64>::new());
        // Good → revoked: a change of that certificate only; revoked again is not.
        status(&ocsp, &a, CertStatus::Revoked { at: 0, reason: None }, later);
        status(&ocsp, &a, CertStatus::Revoked { at: 0, reason: None }, later);
        // A first answer that is not good (after none) is one too.
        status(&ocsp, &b, CertStatus::Unknown, later);
        assert_eq!(take_changes(&ocsp), vec![1, 2]);
        // Failures change nothing under if-available ...
        ocsp.store(&a, &Err(QueryError::NoResponder));
        assert_eq!(take_changes(&ocsp), Vec::<u64>::new());
        // ... and the first one does under required.
        let required = checker(OcspMode::Required);
        required.for_recheck(&a);
        required.store(&a, &Err(QueryError::NoResponder));
        required.store(&a, &Err(QueryError::NoResponder));
        assert_eq!(take_changes(&required), vec![1]);
    }

    #[test]
    fn a_tick_names_each_lapsed_answer_once_and_refreshes_only_what_is_in_use() {
        let ocsp = checker(OcspMode::Required);
        let (used, unused, fresh) = (query(1), query(2), query(3));
        for q in [&used, &unused, &fresh] {
            ocsp.for_recheck(q);
        }
        let past = now_secs() - 1;
        status(&ocsp, &used, CertStatus::Good, past);
        status(&ocsp, &unused, CertStatus::Good, past);
        status(&ocsp, &fresh, CertStatus::Good, now_secs() + 3600);
        take_changes(&ocsp);
        let in_use = |k: u64| k != 2;
        let mut lapsed = ocsp.tick(in_use);
        lapsed.sort_unstable();
        assert_eq!(lapsed, vec![1, 2], "both lapsed answers, used or not, and not the fresh one");
        assert_eq!(ocsp.tick(in_use), Vec::<u64>::new(), "a lapse is named once");
        // The tick started a refresh of the lapsed one in use only (without a runtime, its
        // flight never lands).
        let asked = |k: u64| lock(&ocsp.slots).get(&k.to_be_bytes()[..]).is_some_and(|s| s.flight.is_some());
        assert!(asked(1) && !asked(2) && !asked(3));
        // A new answer that lapses again is named again.
        status(&ocsp, &used, CertStatus::Good, past);
        assert_eq!(ocsp.tick(in_use), vec![1]);
    }

    #[test]
    fn answers_are_due_after_three_quarters_of_their_life() {
        let a = answer(1000, 1400);
        assert!(!due(&a, 1000));
        assert!(!due(&a, 1299));
        assert!(due(&a, 1300));
        assert!(due(&a, 2000));
    }
}
