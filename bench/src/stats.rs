//! What the bench measures besides requests: latency percentiles, this process's CPU time and
//! memory, and a server process's CPU time (from `/proc`).

use std::time::Duration;

/// Latencies of one kind of operation.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// The mean in milliseconds; 0 when empty.
    pub fn mean_ms(&self) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.iter().sum::<Duration>().as_secs_f64() * 1000.0 / self.0.len() as f64
    }

    /// The `p`-th percentile (0..=100) in milliseconds; 0 when empty.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
    }
}

/// CPU time (user + system) this process has used so far.
pub fn own_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// This process's resident memory in bytes (`VmRSS`).
pub fn own_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// CPU time a server process has used so far, read two ways. `/proc/<pid>/stat` counts the
/// whole process in 10 ms ticks: too coarse for the 100 ms of one small measurement. The sum of
/// `/proc/<pid>/task/*/schedstat` counts nanoseconds, but only of the threads still alive.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessCpu {
    ticks: Duration,
    threads: Option<Duration>,
}

impl ProcessCpu {
    /// The CPU time of `pids` together.
    pub fn read(pids: &[u32]) -> Self {
        pids.iter().map(|&pid| Self { ticks: stat_ticks(pid), threads: thread_nanos(pid) }).fold(
            Self { ticks: Duration::ZERO, threads: Some(Duration::ZERO) },
            |sum, p| Self { ticks: sum.ticks + p.ticks, threads: sum.threads.zip(p.threads).map(|(a, b)| a + b) },
        )
    }

    /// The CPU time used since `before`: the nanosecond count when both ways agree to within
    /// the ticks' rounding (two readings, 10 ms each) and 10%; else a thread ended in between
    /// and took its time out of the sum, so the tick count.
    pub fn since(&self, before: &ProcessCpu) -> Duration {
        let ticks = self.ticks.saturating_sub(before.ticks);
        let Some(threads) = self.threads.zip(before.threads).and_then(|(a, b)| a.checked_sub(b)) else {
            return ticks;
        };
        let tolerance = Duration::from_millis(20) + ticks / 10;
        if threads.abs_diff(ticks) <= tolerance {
            threads
        } else {
            ticks
        }
    }
}

/// CPU time (user + system) process `pid` has used so far, in whole ticks, from
/// `/proc/<pid>/stat`.
fn stat_ticks(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Duration::ZERO };
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return Duration::ZERO };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime is field 14 and stime field 15: indexes 11 and 12 after the state field.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / hz)
}

/// The time on CPU of process `pid`'s live threads, in nanoseconds, from the first field of
/// each `/proc/<pid>/task/<tid>/schedstat`; `None` where the kernel has no schedstat.
fn thread_nanos(pid: u32) -> Option<Duration> {
    let mut sum = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        // A thread may end between the listing and the read: it then counts for nothing.
        let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        let nanos: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
        sum += Duration::from_nanos(nanos);
    }
    Some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_ranked_sample() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.push(Duration::from_millis(ms));
        }
        assert_eq!(l.percentile_ms(50.0).round(), 51.0);
        assert_eq!(l.percentile_ms(99.0).round(), 99.0);
        assert_eq!(l.percentile_ms(100.0).round(), 100.0);
        assert_eq!(Latencies::default().percentile_ms(99.0), 0.0);
    }

    #[test]
    fn own_cpu_and_memory_are_read() {
        let before = own_cpu();
        let mut x = 0u64;
        // Burn at least 50 ms of CPU: /proc counts in 10 ms ticks.
        while own_cpu() < before + Duration::from_millis(50) {
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_add(i * i));
            }
        }
        assert!(own_cpu() > before);
        assert!(own_rss_bytes() > 0);
        let cpu = ProcessCpu::read(&[std::process::id()]);
        assert!(cpu.ticks > Duration::ZERO && cpu.threads > Some(Duration::ZERO), "{cpu:?}");
    }

    #[test]
    fn server_cpu_is_counted_in_nanoseconds_unless_a_thread_ended() {
        let at = |ticks_ms: u64, threads_us: u64| ProcessCpu {
            ticks: Duration::from_millis(ticks_ms),
            threads: Some(Duration::from_micros(threads_us)),
        };
        let before = at(1_000, 1_004_321);
        // 3.2 ms used: the ticks say 0 or 10 ms, the threads say 3.2 ms.
        assert_eq!(at(1_000, 1_007_521).since(&before), Duration::from_micros(3_200));
        assert_eq!(at(1_010, 1_007_521).since(&before), Duration::from_micros(3_200));
        // A thread with 500 ms ended between the readings: its time left the sum.
        assert_eq!(at(1_600, 607_521).since(&before), Duration::from_millis(600));
        assert_eq!(at(1_600, 1_104_321).since(&before), Duration::from_millis(600));
        // No schedstat: the ticks.
        let no_threads = ProcessCpu { ticks: Duration::from_millis(1_020), threads: None };
        assert_eq!(no_threads.since(&before), Duration::from_millis(20));
    }
}
