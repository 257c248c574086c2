//! What the benchmarks read off the processes they measure: quantiles of the exported
//! histograms and CPU times from /proc. Shared by `schedule` and `replicas`.

use std::time::Duration;

/// The cumulative buckets `(le, count)` of histogram `metric` in the exposition `text`, in
/// order of `le`.
pub fn histogram_buckets(text: &str, metric: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{metric}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| {
            let le = line.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = line.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The `q` quantile of cumulative `buckets`, interpolated within its bucket as PromQL's
/// histogram_quantile does.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return f64::NAN;
    };
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let share = (rank - lower.1) / (count - lower.1).max(f64::MIN_POSITIVE);
            return lower.0 + (le - lower.0) * share;
        }
        lower = (le, count);
    }
    f64::NAN
}

/// CPU time (user + system) of process `pid`, from /proc/<pid>/stat (clock ticks of 10 ms).
pub fn process_cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// Which resident set size of a process to read from /proc.
#[derive(Clone, Copy)]
pub enum Rss {
    /// The highest it has been (VmHWM).
    Peak,
    /// What it is now (VmRSS).
    Now,
}

/// Resident set size of process `pid` in MiB.
pub fn process_rss_mib(pid: u32, which: Rss) -> f64 {
    let field = match which {
        Rss::Peak => "VmHWM:",
        Rss::Now => "VmRSS:",
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}
