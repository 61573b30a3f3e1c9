//! The load generator and the freshness poller.
//!
//! The generator sends new calls (unique ids) to ingest at a steady rate, or as fast as
//! its connections go: each of its tasks claims the next call and sleeps until that
//! call's slot (`i / rate` after the start), so a slow answer delays only the calls
//! whose tasks are all busy, and the achieved rate shows it. Bodies are the call sample
//! with the id spliced in (no JSON work per request).
//!
//! The poller runs on a thread of its own (its CPU time is measured apart from the
//! generator's): every 100 ms it asks `calls` for the sampled calls (one in
//! `FreshnessSpec::sample`, by id) answered but not yet seen,
//! oldest first, in one `tenant = … AND call_id IN (…)` query, so its cost follows the
//! backlog, not the run's length: the view merges the aggregate states of `calls_state`
//! grouped by (tenant, key_day, call_id), and with `enable_optimize_predicate_expression`
//! (off by default on 18.16) the filter is applied below that GROUP BY and prunes by the
//! table's key. A call's freshness is from its 200 answer to the first poll that
//! returned it (the 100 ms period bounds the resolution).
//!
//! Once sending is done, every answered call of the window outside the sample is looked
//! for too (for up to `FINAL_CHECK`): one missing is a lost call, whatever the sample
//! said. Sampling keeps the poller from being the server's largest client: asking for
//! every call cost ClickHouse about 45% of a core at 2,750 calls/s (README, "Capacity
//! benchmark").
//!
//! Calls of the warm-up are sent but not measured; the window's calls are.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::tests::ClickHouse;
use tokio::task::JoinHandle;

use crate::util::CallBodies;

/// Ids of the generated calls start here (the readiness call is id 1).
const FIRST_ID: u64 = 20_000_000;
/// Most ids in one poll; older ones first. A backlog this deep means freshness is far
/// past any goal anyway. 20,000 ids of 8 digits make a query of ~180 kB, under the
/// server's default `max_query_size` (256 KiB).
const MAX_POLLED_IDS: usize = 20_000;
const POLL_EVERY: Duration = Duration::from_millis(100);
/// How long the poller waits after the last send for the window's calls to show up.
const DRAIN_GRACE: Duration = Duration::from_secs(30);
/// How long the calls outside the sample may take to show up once the sample's have.
const FINAL_CHECK: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub(crate) struct LoadSpec {
    /// Calls per second; `None`: as fast as the connections go.
    pub(crate) rate: Option<u32>,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    /// Requests in flight at most.
    pub(crate) connections: usize,
    pub(crate) freshness: Option<FreshnessSpec>,
}

/// Where and how to measure freshness.
#[derive(Debug, Clone)]
pub(crate) struct FreshnessSpec {
    pub(crate) clickhouse_url: String,
    pub(crate) database: String,
    /// The goal for p99; with `stop_when_missed`, the run stops as soon as more than 1%
    /// of the window's planned calls are known to miss it (the outcome is then certain).
    pub(crate) limit: Duration,
    pub(crate) stop_when_missed: bool,
    /// One call in this many (by id) is polled for its freshness; 1: every call.
    pub(crate) sample: u64,
}

/// What one run measured over its window.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// Calls of the window answered otherwise, or not at all.
    pub(crate) errors: u64,
    /// Of those, calls never sent: the run stopped, or the generator fell more than
    /// 5 s behind (answers too slow for its connections).
    pub(crate) unsent: u64,
    /// The others by what came back: a status code, `no answer` or `answer cut`.
    pub(crate) refused: BTreeMap<String, u64>,
    /// Time to ingest's answer of the window's calls, sorted.
    pub(crate) answer_times: Vec<Duration>,
    /// Answered calls per second of the window.
    pub(crate) answered_per_s: f64,
    pub(crate) freshness: Option<Freshness>,
    /// When the run stopped early: how far into the window.
    pub(crate) stopped_after: Option<Duration>,
    pub(crate) polls: PollStats,
}

impl Outcome {
    /// What came back for the window's calls not answered 2xx, e.g. `3 calls not
    /// answered 2xx (no answer: 3)`; `None` when every call was.
    pub(crate) fn errors_detail(&self) -> Option<String> {
        if self.errors == 0 {
            return None;
        }
        let mut answers: Vec<String> = self
            .refused
            .iter()
            .map(|(answer, n)| format!("{answer}: {n}"))
            .collect();
        if self.unsent > 0 {
            answers.push(format!("not sent in time: {}", self.unsent));
        }
        Some(format!(
            "{} calls not answered 2xx ({})",
            self.errors,
            answers.join(", ")
        ))
    }

