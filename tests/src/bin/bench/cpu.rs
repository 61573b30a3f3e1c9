//! CPU time of processes, their threads and the whole machine, from `/proc`: two
//! snapshots around a measured window give each process's share of a core and its
//! busiest thread's (a thread at 100% is a serial limit however many cores are idle).
//! Linux only; reads nothing but `/proc`.

use std::collections::HashMap;
use std::time::Instant;

/// What to measure: a process (all its threads), or a process without one of its
/// threads (the load generator without the freshness poller's thread).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) pid: u32,
    /// A thread of `pid` left out (measured as a target of its own, if at all).
    pub(crate) without_tid: Option<u32>,
    /// Only this thread of `pid`.
    pub(crate) only_tid: Option<u32>,
}

impl Target {
    pub(crate) fn process(name: &str, pid: u32) -> Target {
        Target {
            name: name.to_owned(),
            pid,
            without_tid: None,
            only_tid: None,
        }
    }
}

/// CPU use of one target over a window, in % of one core (200% = both of 2 cores).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Usage {
    pub(crate) name: String,
    pub(crate) cpu_pct: f64,
    pub(crate) busiest_thread_pct: f64,
    /// The process was gone at the end of the window (restarted by someone else, or
    /// crashed): its figures are incomplete.
    pub(crate) gone: bool,
}

/// CPU use of the machine and of each target over one window.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    pub(crate) seconds: f64,
    pub(crate) cores: f64,
    /// Every process of the machine, ours and others', in % of one core.
    pub(crate) machine_pct: f64,
    pub(crate) usages: Vec<Usage>,
}

impl Window {
    /// What the machine spent beyond our targets: other engineers' builds and tools.
    pub(crate) fn others_pct(&self) -> f64 {
        let ours: f64 = self.usages.iter().map(|u| u.cpu_pct).sum();
        (self.machine_pct - ours).max(0.0)
    }
}

/// A first snapshot; [`Meter::finish`] takes the second and computes the window.
pub(crate) struct Meter {
    at: Instant,
    machine: Option<MachineTicks>,
    targets: Vec<(Target, HashMap<u32, u64>)>,
}

impl Meter {
    pub(crate) fn start(targets: Vec<Target>) -> Meter {
        let machine = machine_ticks();
        let targets = targets
            .into_iter()
            .map(|t| {
                let threads = thread_ticks(t.pid);
                (t, threads)
            })
            .collect();
        Meter {
            at: Instant::now(),
            machine,
            targets,
        }
    }

    pub(crate) fn finish(self) -> Window {
        let seconds = self.at.elapsed().as_secs_f64().max(1e-3);
        let tick = clock_ticks_per_s();
        let cores = cores();
        let machine_pct = match (self.machine, machine_ticks()) {
            (Some(a), Some(b)) => machine_share(a, b) * cores * 100.0,
            _ => 0.0,
        };
        let usages = self
            .targets
            .into_iter()
            .map(|(target, before)| {
                let after = thread_ticks(target.pid);
                let gone = after.is_empty();
                let deltas = thread_deltas(&before, &after, &target);
                let pct = |ticks: u64| ticks as f64 / tick / seconds * 100.0;
                Usage {
                    name: target.name,
                    cpu_pct: pct(deltas.iter().sum()),
                    busiest_thread_pct: pct(deltas.iter().copied().max().unwrap_or(0)),
                    gone,
                }
            })
            .collect();
        Window {
            seconds,
            cores,
            machine_pct,
            usages,
        }
    }
}

/// Ticks each thread spent in the window. A thread that ended within it is missed (its
/// time is folded into the process total only); the services keep their threads.
fn thread_deltas(
    before: &HashMap<u32, u64>,
    after: &HashMap<u32, u64>,
    target: &Target,
) -> Vec<u64> {
    after
        .iter()
        .filter(|(tid, _)| target.without_tid != Some(**tid))
        .filter(|(tid, _)| target.only_tid.is_none_or(|only| only == **tid))
        .map(|(tid, ticks)| ticks.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .collect()
}

/// utime + stime of every thread of `pid`, in clock ticks; empty when it is gone.
fn thread_ticks(pid: u32) -> HashMap<u32, u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let tid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        Some((tid, stat_ticks(&stat)?))
    })
    .collect()
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
pub(crate) fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy and total ticks of all cores, from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MachineTicks {
    busy: u64,
    total: u64,
}

fn machine_ticks() -> Option<MachineTicks> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// `cpu user nice system idle iowait irq softirq steal …`: idle and iowait are not busy;
/// guest time is already inside user.
pub(crate) fn parse_machine_ticks(proc_stat: &str) -> Option<MachineTicks> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let idle = v.get(3)? + v.get(4)?;
    let busy = v.iter().sum::<u64>() - idle;
    Some(MachineTicks {
        busy,
        total: busy + idle,
    })
}

/// The share (0–1) of all cores that was busy between two snapshots.
pub(crate) fn machine_share(a: MachineTicks, b: MachineTicks) -> f64 {
    let total = b.total.saturating_sub(a.total);
    if total == 0 {
        return 0.0;
    }
    b.busy.saturating_sub(a.busy) as f64 / total as f64
}

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`; 100 on every common
/// Linux, the fallback).
fn clock_ticks_per_s() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

pub(crate) fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, usize::from) as f64
}

/// The id of the calling thread (`/proc/thread-self` names `<pid>/task/<tid>`).
pub(crate) fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "2404 (java (main) x) S 1 2404 2404 0 -1 4194560 120 0 0 0 \
                    1500 250 0 0 20 0 80 0 300 4000000000 60000";
        assert_eq!(stat_ticks(stat), Some(1750));
    }

    #[test]
    fn a_truncated_stat_line_reads_as_nothing() {
        assert_eq!(stat_ticks("12 (x) S 1 2"), None);
    }

    #[test]
    fn machine_share_counts_iowait_as_idle() {
        let a = parse_machine_ticks("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n").unwrap();
        let b = parse_machine_ticks("cpu  200 0 200 800 200 0 0 0 0 0\n").unwrap();
        // 200 busy ticks out of 400.
        assert!((machine_share(a, b) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn thread_deltas_leave_out_the_excluded_thread_and_count_new_threads_from_zero() {
        let before = HashMap::from([(1, 100), (2, 50)]);
        let after = HashMap::from([(1, 150), (2, 90), (3, 7)]);
        let mut all = Target::process("bench", 1);
        let mut deltas = thread_deltas(&before, &after, &all);
        deltas.sort();
        assert_eq!(deltas, vec![7, 40, 50]);
        all.without_tid = Some(2);
        let mut deltas = thread_deltas(&before, &after, &all);
        deltas.sort();
        assert_eq!(deltas, vec![7, 50]);
        all.without_tid = None;
        all.only_tid = Some(2);
        assert_eq!(thread_deltas(&before, &after, &all), vec![40]);
    }

    #[test]
    fn measures_this_process() {
        let meter = Meter::start(vec![Target::process("me", std::process::id())]);
        let until = Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        let window = meter.finish();
        // A shared machine may give this thread a small share of a core, never none.
        assert!(window.usages[0].cpu_pct > 5.0, "{window:?}");
        assert!(window.usages[0].busiest_thread_pct <= window.usages[0].cpu_pct + 1e-9);
    }
}
