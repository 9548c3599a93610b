//! The signing threads: a fixed set of OS threads, one per core, that compute signatures off
//! the executor thread, so the protocol work never waits behind a long one and the cores it
//! leaves idle sign too. Jobs are taken in arrival order.
//!
//! Why not `spawn_blocking`: measured with RSA-4096 at concurrency 16 (BENCHMARKS.md), tokio's
//! blocking pool grows a thread per waiting call, so the cores are oversubscribed and Sign's
//! p99 more than doubles; a pool sized to the cores keeps the same throughput with a tight
//! tail, and leaves the executor free to answer FetchKeys and Metadata.
//!
//! Short jobs ([`SignatureCost::Short`]: ES256, and on aws-lc-rs ES384, ES512, RSA-2048): the
//! executor thread helps. Each hand-off to a thread and back costs two thread wake-ups, which
//! on a VM is a large share of a 0.02-0.3 ms signature, so the executor computes a short job
//! itself when it has nothing else to do (a lone call is signed with no hand-off at all), and
//! yields to its other tasks and the socket between two signatures: FetchKeys then waits for
//! at most one short signature. Under load the protocol work keeps the executor busy and the
//! threads sign; a thread kept busy by a queue that refills does not sleep, so it costs no
//! wake-up per job. One thread is kept for long jobs only, so the executor and the other
//! threads make one signer per core.
//!
//! It never holds a job's inputs after the job ran, and never logs them.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use crate::keys::SignatureCost;

/// Computes a signature and hands the result to the waiting call as told.
type Job = Box<dyn FnOnce(Handover<'_>) + Send>;
/// Sends a computed result to its caller, waking the caller's task.
type Delivery = Box<dyn FnOnce() + Send>;

/// Where a job's result goes once computed.
enum Handover<'a> {
    /// On the executor thread: to the waiting call at once.
    AtOnce,
    /// On a signing thread: through the helper task (see [`Deliveries`]).
    Later(&'a Shared),
}

struct Queued {
    job: Job,
    /// A short job: the executor thread may compute it.
    short: bool,
}

/// Which jobs a signing thread takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Takes {
    Any,
    /// Long jobs only: the executor stands in for this thread on short ones.
    LongOnly,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<Queued>>,
    /// Threads taking any job wait here, the long-only thread on `long_queued`.
    any_queued: Condvar,
    long_queued: Condvar,
    /// Threads waiting on each condvar: a notification (a syscall) is sent only when one is.
    idle_any: AtomicUsize,
    idle_long_only: AtomicUsize,
    /// Results computed on the signing threads, for the helper task to hand over.
    delivered: Mutex<Deliveries>,
    /// Wakes the executor's helper task when a short job is queued or a result delivered.
    helper: tokio::sync::Notify,
    helper_busy: AtomicBool,
    closed: AtomicBool,
}

/// Why results go through the helper: waking a task from another thread costs the executor's
/// runtime a syscall (an `eventfd` write) and an extra turn of its I/O driver per wake, i.e.
/// per call. Handed over by the helper on the executor thread, the wakes are local, and the
/// signing threads wake the executor at most once per batch of results (only when the helper
/// waits for work; not while it is queued or running).
#[derive(Default)]
struct Deliveries {
    /// The helper task runs (so no other is started) and collects; when not (no runtime, or
    /// its runtime shut down), threads hand results over themselves.
    collecting: bool,
    pending: Vec<Delivery>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Queued>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_delivered(&self) -> MutexGuard<'_, Deliveries> {
        self.delivered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// On a signing thread: a result for the helper to hand over, or handed over here when
    /// no helper collects.
    fn deliver_later(&self, delivery: Delivery) {
        let mut delivered = self.lock_delivered();
        if !delivered.collecting {
            drop(delivered);
            return delivery();
        }
        let first = delivered.pending.is_empty();
        delivered.pending.push(delivery);
        drop(delivered);
        // A result already pending means the helper was told and will take this one too.
        if first {
            self.helper.notify_one();
        }
    }

    /// On the executor thread: hands every pending result to its caller.
    fn deliver_pending(&self) {
        let pending = std::mem::take(&mut self.lock_delivered().pending);
        for delivery in pending {
            delivery();
        }
    }

    /// The first queued job `takes` allows, removed from the queue.
    fn take(queue: &mut VecDeque<Queued>, takes: Takes) -> Option<Queued> {
        let index = match takes {
            Takes::Any => 0,
            Takes::LongOnly => queue.iter().position(|queued| !queued.short)?,
        };
        queue.remove(index)
    }
}

/// A lazily started set of signing threads. The threads exit when the pool is dropped.
#[derive(Default)]
pub(crate) struct SigningPool {
    shared: OnceLock<Arc<Shared>>,
}