    /// The `q` quantile of ingest's answer times.
    pub(crate) fn answer_quantile(&self, q: f64) -> Option<Duration> {
        let n = self.answer_times.len();
        (n > 0).then(|| self.answer_times[((n - 1) as f64 * q) as usize])
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Freshness {
    /// Delays of the calls seen, sorted.
    delays: Vec<Duration>,
    /// Sampled calls answered but never seen in `calls`.
    pub(crate) unseen: usize,
    /// Answered calls outside the sample never seen in `calls` (lost, or later than the
    /// final check).
    pub(crate) missing: usize,
}

impl Freshness {
    /// Answered calls of the window never seen, sampled or not.
    pub(crate) fn not_visible(&self) -> usize {
        self.unseen + self.missing
    }

    /// The `q` quantile of the sampled answered calls, counting unseen ones as infinitely late
    /// (`None` when the quantile falls among them, or nothing was answered).
    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.delays.len() + self.unseen;
        if n == 0 {
            return None;
        }
        self.delays.get(((n - 1) as f64 * q) as usize).copied()
    }
}

/// The poller's own cost, from its side.
#[derive(Debug, Clone, Default)]
pub(crate) struct PollStats {
    pub(crate) queries: u64,
    pub(crate) total: Duration,
    pub(crate) slowest: Duration,
    pub(crate) failed: u64,
}

impl PollStats {
    pub(crate) fn mean_ms(&self) -> f64 {
        self.total.as_secs_f64() * 1000.0 / self.queries.max(1) as f64
    }
}

/// State shared by the generator's tasks, the poller and the caller.
struct Shared {
    started: Instant,
    spec: LoadSpec,
    next: AtomicU64,
    stop: AtomicBool,
    sending_done: AtomicBool,
    stopped_at: Mutex<Option<Duration>>,
    answered: AtomicU64,
    /// Failed calls of the window by what came back: a status code, `no answer` or `answer cut`.
    refused: Mutex<BTreeMap<String, u64>>,
    last_answer: Mutex<Duration>,
    answer_times: Mutex<Vec<Duration>>,
    /// Sampled answered calls of the window not yet seen: id → answer time since `started`.
    pending: Mutex<BTreeMap<u64, Duration>>,
    /// Answered calls of the window outside the sample (looked for at the end).
    unsampled: Mutex<Vec<u64>>,
}

impl Shared {
    fn window_end(&self) -> Duration {
        self.spec.warmup + self.spec.duration
    }

    /// Calls the window plans to send (rate mode).
    fn planned(&self) -> Option<(u64, u64)> {
        let rate = f64::from(self.spec.rate?);
        let first = (self.spec.warmup.as_secs_f64() * rate) as u64;
        let end = (self.window_end().as_secs_f64() * rate) as u64;
        Some((first, end))
    }

    fn stop_now(&self) {
        if !self.stop.swap(true, Ordering::Relaxed) {
            let at = self.started.elapsed().saturating_sub(self.spec.warmup);
            *self.stopped_at.lock().unwrap() = Some(at);
        }
    }
}

/// A running load: generator tasks and, when freshness is measured, the poller.
pub(crate) struct Load {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    poller: Option<std::thread::JoinHandle<(Freshness, PollStats)>>,
    /// The poller thread's id, to measure its CPU apart.
    pub(crate) poller_tid: Option<u32>,
}

impl Load {
    /// Starts sending at once (the warm-up).
    pub(crate) fn start(spec: LoadSpec, hook: &str, bodies: CallBodies) -> Load {
        let shared = Arc::new(Shared {
            started: Instant::now(),
            next: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            sending_done: AtomicBool::new(false),
            stopped_at: Mutex::new(None),
            answered: AtomicU64::new(0),
            refused: Mutex::new(BTreeMap::new()),
            last_answer: Mutex::new(Duration::ZERO),
            answer_times: Mutex::new(Vec::new()),
            pending: Mutex::new(BTreeMap::new()),
            unsampled: Mutex::new(Vec::new()),
            spec,
        });
        let (poller, poller_tid) = match &shared.spec.freshness {
            Some(freshness) => {
                let (tx, rx) = std::sync::mpsc::channel();
                let (shared, freshness) = (shared.clone(), freshness.clone());
                let handle = std::thread::spawn(move || {
                    let _ = tx.send(crate::cpu::current_tid());
                    poll(&shared, &freshness)
                });
                (Some(handle), rx.recv().ok().flatten())
            }
            None => (None, None),
        };
        let client = reqwest::Client::new();
        let workers = (0..shared.spec.connections)
            .map(|_| {
                let (shared, client, hook, bodies) = (
                    shared.clone(),
                    client.clone(),
                    hook.to_owned(),
                    bodies.clone(),
                );
                tokio::spawn(async move { send(&shared, &client, &hook, &bodies).await })
            })
            .collect();
        Load {
            shared,
            workers,
            poller,
            poller_tid,
        }
    }

