//! What the benchmarks share.

#![allow(dead_code)] // each bench uses some of it

/// Peak resident memory of this process so far (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU time used so far, in ms: this process's own (user + system), and its reaped children's (from
/// `/proc/self/stat`, in clock ticks of 10 ms). A figure that CPU contention on a busy machine moves
/// far less than wall time.
pub fn cpu_ms() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    // after the command: state is field 3; utime, stime, cutime, cstime are fields 14 to 17
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() < 4 {
        return (0.0, 0.0);
    }
    ((f[0] + f[1]) * 10.0, (f[2] + f[3]) * 10.0)
}

/// Runs this bench binary again with `args` (a `--one…` mode that prints `seconds bytes rows rss_kib`)
/// and answers `(seconds, bytes, peak RSS in KiB)`.
pub fn child(args: &[&str]) -> (f64, f64, f64) {
    let exe = std::env::current_exe().expect("exe");
    let o = std::process::Command::new(exe)
        .args(args)
        .output()
        .expect("child");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (f[0], f[1], f[3])
}

/// `baseline` once to warm caches, then `baseline` and `infra` alternated `n` times: the best time of
/// each (infra's with its bytes and peak RSS).
pub fn best_of(
    n: usize,
    baseline: impl Fn() -> f64,
    infra: impl Fn() -> (f64, f64, f64),
) -> (f64, (f64, f64, f64)) {
    baseline();
    let mut best_base = f64::MAX;
    let mut best_infra = (f64::MAX, 0.0, 0.0);
    for _ in 0..n {
        best_base = best_base.min(baseline());
        let i = infra();
        if i.0 < best_infra.0 {
            best_infra = i;
        }
    }
    (best_base, best_infra)
}
