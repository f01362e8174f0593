//! Where the CPU went during a phase, read from `/proc` (Linux only; elsewhere every figure
//! reads zero).
//!
//! The load generator runs on its own Tokio runtime whose threads are named
//! [`LOAD_THREAD_NAME`]; the service runs on the process's main runtime. Summing the
//! `utime + stime` of the threads carrying that name gives the load generator's CPU, the
//! process total minus that gives the service's; the machine's interrupt, soft-interrupt and
//! steal time is reported on its own (loopback networking is mostly soft interrupts), and the
//! rest of the machine's busy time is everybody else (PostgreSQL, NATS, other processes). Ticks are turned into
//! cores by dividing by the machine's total ticks over the same interval, so the kernel's
//! clock rate cancels out.

use std::time::Instant;

/// Name of the load generator's threads (at most 15 bytes: the kernel truncates `comm`).
pub const LOAD_THREAD_NAME: &str = "bench-load";

/// Cumulative CPU counters at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    pub at: Instant,
    /// utime + stime of the load generator's threads.
    load_ticks: u64,
    /// utime + stime of the whole process (includes exited threads).
    process_ticks: u64,
    /// Busy ticks of the whole machine, summed over every CPU.
    busy_ticks: u64,
    /// Of those, interrupts, soft interrupts (loopback networking runs here) and time
    /// stolen by the hypervisor.
    kernel_ticks: u64,
    /// All ticks of the whole machine (busy + idle + iowait), summed over every CPU.
    total_ticks: u64,
}

/// CPU used between two samples, in cores (1.0 = one core fully busy).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CpuUsage {
    /// The load generator's threads.
    pub load: f64,
    /// The rest of this process: the service under test.
    pub ledger: f64,
    /// Other processes: PostgreSQL, NATS, and anything else running on the machine.
    pub other: f64,
    /// Interrupts, soft interrupts (loopback TCP) and hypervisor steal, attributed to no one.
    pub kernel: f64,
    /// Nobody.
    pub idle: f64,
}

impl CpuUsage {
    /// The load generator's share of all busy CPU, 0..1.
    pub fn load_share(&self) -> f64 {
        let busy = self.load + self.ledger + self.other + self.kernel;
        if busy > 0.0 {
            self.load / busy
        } else {
            0.0
        }
    }
}

/// Takes a sample now.
pub fn sample() -> CpuSample {
    let (busy_ticks, kernel_ticks, total_ticks) = machine_ticks().unwrap_or((0, 0, 0));
    CpuSample {
        at: Instant::now(),
        load_ticks: thread_ticks(LOAD_THREAD_NAME),
        process_ticks: std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| stat_ticks(&s).map(|(_, t)| t))
            .unwrap_or(0),
        busy_ticks,
        kernel_ticks,
        total_ticks,
    }
}

/// What was used between `from` and `to`.
pub fn usage(from: &CpuSample, to: &CpuSample) -> CpuUsage {
    let total = to.total_ticks.saturating_sub(from.total_ticks) as f64;
    if total <= 0.0 {
        return CpuUsage::default();
    }
    let cores = cpus() as f64;
    let as_cores = |ticks: u64| ticks as f64 / total * cores;
    let load = to.load_ticks.saturating_sub(from.load_ticks);
    let process = to.process_ticks.saturating_sub(from.process_ticks);
    let busy = to.busy_ticks.saturating_sub(from.busy_ticks);
    let kernel = to.kernel_ticks.saturating_sub(from.kernel_ticks);
    CpuUsage {
        load: as_cores(load),
        ledger: as_cores(process.saturating_sub(load)),
        other: as_cores(busy.saturating_sub(process).saturating_sub(kernel)),
        kernel: as_cores(kernel),
        idle: as_cores((total as u64).saturating_sub(busy)),
    }
}

/// Number of CPUs the machine's tick counters cover.
pub fn cpus() -> usize {
    std::fs::read_to_string("/proc/stat")
        .map(|s| {
            s.lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count()
        })
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

/// Resident memory of this process now and at its peak, in MiB.
pub fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The machine's load averages (1, 5, 15 min) as `/proc/loadavg` shows them: a busy machine
/// (other builds, tests) shows here and in the `other` CPU column.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Sums utime + stime over this process's threads whose name starts with `prefix`.
fn thread_ticks(prefix: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|s| stat_ticks(&s))
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, ticks)| ticks)
        .sum()
}

/// Parses a `/proc/.../stat` line into (comm, utime + stime). The name is in parentheses and
/// may itself contain spaces or parentheses, so the fields are counted from the last `)`.
pub fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state is field 3 of proc(5), utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// (busy, of which interrupts + steal, total) ticks of the machine from the first line of
/// `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let idle = get(3) + get(4);
    let kernel = get(5) + get(6) + get(7);
    let busy = get(0) + get(1) + get(2) + kernel;
    Some((busy, kernel, busy + idle))
}
