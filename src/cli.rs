//! The command line: every subcommand and how `main` sees it, plus what is generated from
//! it for the Debian package (`packaging/`): the man pages (clap_mangen) and the shell
//! completions (clap_complete), written by the hidden `generate-assets` subcommand so that
//! they always match the flags of the binary that ships with them.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand};
use clap_mangen::roff::{Roff, bold, italic, roman};

use crate::config::RunFlags;

#[derive(Parser)]
#[command(name = "kube-crl-proxy", version, about = "CRL-enforcing front proxy for kube-apiserver")]
#[command(long_about = "CRL-enforcing front proxy for kube-apiserver.\n\n\
    Without a subcommand, runs the proxy: it verifies every client certificate against the CAs \
    of --client-ca-file and their CRLs (and OCSP with --ocsp), refuses revoked ones with the TLS \
    alert certificate_revoked, and forwards everyone else to kube-apiserver with request-header \
    authentication (X-Remote-User, X-Remote-Group, X-Remote-Extra-*), presenting the front-proxy \
    client certificate. Every flag can also be set in the YAML file given with --config, under \
    the same name without the dashes.")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunFlags,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a throwaway PKI, a kube-apiserver stand-in and the proxy, and show a valid, a
    /// revoked and a token user going through it.
    Demo(DemoArgs),
    /// Load everything as `run` would (never listening, never contacting the upstream), print
    /// a summary and warnings (logs, e.g. failed CRL fetches, go to stderr). Exit 0 if loadable, 1 on warnings with --strict, 64 on errors.
    Check(crate::check::CheckArgs),
    /// Check kube-apiserver's static pod manifest against the proxy: loopback bind address,
    /// request-header flags. Exit 0 if fine, 1 on problems, 64 if unreadable.
    CheckApiserver(crate::check::CheckApiserverArgs),
    /// Tell whether a client certificate would be accepted now, why, and which identity
    /// headers it maps to. Exit 0 if accepted, 1 if refused, 64 on bad input.
    Inspect(crate::check::InspectArgs),
    /// Write the man pages and shell completions (for packaging).
    #[command(hide = true)]
    GenerateAssets(GenerateAssetsArgs),
}

// `kube-crl-proxy demo`: run by the binary (src/demo.rs), the library has no demo.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Directory for the throwaway PKI, config and kubeconfigs [default: a new temporary directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Port for the proxy on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub port: u16,
    /// Exit after showing the three requests instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
}

#[derive(clap::Args, Debug)]
pub struct GenerateAssetsArgs {
    /// Directory to write `man/` and `completions/` into (created if missing).
    #[arg(value_name = "DIR")]
    pub out_dir: PathBuf,
}

/// A man page paragraph: runs of text, each in a style.
type Paragraph = &'static [(&'static str, Style)];

/// The man page's sections beyond what clap knows: (heading, paragraphs).
const EXTRA_SECTIONS: &[(&str, &[Paragraph])] = &[
    (
        "EXIT STATUS",
        &[
            &[
                ("0", Style::Bold),
                ("  stopped cleanly after SIGTERM or SIGINT (or, for the subcommands, passed).", Style::Roman),
            ],
            &[
                ("1", Style::Bold),
                (
                    "  could not listen or start; check: warnings with --strict; check-apiserver: problems; inspect: refused.",
                    Style::Roman,
                ),
            ],
            &[
                ("64", Style::Bold),
                (
                    "  a bad flag, config key or file, named in the message (systemd does not restart the packaged unit on it).",
                    Style::Roman,
                ),
            ],
        ],
    ),
    (
        "FILES",
        &[
            &[
                ("/etc/kube-crl-proxy/config.yaml", Style::Italic),
                (
                    "  the configuration the packaged systemd unit passes with --config; the service refuses to start until it exists.",
                    Style::Roman,
                ),
            ],
            &[
                ("/etc/kube-crl-proxy/config.yaml.example", Style::Italic),
                ("  a commented example for a kubeadm control-plane node.", Style::Roman),
            ],
        ],
    ),
    (
        "SIGNALS",
        &[&[(
            "SIGHUP reloads every certificate, key and CRL file (they are also reloaded when they change); SIGTERM and \
             SIGINT stop accepting and let in-flight requests finish for --shutdown-grace.",
            Style::Roman,
        )]],
    ),
    (
        "SEE ALSO",
        &[&[
            ("kube-crl-proxy-check", Style::Bold),
            ("(1), ", Style::Roman),
            ("kube-crl-proxy-check-apiserver", Style::Bold),
            ("(1), ", Style::Roman),
            ("kube-crl-proxy-inspect", Style::Bold),
            ("(1), ", Style::Roman),
            ("kube-crl-proxy-demo", Style::Bold),
            ("(1), ", Style::Roman),
            ("kube-apiserver", Style::Bold),
            ("(1); /usr/share/doc/kube-crl-proxy/", Style::Roman),
        ]],
    ),
];