impl std::fmt::Debug for SigningPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningPool").finish_non_exhaustive()
    }
}

impl SigningPool {
    /// Runs `work`, a signature of the given cost, off the caller's task: on a signing thread,
    /// or for a short one possibly on the executor's helper task between other tasks. Waits
    /// without blocking the executor. `None` if the work panicked (the thread survives it).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        cost: SignatureCost,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |handover| {
            // The caller gave up (deadline passed, client went away): skip the signature
            // rather than spend a core on a token nobody will receive.
            if done.is_closed() {
                return;
            }
            // A panic drops `done`: the caller sees `None`.
            let Ok(value) = std::panic::catch_unwind(AssertUnwindSafe(work)) else {
                return;
            };
            match handover {
                Handover::AtOnce => {
                    let _ = done.send(value);
                }
                Handover::Later(shared) => shared.deliver_later(Box::new(move || {
                    let _ = done.send(value);
                })),
            }
        });
        // The helper needs a runtime to live on; without one (never in `signet serve`) the
        // job is simply left to the threads.
        let in_runtime = tokio::runtime::Handle::try_current().is_ok();
        let short = cost == SignatureCost::Short && in_runtime;
        let shared = self.shared();
        if in_runtime {
            self.start_helper(shared);
        }
        // A lone short job while the helper is free is the helper's: waking a thread for it
        // would cost a wake-up for a job the thread most likely finds gone.
        let helper_takes_it = {
            let mut queue = shared.lock();
            queue.push_back(Queued { job, short });
            short
                && !shared.helper_busy.load(Ordering::Acquire)
                && queue.iter().filter(|queued| queued.short).count() == 1
        };
        if short {
            shared.helper.notify_one();
            if !helper_takes_it && shared.idle_any.load(Ordering::Acquire) > 0 {
                shared.any_queued.notify_one();
            }
        } else if shared.idle_long_only.load(Ordering::Acquire) > 0 {
            shared.long_queued.notify_one();
        } else if shared.idle_any.load(Ordering::Acquire) > 0 {
            shared.any_queued.notify_one();
        }
        result.await.ok()
    }

    /// Starts the task through which the executor thread computes short jobs and hands over
    /// results, unless it runs. It runs until the pool is dropped or its runtime shuts down.
    fn start_helper(&self, shared: &Arc<Shared>) {
        {
            let mut delivered = shared.lock_delivered();
            if delivered.collecting {
                return;
            }
            delivered.collecting = true;
        }
        // Dropped with the task, also when its runtime shuts down or refuses the task: results
        // are then handed over by the threads, and the next job starts a helper on its own
        // runtime. Made here, not in the task, so that a task dropped unpolled drops it too.
        let stopped = HelperStopped(Arc::clone(shared));
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            let _stopped = stopped;
            while !shared.closed.load(Ordering::Acquire) {
                shared.deliver_pending();
                let next = {
                    let mut queue = shared.lock();
                    let next = match queue.front() {
                        Some(queued) if queued.short => queue.pop_front(),
                        _ => None,
                    };
                    // Marked busy under the lock: a job queued from now on sees it and wakes
                    // a thread instead of waiting for this signature to end.
                    shared.helper_busy.store(next.is_some(), Ordering::Release);
                    next
                };
                match next {
                    Some(queued) => {
                        (queued.job)(Handover::AtOnce);
                        shared.helper_busy.store(false, Ordering::Release);
                        // Between two signatures: the socket, FetchKeys, Metadata.
                        tokio::task::yield_now().await;
                    }
                    None if shared.lock_delivered().pending.is_empty() => {
                        shared.helper.notified().await;
                    }
                    None => {}
                }
            }
        });
    }

    fn shared(&self) -> &Arc<Shared> {
        self.shared.get_or_init(|| {
            let shared = Arc::new(Shared::default());
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            for index in 0..threads {
                // With one core there is no thread to spare: it takes everything.
                let takes = if index == threads - 1 && threads > 1 {
                    Takes::LongOnly
                } else {
                    Takes::Any
                };
                let shared = Arc::clone(&shared);
                let spawned = std::thread::Builder::new()
                    .name(format!("signet-sign-{index}"))
                    .spawn(move || work(&shared, takes));
                if let Err(err) = spawned {
                    tracing::error!(error = %err, "cannot start a signing thread");
                }
            }
            shared
        })
    }
}

/// Ends the helper's collecting when its task ends, handing over what it left.
struct HelperStopped(Arc<Shared>);

impl Drop for HelperStopped {
    fn drop(&mut self) {
        let pending = {
            let mut delivered = self.0.lock_delivered();
            delivered.collecting = false;
            std::mem::take(&mut delivered.pending)
        };
        for delivery in pending {
            delivery();
        }
    }
}

