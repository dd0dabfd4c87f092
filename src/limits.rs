//! The process's file-descriptor limit against `--max-connections`: at start-up (and in
//! `check`) the soft limit is raised as far as the hard limit allows towards what the
//! connections may need (as Go programs and nginx's `worker_rlimit_nofile` do), and a limit
//! still too low is warned about, saying what to write (a systemd unit's `LimitNOFILE`, a
//! shell's `ulimit -n`).

/// Descriptors per client connection in the worst case: the client's, plus an upstream
/// connection of its own for an upgraded tunnel (exec, attach, port-forward). Ordinary
/// requests share pooled upstream connections.
const PER_CONNECTION: u64 = 2;

/// Descriptors besides client connections: listeners, the admin endpoint, pooled upstream
/// connections, CRL and OCSP fetches, inotify, logs.
const RESERVE: u64 = 1024;

/// What `--max-connections` needs: 2 × connections + 1024.
pub fn recommended(max_connections: usize) -> u64 {
    (max_connections as u64).saturating_mul(PER_CONNECTION).saturating_add(RESERVE)
}

/// The soft "Max open files" limit of this process (Linux `/proc/self/limits`), if known;
/// `None` also when it is unlimited.
pub fn open_files_limit() -> Option<u64> {
    parse_limits(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// Raises the soft limit towards [`recommended`], up to the hard limit; returns the soft
/// limit in force afterwards (as [`open_files_limit`]).
pub fn raise_for(max_connections: usize) -> Option<u64> {
    let want = recommended(max_connections);
    if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get()
        && soft < want
    {
        let _ = rlimit::Resource::NOFILE.set(want.min(hard), hard);
    }
    open_files_limit()
}

fn parse_limits(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// The warning for a limit below what `--max-connections` needs at the least (one descriptor
/// per connection + 1024), if any; it recommends [`recommended`] (tunnels hold a second).
pub fn warning(limit: Option<u64>, max_connections: usize) -> Option<String> {
    let limit = limit?;
    let want = recommended(max_connections);
    (limit < (max_connections as u64).saturating_add(RESERVE)).then(|| {
        format!(
            "the file-descriptor limit is {limit}, too low for --max-connections {max_connections} (one per \
             connection, a second for each exec/port-forward tunnel, plus 1024): connections beyond about {} can fail \
             with \"too many open files\". Raise it (systemd: LimitNOFILE={want} in the unit; shell: ulimit -n \
             {want}) or lower --max-connections",
            limit.saturating_sub(RESERVE)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max cpu time              unlimited            unlimited            seconds\n\
                    Max open files            20000                20000                files\n";
        assert_eq!(parse_limits(text), Some(20_000));
        assert_eq!(parse_limits("Max open files  unlimited unlimited files\n"), None);
        assert!(open_files_limit().is_some(), "Linux exposes /proc/self/limits");
    }

    #[test]
    fn warns_below_two_per_connection_plus_reserve() {
        assert_eq!(recommended(10_000), 21_024);
        assert!(warning(Some(11_024), 10_000).is_none());
        let w = warning(Some(11_023), 10_000).unwrap();
        assert!(w.contains("LimitNOFILE=21024") && w.contains("is 11023"), "{w}");
        assert!(warning(None, 10_000).is_none());
    }
}