#[derive(Clone, Copy)]
enum Style {
    Roman,
    Bold,
    Italic,
}

/// Writes `DIR/man/*.1` (the proxy and each visible subcommand) and
/// `DIR/completions/{kube-crl-proxy.bash,_kube-crl-proxy,kube-crl-proxy.fish}`.
pub fn generate_assets(out_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let man_dir = out_dir.join("man");
    let completion_dir = out_dir.join("completions");
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(&completion_dir)?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();

    let mut written = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.push(clap_mangen::Man::new(sub.clone()).generate_to(&man_dir)?);
    }
    let path = man_dir.join("kube-crl-proxy.1");
    let mut file = std::fs::File::create(&path)?;
    main_page(cmd.clone(), &mut file)?;
    file.flush()?;
    written.push(path);

    let mut visible = without_hidden_subcommands(&Cli::command());
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        written.push(clap_complete::generate_to(shell, &mut visible, "kube-crl-proxy", &completion_dir)?);
    }
    Ok(written)
}

/// The command as completions should offer it. clap_complete offers hidden subcommands (not
/// hidden flags), and clap cannot remove a subcommand, so the top level is rebuilt from the
/// parts that are shown.
fn without_hidden_subcommands(cmd: &clap::Command) -> clap::Command {
    let mut visible = clap::Command::new("kube-crl-proxy")
        .args_conflicts_with_subcommands(true)
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = cmd.get_about() {
        visible = visible.about(about.clone());
    }
    visible.version(env!("CARGO_PKG_VERSION"))
}

/// The proxy's own page: clap's sections, then [`EXTRA_SECTIONS`], then the version.
fn main_page(cmd: clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd).manual("kube-crl-proxy manual");
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    let mut roff = Roff::default();
    for (heading, paragraphs) in EXTRA_SECTIONS {
        roff.control("SH", [*heading]);
        for (i, runs) in paragraphs.iter().enumerate() {
            if i > 0 {
                roff.control("PP", []);
            }
            roff.text(
                runs.iter()
                    .map(|(text, style)| match style {
                        Style::Roman => roman(*text),
                        Style::Bold => bold(*text),
                        Style::Italic => italic(*text),
                    })
                    .collect::<Vec<_>>(),
            );
        }
    }
    roff.to_writer(w)?;
    man.render_version_section(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn assets_cover_every_flag_and_visible_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let written = generate_assets(dir.path()).unwrap();
        assert_eq!(written.len(), 4 + 1 + 3, "{written:?}");
        let man = std::fs::read_to_string(dir.path().join("man/kube-crl-proxy.1")).unwrap();
        let bash = std::fs::read_to_string(dir.path().join("completions/kube-crl-proxy.bash")).unwrap();
        for arg in Cli::command().get_arguments().filter(|a| !a.is_hide_set()) {
            let Some(long) = arg.get_long() else { continue };
            // roff escapes '-' as '\-'.
            assert!(man.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))), "--{long} not in the man page");
            assert!(bash.contains(&format!("--{long}")), "--{long} not in the bash completion");
        }
        for section in ["EXIT STATUS", "FILES", "SEE ALSO", "SUBCOMMANDS"] {
            assert!(
                man.contains(&format!(".SH \"{section}\"")) || man.contains(&format!(".SH {section}")),
                "{section}"
            );
        }
        let check = std::fs::read_to_string(dir.path().join("man/kube-crl-proxy-check-apiserver.1")).unwrap();
        assert!(check.contains("MANIFEST"), "{check}");
        assert!(!man.contains("generate\\-assets") && !bash.contains("generate-assets"), "the hidden command leaked");
    }
}