/// A signing thread's loop: take a job it may, run it, and wait when there is none.
fn work(shared: &Shared, takes: Takes) {
    let (idle, queued) = match takes {
        Takes::Any => (&shared.idle_any, &shared.any_queued),
        Takes::LongOnly => (&shared.idle_long_only, &shared.long_queued),
    };
    let mut queue = shared.lock();
    loop {
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        if let Some(next) = Shared::take(&mut queue, takes) {
            drop(queue);
            (next.job)(Handover::Later(shared));
            queue = shared.lock();
            continue;
        }
        // Counted while the lock is held, so a job queued after the check above sees us idle
        // and notifies.
        idle.fetch_add(1, Ordering::AcqRel);
        queue = queued
            .wait(queue)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for SigningPool {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.get() {
            shared.closed.store(true, Ordering::Release);
            let _queue = shared.lock();
            shared.any_queued.notify_all();
            shared.long_queued.notify_all();
            shared.helper.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_a_signing_thread() -> bool {
        std::thread::current()
            .name()
            .is_some_and(|name| name.starts_with("signet-sign-"))
    }

    /// Waits (without sleeping) until every signing thread waits for work; fails the test if
    /// they do not within 30 s.
    async fn all_threads_idle(pool: &SigningPool) {
        let shared = pool.shared();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while shared.idle_any.load(Ordering::Acquire)
            + shared.idle_long_only.load(Ordering::Acquire)
            < threads
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the signing threads did not all become idle"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn long_jobs_run_on_a_signing_thread_and_survive_a_panic() {
        let pool = SigningPool::default();
        let caller = std::thread::current().id();
        let (worker, named) = pool
            .run(SignatureCost::Long, || {
                (std::thread::current().id(), on_a_signing_thread())
            })
            .await
            .unwrap();
        assert_ne!(worker, caller);
        assert!(named);
        assert_eq!(
            pool.run(SignatureCost::Long, || -> u8 { panic!("boom") })
                .await,
            None
        );
        assert_eq!(pool.run(SignatureCost::Long, || 7).await, Some(7));
    }

    #[tokio::test]
    async fn a_lone_short_job_runs_on_the_executor_thread() {
        let pool = SigningPool::default();
        all_threads_idle(&pool).await;
        let caller = std::thread::current().id();
        let worker = pool
            .run(SignatureCost::Short, || std::thread::current().id())
            .await
            .unwrap();
        assert_eq!(worker, caller);
        assert_eq!(
            pool.run(SignatureCost::Short, || -> u8 { panic!("boom") })
                .await,
            None
        );
    }

    #[test]
    fn results_still_arrive_after_the_helpers_runtime_shut_down() {
        let pool = SigningPool::default();
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        // The first runtime starts the helper, which collects the threads' results.
        let first = runtime();
        assert_eq!(first.block_on(pool.run(SignatureCost::Long, || 1)), Some(1));
        assert!(pool.shared().lock_delivered().collecting);
        drop(first);
        // Its task is gone: the threads hand results over themselves until the next job
        // starts a helper on the runtime it runs on.
        assert!(!pool.shared().lock_delivered().collecting);
        let second = runtime();
        for cost in [SignatureCost::Long, SignatureCost::Short] {
            assert_eq!(second.block_on(pool.run(cost, || 2)), Some(2));
        }
        assert!(pool.shared().lock_delivered().collecting);
    }

    #[tokio::test]
    async fn many_short_and_long_jobs_all_complete_once() {
        short_and_long_jobs_all_complete_once().await;
    }

    /// The same with the helper and the callers on different worker threads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_jobs_complete_once_on_a_multi_thread_runtime() {
        short_and_long_jobs_all_complete_once().await;
    }

    async fn short_and_long_jobs_all_complete_once() {
        let pool = Arc::new(SigningPool::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let mut calls = tokio::task::JoinSet::new();
        for index in 0..200_usize {
            let pool = Arc::clone(&pool);
            let ran = Arc::clone(&ran);
            let cost = if index % 3 == 0 {
                SignatureCost::Long
            } else {
                SignatureCost::Short
            };
            calls.spawn(async move {
                pool.run(cost, move || {
                    ran.fetch_add(1, Ordering::Relaxed);
                    index
                })
                .await
            });
        }
        let mut results: Vec<usize> = calls
            .join_all()
            .await
            .into_iter()
            .map(Option::unwrap)
            .collect();
        results.sort_unstable();
        assert_eq!(results, (0..200).collect::<Vec<_>>());
        assert_eq!(ran.load(Ordering::Relaxed), 200);
    }
}
