//! The capacity benchmark's report: the found rate, one table of CPU per process (at
//! rest, at the found rate, at the lowest failing rate), the bottleneck by the rule of
//! [`crate::capacity::bottleneck`], the generator's ceiling, and the command to
//! reproduce it.

use std::time::Duration;

use crate::capacity::{bottleneck, Ceiling, MACHINE_FULL, MIN_RATE, SATURATED};
use crate::cpu;
use crate::freshness::{self, Trial};

/// Other processes above this share of the machine make the figures low: said so.
const NOISY_OTHERS: f64 = 0.20;

pub(crate) struct Report<'a> {
    pub(crate) duration_s: u64,
    pub(crate) goal: Duration,
    pub(crate) partitions: i32,
    pub(crate) trials: &'a [(Trial, Result<(), String>)],
    pub(crate) found: Option<u32>,
    /// The machine before the search, nothing of ours running.
    pub(crate) rest: &'a cpu::Window,
    pub(crate) ceiling: &'a Ceiling,
}

impl Report<'_> {
    pub(crate) fn print(&self) {
        let found = self
            .found
            .and_then(|rate| self.trials.iter().find(|(t, _)| t.rate == rate))
            .map(|(t, _)| t);
        let above = self
            .trials
            .iter()
            .filter(|(t, r)| r.is_err() && self.found.is_none_or(|f| t.rate > f))
            .min_by_key(|(t, _)| t.rate);
        println!();
        self.headline(found);
        if let Some((trial, why)) = above {
            let why = why.as_ref().err().map_or("", String::as_str);
            println!("  the lowest failing rate: {} calls/s ({why})", trial.rate);
        }
        println!();
        let mut columns = vec![("at rest".to_owned(), self.rest)];
        for trial in found.into_iter().chain(above.map(|(t, _)| t)) {
            columns.push((format!("at {}/s", trial.rate), &trial.cpu));
        }
        print_table(&columns);
        if let Some(trial) = found {
            self.at_found_rate(trial);
        }
        self.ceiling();
        let search: Vec<String> = self
            .trials
            .iter()
            .map(|(t, r)| format!("{} {}", t.rate, if r.is_ok() { "pass" } else { "fail" }))
            .collect();
        println!("search: {}", search.join(", "));
        let args: Vec<String> = std::env::args().skip(1).collect();
        println!("reproduce: scripts/bench-pipeline {}", args.join(" "));
    }

    fn headline(&self, found: Option<&Trial>) {
        let goal = self.goal.as_millis();
        match found {
            Some(trial) => {
                let fresh = trial.outcome.freshness.clone().unwrap_or_default();
                println!(
                    "capacity: {} calls/s sustained for {} s with p99 freshness {} ms (goal: \
                     under {goal} ms); {} partitions, {:.0} cores",
                    trial.rate,
                    self.duration_s,
                    freshness::ms(fresh.quantile(0.99)),
                    self.partitions,
                    cpu::cores()
                );
            }
            None => println!(
                "capacity: no rate from {MIN_RATE} calls/s up was sustained with p99 \
                 freshness under {goal} ms"
            ),
        }
    }

    fn at_found_rate(&self, trial: &Trial) {
        let tables: Vec<String> = trial
            .inserts
            .0
            .iter()
            .filter(|(_, rate)| *rate > 0.0)
            .map(|(table, rate)| format!("{} {rate:.1}", table.name()))
            .collect();
        println!("inserts/s at {} calls/s: {}", trial.rate, tables.join(", "));
        let polls = &trial.outcome.polls;
        println!(
            "freshness poller: 1 call in {} polled every 100 ms, every call looked for at \
             the end; {} queries, mean {:.1} ms, slowest {} ms, {} failed; \
             ingest's answers: p50 {} ms, p99 {} ms",
            trial.poll_sample,
            polls.queries,
            polls.mean_ms(),
            polls.slowest.as_millis(),
            polls.failed,
            freshness::ms(trial.outcome.answer_quantile(0.5)),
            freshness::ms(trial.outcome.answer_quantile(0.99)),
        );
        println!("bottleneck: {}", bottleneck(&trial.cpu));
        println!(
            "  (rule: the machine ≥{:.0}% busy → the cores; else the process nearest its \
             ceiling, max(CPU ÷ all cores, busiest thread ÷ one core), if ≥{:.0}%; else none \
             on CPU)",
            MACHINE_FULL * 100.0,
            SATURATED * 100.0
        );
        let all = trial.cpu.cores * 100.0;
        if trial.cpu.others_pct() > NOISY_OTHERS * all {
            println!(
                "warning: other processes used {:.0}% of {all:.0}% during the window: the \
                 capacity is lower than on a quiet machine",
                trial.cpu.others_pct()
            );
        }
    }

    fn ceiling(&self) {
        let ceiling = self.ceiling;
        let cpu_of = |name: &str| {
            ceiling
                .cpu
                .usages
                .iter()
                .find(|u| u.name == name)
                .map_or(0.0, |u| u.cpu_pct)
        };
        let share = self.found.map_or(String::new(), |rate| {
            format!(
                ": the capacity is {:.2} of it",
                f64::from(rate) / ceiling.per_s.max(1.0)
            )
        });
        println!(
            "load generator ceiling: {:.0} calls/s against ingest with INGEST_SINK=discard \
             for {} s ({} errors; generator {:.0}% CPU, ingest {:.0}%, machine {:.0}%){share}",
            ceiling.per_s,
            ceiling.seconds,
            ceiling.errors,
            cpu_of("load generator"),
            cpu_of("ingest"),
            ceiling.cpu.machine_pct,
        );
    }
}

/// CPU per process, one column pair (total, busiest thread) per window; rows are the
/// processes of any window, then others' processes and the whole machine.
fn print_table(columns: &[(String, &cpu::Window)]) {
    let mut names: Vec<&str> = Vec::new();
    for (_, window) in columns {
        for usage in &window.usages {
            if !names.contains(&usage.name.as_str()) {
                names.push(&usage.name);
            }
        }
    }
    // Services first, then the shared services, then ours: the longest window lists
    // them in that order already, except for "at rest", which has only the shared ones.
    names.sort_by_key(|name| {
        columns
            .iter()
            .filter_map(|(_, w)| w.usages.iter().position(|u| u.name == *name))
            .max()
    });
    let mut header = format!("{:<20}", "% of one core");
    for (title, _) in columns {
        header += &format!("  {title:>10}  {:>14}", "busiest thread");
    }
    println!("{header}");
    for name in names {
        let mut line = format!("{name:<20}");
        for (_, window) in columns {
            line += &match window.usages.iter().find(|u| u.name == name) {
                Some(u) if u.gone => format!("  {:>10}  {:>14}", "gone", "-"),
                Some(u) => format!("  {:>10.1}  {:>14.1}", u.cpu_pct, u.busiest_thread_pct),
                None => format!("  {:>10}  {:>14}", "-", "-"),
            };
        }
        println!("{line}");
    }
    for (label, total) in [("others' processes", false), ("machine", true)] {
        let mut line = format!("{label:<20}");
        for (_, window) in columns {
            let value = if total {
                window.machine_pct
            } else {
                window.others_pct()
            };
            line += &format!("  {value:>10.1}  {:>14}", "");
        }
        println!("{}", line.trim_end());
    }
    let seconds: Vec<String> = columns
        .iter()
        .map(|(title, w)| format!("{title} {:.0} s", w.seconds))
        .collect();
    println!(
        "(windows: {}; the machine has {:.0}%)",
        seconds.join(", "),
        columns.first().map_or(0.0, |(_, w)| w.cores * 100.0)
    );
}
