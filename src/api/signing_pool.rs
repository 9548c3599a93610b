//! The signing threads: a fixed set of OS threads, one per core, that compute the signatures
//! too slow for an async executor thread (RSA, ES384, ES512, and any key that waits on a
//! device). Jobs are taken in arrival order.
//!
//! Why not `spawn_blocking`: measured with RSA-4096 at concurrency 16 (BENCHMARKS.md), tokio's
//! blocking pool grows a thread per waiting call, so the cores are oversubscribed and Sign's
//! p99 more than doubles; a pool sized to the cores keeps the same throughput with a tight
//! tail, and leaves the executor free to answer FetchKeys and Metadata in microseconds.
//!
//! It never holds a job's inputs after the job ran, and never logs them.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// A lazily started set of signing threads. The threads exit when the pool is dropped.
#[derive(Debug, Default)]
pub(crate) struct SigningPool {
    jobs: OnceLock<mpsc::Sender<Job>>,
}

impl SigningPool {
    /// Runs `work` on a signing thread and waits for its result without blocking the caller's
    /// executor thread. `None` if the work panicked (the thread survives it).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller gave up (deadline passed, client went away): skip the signature
            // rather than spend a core on a token nobody will receive.
            if done.is_closed() {
                return;
            }
            if let Ok(value) = std::panic::catch_unwind(AssertUnwindSafe(work)) {
                let _ = done.send(value);
            }
        });
        // A send fails only if every thread died, which catch_unwind prevents.
        if self.jobs().send(job).is_err() {
            return None;
        }
        result.await.ok()
    }

    fn jobs(&self) -> &mpsc::Sender<Job> {
        self.jobs.get_or_init(|| {
            let (sender, receiver) = mpsc::channel::<Job>();
            let receiver = Arc::new(Mutex::new(receiver));
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            for index in 0..threads {
                let receiver = receiver.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("signet-sign-{index}"))
                    .spawn(move || loop {
                        let job = receiver
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .recv();
                        match job {
                            Ok(job) => job(),
                            // The pool was dropped: no more work will come.
                            Err(mpsc::RecvError) => return,
                        }
                    });
                if let Err(err) = spawned {
                    tracing::error!(error = %err, "cannot start a signing thread");
                }
            }
            sender
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_off_the_executor_and_survives_a_panic() {
        let pool = SigningPool::default();
        let caller = std::thread::current().id();
        let worker = pool.run(|| std::thread::current().id()).await.unwrap();
        assert_ne!(worker, caller);
        assert_eq!(pool.run(|| -> u8 { panic!("boom") }).await, None);
        assert_eq!(pool.run(|| 7).await, Some(7));
    }
}