    /// Waits until the warm-up is over.
    pub(crate) async fn warmed_up(&self) {
        tokio::time::sleep_until((self.shared.started + self.shared.spec.warmup).into()).await;
    }

    /// Waits until the window is over, or the run stopped early.
    pub(crate) async fn window_over(&self) {
        let end = self.shared.started + self.shared.window_end();
        while Instant::now() < end && !self.shared.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the last answers and the poller, and returns what the window measured.
    pub(crate) async fn finish(self) -> Outcome {
        for worker in self.workers {
            let _ = worker.await;
        }
        self.shared.sending_done.store(true, Ordering::Relaxed);
        let (freshness, polls) = match self.poller {
            Some(poller) => {
                let (freshness, polls) = tokio::task::spawn_blocking(move || poller.join())
                    .await
                    .expect("joining the poller")
                    .expect("the poller panicked");
                (Some(freshness), polls)
            }
            None => (None, PollStats::default()),
        };
        let shared = &self.shared;
        let answered = shared.answered.load(Ordering::Relaxed);
        let refused = std::mem::take(&mut *shared.refused.lock().unwrap());
        let refused_total: u64 = refused.values().sum();
        let mut unsent = 0;
        let window = match shared.planned() {
            Some((first, end)) => {
                unsent = (end - first).saturating_sub(answered + refused_total);
                // From the first call's slot to the last answer: a generator or an
                // ingest that falls behind shows as a lower rate.
                let last = *shared.last_answer.lock().unwrap();
                last.saturating_sub(shared.spec.warmup)
                    .max(shared.spec.duration)
            }
            None => shared.spec.duration,
        };
        let stopped_after = *shared.stopped_at.lock().unwrap();
        let mut answer_times = std::mem::take(&mut *shared.answer_times.lock().unwrap());
        answer_times.sort();
        Outcome {
            errors: refused_total + unsent,
            refused,
            unsent,
            answer_times,
            answered_per_s: answered as f64 / window.as_secs_f64().max(1e-3),
            freshness,
            stopped_after,
            polls,
        }
    }
}

/// One generator task: claim the next call, wait for its slot, send it, record.
async fn send(shared: &Shared, client: &reqwest::Client, hook: &str, bodies: &CallBodies) {
    let spec = &shared.spec;
    let planned = shared.planned();
    // Calls due later than this are not sent: the generator or ingest fell far behind.
    let give_up = shared.window_end() + Duration::from_secs(5);
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        let measured = match (planned, spec.rate) {
            (Some((first, end)), Some(rate)) => {
                if i >= end {
                    return;
                }
                let slot = Duration::from_secs_f64(i as f64 / f64::from(rate));
                tokio::time::sleep_until((shared.started + slot).into()).await;
                if shared.started.elapsed() > give_up || shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                i >= first
            }
            _ => {
                let now = shared.started.elapsed();
                if now >= shared.window_end() {
                    return;
                }
                now >= spec.warmup
            }
        };
        let id = FIRST_ID + i;
        let sent = Instant::now();
        let response = client
            .post(hook)
            .header("content-type", "application/json")
            .body(bodies.body(id))
            .send()
            .await;
        // Read the answer whole, so the connection goes back to the pool.
        let answer = match response {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(_) => Ok(()),
                Err(_) => Err("answer cut".to_owned()),
            },
            Ok(r) => Err(r.status().as_u16().to_string()),
            Err(_) => Err("no answer".to_owned()),
        };
        let at = shared.started.elapsed();
        if spec.rate.is_none() && at > shared.window_end() {
            continue;
        }
        if !measured {
            continue;
        }
        if answer.is_ok() {
            shared.answered.fetch_add(1, Ordering::Relaxed);
            shared.answer_times.lock().unwrap().push(sent.elapsed());
            {
                let mut last = shared.last_answer.lock().unwrap();
                *last = (*last).max(at);
            }
            if let Some(freshness) = &spec.freshness {
                if id % freshness.sample.max(1) == 0 {
                    shared.pending.lock().unwrap().insert(id, at);
                } else {
                    shared.unsampled.lock().unwrap().push(id);
                }
            }
        } else if let Err(why) = answer {
            *shared.refused.lock().unwrap().entry(why).or_default() += 1;
        }
    }
}

/// The poller: its own thread and single-threaded runtime.
fn poll(shared: &Shared, spec: &FreshnessSpec) -> (Freshness, PollStats) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the poller");
    runtime.block_on(poll_loop(shared, spec))
}

