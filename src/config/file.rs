//! Reading the YAML file given with `--config`: its keys are the flags' names without the
//! dashes, so the known keys are read off the command line's definition, and each section of
//! flags reads its own keys from it.

use std::path::Path;

use clap::{Args, Command};
use serde::de::DeserializeOwned;

use super::RunFlags;
use super::layers::Origin;
use crate::error::ConfigError;

/// What a config file must set at least, for the "not configured yet" messages.
const WHAT_TO_WRITE: &str = "write YAML with the keys of the flags (`kube-crl-proxy --help` lists them), at least \
     tls-cert-file, client-ca-file, crl-file (or crl-url), upstream, upstream-ca-file and proxy-client-cert-file";

/// Reads the config file. A missing file, or one that sets nothing (empty, or only comments
/// as the packaged template) while the flags do not configure the proxy either, is refused
/// with a message saying what to write: the packaged service must not run unconfigured.
pub(super) fn read(path: &Path, flags: &RunFlags) -> Result<RunFlags, ConfigError> {
    let not_configured = |what: &str| ConfigError::file("--config", path, format!("{what}: {WHAT_TO_WRITE}"));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_configured("does not exist, so the proxy is not configured"));
        }
        Err(e) => return Err(ConfigError::file("--config", path, e.to_string())),
    };
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::file("--config", path, e.to_string()))?;
    if value.is_null() {
        if flags.listen.tls_cert_file.is_none() {
            return Err(not_configured("sets no keys yet (only comments), so the proxy is not configured"));
        }
        return Ok(RunFlags::default());
    }
    let Some(keys) = value.as_mapping() else {
        return Err(ConfigError::file("--config", path, "must be a mapping of keys (the flags' names) to values"));
    };
    let known = keys_of_flags();
    for key in keys.keys() {
        let key = key.as_str().map_or_else(|| format!("{key:?}"), str::to_string);
        if !known.contains(&key) {
            return Err(Origin::File(path).err(
                &key,
                "unknown key; the keys are the flags' names without the dashes (`kube-crl-proxy --help` lists them)",
            ));
        }
    }
    // Each section from the text, not from `value`: the errors then name the key and line.
    Ok(RunFlags {
        config: None,
        listen: parse(&text, path)?,
        clients: parse(&text, path)?,
        fetch: parse(&text, path)?,
        ocsp: parse(&text, path)?,
        upstream: parse(&text, path)?,
        requestheader: parse(&text, path)?,
        limits: parse(&text, path)?,
        logging: parse(&text, path)?,
    })
}

fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    serde_yaml_ng::from_str(text).map_err(|e| ConfigError::file("--config", path, e.to_string()))
}

/// Every long flag of `run` but `--config`: the keys a file may set.
fn keys_of_flags() -> Vec<String> {
    let cmd = RunFlags::augment_args(Command::new("kube-crl-proxy"));
    cmd.get_arguments().filter_map(|a| a.get_long()).filter(|l| *l != "config").map(str::to_string).collect()
}
