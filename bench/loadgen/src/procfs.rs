//! Reading a process's CPU time and memory from /proc.

/// Clock ticks per second of /proc/<pid>/stat (USER_HZ; 100 on every Linux build we run on).
pub const CLK_TCK: f64 = 100.0;

/// utime + stime of the whole process (all threads), in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / CLK_TCK)
}

/// Sum of cpu_seconds over the pids; None if any is unreadable.
pub fn cpu_sum(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

/// A field of /proc/<pid>/status in kB (VmRSS, VmHWM, ...).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub fn rss_sum_kb(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|p| status_kb(*p, "VmRSS")).sum()
}

pub fn self_cpu_seconds() -> Option<f64> {
    cpu_seconds(std::process::id())
}
