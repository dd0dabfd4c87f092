//! The `kube-crl-proxy` binary: parse flags (defined in `cli`), set up logging, resolve the
//! configuration (exit 64 on a bad one), and hand over to the library's `run`; or run a
//! subcommand (`demo`, in `demo.rs`, is the binary's own: the library has no scaffolding).

#![forbid(unsafe_code)]

mod demo;

use std::process::ExitCode;

use clap::Parser;
use kube_crl_proxy::RunError;
use kube_crl_proxy::cli::{Cli, Command};
use kube_crl_proxy::config::{Config, LogFormat, OcspMode, RunFlags};

/// Exit status for a bad flag, config field or file (EX_USAGE).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match cli.command {
        Some(Command::Demo(args)) => {
            init_logging(LogFormat::Text, "warn");
            demo::main(args)
        }
        Some(Command::Check(args)) => {
            init_logging(LogFormat::Text, "warn");
            finish(kube_crl_proxy::check::check(args))
        }
        Some(Command::CheckApiserver(args)) => finish(kube_crl_proxy::check::check_apiserver(args)),
        Some(Command::Inspect(args)) => {
            init_logging(LogFormat::Text, "warn");
            finish(kube_crl_proxy::check::inspect(args))
        }
        Some(Command::GenerateAssets(args)) => match kube_crl_proxy::cli::generate_assets(&args.out_dir) {
            Ok(files) => {
                files.iter().for_each(|f| println!("{}", f.display()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kube-crl-proxy: {}: {e}", args.out_dir.display());
                ExitCode::FAILURE
            }
        },
        None => run(cli.run),
    }
}

/// Prints a report: exit 0 if it passed, 1 if not; a load error exits 64 like `run`.
fn finish(result: Result<kube_crl_proxy::check::Report, kube_crl_proxy::error::ConfigError>) -> ExitCode {
    match result {
        Ok(report) => {
            print!("{}", report.text());
            if report.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("kube-crl-proxy: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run(flags: RunFlags) -> ExitCode {
    let config = match Config::resolve(flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kube-crl-proxy: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(config.log_format, &config.log_level);
    let rt = match runtime(&config) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kube-crl-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(kube_crl_proxy::run(&config, |_| {}, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let RunError::Config(e) = &e {
                tracing::error!("{e}");
            }
            eprintln!("kube-crl-proxy: {e}");
            match e {
                RunError::Config(_) | RunError::ReadyFile { .. } => ExitCode::from(EXIT_USAGE),
                RunError::Listen { .. } | RunError::ListenAdmin { .. } => ExitCode::FAILURE,
            }
        }
    }
}

/// The tokio runtime: one worker thread per core the process may use (its CPU affinity, e.g.
/// `taskset`). On one core, the current-thread scheduler runs the same tasks without the
/// work-stealing machinery (less CPU per request; see bench/README.md) — unless OCSP is on:
/// a handshake waiting for the responder hands its worker over with `block_in_place`, which
/// needs the multi-thread scheduler, or every other connection would stall behind it.
fn runtime(config: &Config) -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores == 1 && config.ocsp.mode == OcspMode::Off {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Runtime::new()
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| "info".into());
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
