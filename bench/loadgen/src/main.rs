//! Benchmark tools for kube-crl-proxy vs HAProxy (see bench/README.md):
//! - `loadgen gen-pki`: the PKI and the CRLs (0 to 1,000,000 revoked serials);
//! - `loadgen load`: a TLS client-certificate load generator (new connection per request,
//!   keep-alive HTTP/1.1 and HTTP/2, idle connections, reload under load), printing one
//!   JSON report with rates, latency percentiles and the proxy's CPU time and memory read
//!   from /proc;
//! - `loadgen hold`: the `scale` scenario's client (N connections held, victims, CRL swaps);
//! - `loadgen watch-upstream`: a streaming upstream (one watch event per second per request).

mod hold;
mod load;
mod pkigen;
mod upstream;
mod procfs;
mod tls;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "loadgen", about = "kube-crl-proxy benchmark: PKI/CRL generator and load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the PKI (root, users intermediate, serving, client, front-proxy) and CRLs.
    GenPki(pkigen::Args),
    /// Run one load measurement and print a JSON report on stdout.
    Load(load::Args),
    /// Hold N connections open and answer commands on stdin (the scale scenario).
    Hold(hold::Args),
    /// Serve watch streams (one event line per second per request) over TLS, HTTP/1.1 and h2.
    WatchUpstream(upstream::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::GenPki(a) => pkigen::run(a),
        Command::Load(a) => load::run(a),
        Command::Hold(a) => hold::run(a),
        Command::WatchUpstream(a) => upstream::run(a),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