async fn poll_loop(shared: &Shared, spec: &FreshnessSpec) -> (Freshness, PollStats) {
    let clickhouse = ClickHouse::new(&spec.clickhouse_url, &spec.database);
    let planned = shared.planned().map_or(0, |(first, end)| end - first);
    // More than this many sampled calls past the limit and p99 cannot be under it.
    let budget = planned / spec.sample.max(1) / 100;
    let mut delays = Vec::new();
    let mut late = 0u64;
    let mut stats = PollStats::default();
    let mut done_since = None;
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ids: Vec<u64> = {
            let pending = shared.pending.lock().unwrap();
            pending.keys().take(MAX_POLLED_IDS).copied().collect()
        };
        if !ids.is_empty() {
            let asked = Instant::now();
            let seen = visible(&clickhouse, &ids).await;
            let took = asked.elapsed();
            stats.queries += 1;
            stats.total += took;
            stats.slowest = stats.slowest.max(took);
            let at = shared.started.elapsed();
            match seen {
                Ok(seen) => {
                    let mut pending = shared.pending.lock().unwrap();
                    for id in seen {
                        if let Some(answered) = pending.remove(&id) {
                            let delay = at.saturating_sub(answered);
                            late += u64::from(delay >= spec.limit);
                            delays.push(delay);
                        }
                    }
                }
                Err(e) => {
                    stats.failed += 1;
                    if stats.failed <= 3 {
                        eprintln!("freshness poll failed: {e}");
                    }
                }
            }
        }
        let now = shared.started.elapsed();
        let pending = shared.pending.lock().unwrap();
        if spec.stop_when_missed && planned > 0 {
            let overdue = pending
                .values()
                .filter(|answered| now.saturating_sub(**answered) >= spec.limit)
                .count() as u64;
            if late + overdue > budget {
                shared.stop_now();
            }
        }
        if shared.sending_done.load(Ordering::Relaxed) {
            let since = *done_since.get_or_insert(now);
            let stopped = shared.stop.load(Ordering::Relaxed);
            if pending.is_empty() || stopped || now > since + DRAIN_GRACE {
                break;
            }
        }
    }
    delays.sort();
    let unseen = shared.pending.lock().unwrap().len();
    let stopped = shared.stop.load(Ordering::Relaxed);
    let missing = if stopped {
        // The verdict is in; the rest of the window was not sent.
        0
    } else {
        let unsampled = std::mem::take(&mut *shared.unsampled.lock().unwrap());
        final_check(&clickhouse, unsampled, &mut stats).await
    };
    (
        Freshness {
            delays,
            unseen,
            missing,
        },
        stats,
    )
}

/// Looks for `ids` in `calls` until all are seen or `FINAL_CHECK` has passed; returns
/// how many were never seen.
async fn final_check(clickhouse: &ClickHouse, mut ids: Vec<u64>, stats: &mut PollStats) -> usize {
    let deadline = Instant::now() + FINAL_CHECK;
    loop {
        let mut left = Vec::new();
        for chunk in ids.chunks(MAX_POLLED_IDS) {
            match visible(clickhouse, chunk).await {
                Ok(seen) => {
                    let seen: std::collections::HashSet<u64> = seen.into_iter().collect();
                    left.extend(chunk.iter().filter(|id| !seen.contains(id)));
                }
                Err(e) => {
                    stats.failed += 1;
                    eprintln!("final visibility check failed: {e}");
                    left.extend_from_slice(chunk);
                }
            }
        }
        ids = left;
        if ids.is_empty() || Instant::now() >= deadline {
            return ids.len();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Which of `ids` `calls` shows now.
async fn visible(clickhouse: &ClickHouse, ids: &[u64]) -> Result<Vec<u64>, String> {
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    // The setting puts the filter below the view's GROUP BY (see the module's doc).
    let sql = format!(
        "SELECT call_id FROM {{db}}.calls WHERE tenant = '{}' AND call_id IN ({list}) \
         SETTINGS enable_optimize_predicate_expression = 1",
        crate::util::TENANT
    );
    let rows = clickhouse.rows(&sql).await?;
    Ok(rows.iter().filter_map(|r| r["call_id"].as_u64()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freshness(ms: &[u64], unseen: usize) -> Freshness {
        let mut delays: Vec<Duration> = ms.iter().map(|m| Duration::from_millis(*m)).collect();
        delays.sort();
        Freshness {
            delays,
            unseen,
            missing: 0,
        }
    }

    #[test]
    fn quantiles_count_unseen_calls_as_infinitely_late() {
        let f = freshness(&(1..=100).collect::<Vec<_>>(), 0);
        assert_eq!(f.quantile(0.5), Some(Duration::from_millis(50)));
        assert_eq!(f.quantile(0.99), Some(Duration::from_millis(99)));
        let f = freshness(&(1..=98).collect::<Vec<_>>(), 2);
        assert_eq!(f.quantile(0.5), Some(Duration::from_millis(50)));
        assert_eq!(f.quantile(0.99), None);
        assert_eq!(freshness(&[], 0).quantile(0.5), None);
    }
}
