//! The config file parser: any file contents give Ok or Err, never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use kube_crl_proxy::config::{Config, RunFlags};
use libfuzzer_sys::fuzz_target;

/// One file per fuzzing process, rewritten for each input.
fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("kube-crl-proxy-fuzz-config-{}.yaml", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let path = path();
    std::fs::write(path, data).expect("write the config file");
    let _ = Config::resolve(RunFlags { config: Some(path.clone()), ..Default::default() });
});
