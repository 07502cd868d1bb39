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
