//! What the machine's cores did during the measured window, from the kernel's CPU time
//! accounting (`/proc/stat`): how much was idle and how much the hypervisor took.
//!
//! Why the load tool reports it: the signer and the load tool share the cores, so a run with
//! idle cores did not saturate them, and on a VM the host may run other guests on our cores
//! ("steal"). On the 2-vCPU development VM, ES256 Sign at concurrency 16 measured 26.6-31.0k/s
//! in runs with 0.7-3% steal and 21.5-22.7k/s in runs with 12% (BENCHMARKS.md): a figure taken
//! while the host stole understates the signer, and the report says so rather than leave the
//! reader to guess from the tail latencies.

use serde::Serialize;

/// Where the aggregate CPU counters live (Linux; elsewhere the report omits the share).
const PROC_STAT: &str = "/proc/stat";

/// Steal above this share of the cores' time makes the text report warn.
pub const STEAL_WARNING_PERCENT: f64 = 5.0;

/// The kernel's cumulative CPU time over all cores, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Every tick counted: user, nice, system, idle, iowait, irq, softirq and steal.
    total: u64,
    /// Idle and iowait: no task of any process ran.
    idle: u64,
    /// Time the hypervisor ran something else while a core of this machine wanted to run.
    steal: u64,
}

impl CpuTimes {
    /// The counters now, or `None` where `/proc/stat` cannot be read or parsed.
    pub fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string(PROC_STAT).ok()?)
    }

    /// Parses the aggregate `cpu` line (see proc(5)). Kernels before 2.6.11 lack steal; the
    /// guest columns are already counted in user and nice, so they are not added again.
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|line| line.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = fields[..] else {
            return None;
        };
        Some(Self {
            total: user + nice + system + idle + iowait + irq + softirq + steal,
            idle: idle + iowait,
            steal,
        })
    }

    /// How the cores' time was spent between `earlier` and these counters; `None` if no
    /// tick passed (a window shorter than a clock tick) or the counters went backwards.
    pub fn share_since(&self, earlier: &Self) -> Option<CpuShare> {
        let total = self.total.checked_sub(earlier.total).filter(|&t| t > 0)?;
        let percent = |part: u64| (part as f64 * 1000.0 / total as f64).round() / 10.0;
        Some(CpuShare {
            idle_percent: percent(self.idle.checked_sub(earlier.idle)?),
            steal_percent: percent(self.steal.checked_sub(earlier.steal)?),
        })
    }
}

/// Shares of all cores' time over the measured window, whole machine (every process).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CpuShare {
    /// No task ran: the load did not fill the cores.
    pub idle_percent: f64,
    /// Taken by the hypervisor: the figures understate what the cores can do.
    pub steal_percent: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  2813837 0 574988 1258903 10815 0 2361 54461 0 0\n\
                        cpu0 1406918 0 287494 629451 5407 0 1180 27230 0 0\n\
                        intr 123 0\n";

    #[test]
    fn reads_the_aggregate_line_not_a_core() {
        let times = CpuTimes::parse(STAT).unwrap();
        assert_eq!(times.idle, 1_258_903 + 10_815);
        assert_eq!(times.steal, 54_461);
        assert_eq!(
            times.total,
            2_813_837 + 574_988 + 1_258_903 + 10_815 + 2_361 + 54_461
        );
    }

    #[test]
    fn shares_are_percentages_of_the_ticks_between_two_readings() {
        let earlier = CpuTimes::parse(STAT).unwrap();
        // 600 ticks later (3 s on 2 cores): 60 idle, 12 stolen.
        let later = CpuTimes {
            total: earlier.total + 600,
            idle: earlier.idle + 60,
            steal: earlier.steal + 12,
        };
        assert_eq!(
            later.share_since(&earlier),
            Some(CpuShare {
                idle_percent: 10.0,
                steal_percent: 2.0
            })
        );
        assert_eq!(earlier.share_since(&earlier), None, "no tick passed");
        assert_eq!(earlier.share_since(&later), None, "counters went backwards");
    }

    #[test]
    fn a_line_it_cannot_read_gives_nothing() {
        assert_eq!(CpuTimes::parse("intr 1 2 3\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 3\n"), None, "too few columns");
        assert_eq!(CpuTimes::parse("cpu  1 2 x 4 5 6 7 8\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_machine_has_the_counters() {
        assert!(CpuTimes::read().is_some());
    }
}
