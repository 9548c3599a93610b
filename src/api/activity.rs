//! Calls in flight, and the busy-poll window after the last one ends.
//!
//! Why busy-poll: on a VM (measured on the 2-vCPU Firecracker guest in BENCHMARKS.md) a thread
//! that sleeps in `epoll_wait` puts its vCPU into a halt the hypervisor must wake it from, and
//! that wake-up is half of an empty call's latency. kube-apiserver's Sign calls come in bursts
//! (pod starts, token refreshes), so after the last call in flight ends the executor keeps
//! polling the socket, without sleeping, for a short window: a call that arrives inside it is
//! read at once. The window bounds the CPU it costs: at most one window of one core per idle
//! gap, and nothing once calls stop coming.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Nanoseconds after `epoch` at which the count last fell to zero.
    idle_since: AtomicU64,
    spinning: AtomicBool,
    window: Duration,
    epoch: Instant,
}

impl Activity {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            spinning: AtomicBool::new(false),
            window,
            epoch: Instant::now(),
        }
    }

    /// Counts a call in flight until the returned guard drops. The guard borrows: a call
    /// costs two atomic updates, and the `Arc` is cloned only to start a spin.
    pub(crate) fn enter(self: &Arc<Self>) -> CallGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        CallGuard(self)
    }

    /// Calls in flight, this one included.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// True while no call is in flight and the window since the last one has not run out.
    fn should_spin(&self) -> bool {
        self.in_flight() == 0
            && self
                .now()
                .saturating_sub(self.idle_since.load(Ordering::Acquire))
                < u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX)
    }

    fn left(self: &Arc<Self>) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) != 1 || self.window.is_zero() {
            return;
        }
        self.idle_since.store(self.now(), Ordering::Release);
        if !self.spinning.swap(true, Ordering::AcqRel) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(Arc::clone(self).spin());
            } else {
                self.spinning.store(false, Ordering::Release);
            }
        }
    }

    /// Keeps this executor thread polling its I/O driver instead of sleeping while the window
    /// lasts.
    async fn spin(self: Arc<Self>) {
        loop {
            crate::busy_poll::poll_io_while(|| self.should_spin()).await;
            self.spinning.store(false, Ordering::Release);
            // A call may have ended between the last check and the store above, found the
            // flag still set and left the spinning to us: look once more.
            if !self.should_spin() || self.spinning.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }
}

pub(crate) struct CallGuard<'a>(&'a Arc<Activity>);

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.0.left();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spinning(activity: &Activity) -> bool {
        activity.spinning.load(Ordering::Acquire)
    }

    #[tokio::test]
    async fn spins_after_the_last_call_and_stops_when_the_window_ends() {
        let activity = Arc::new(Activity::new(Duration::from_millis(20)));
        let first = activity.enter();
        let second = activity.enter();
        assert_eq!(activity.in_flight(), 2);
        drop(first);
        assert!(!spinning(&activity), "a call is still in flight");
        let started = Instant::now();
        drop(second);
        assert_eq!(activity.in_flight(), 0);
        assert!(spinning(&activity));
        // The spinner shares this thread: yielding lets it run until the window ends.
        while spinning(&activity) {
            tokio::task::yield_now().await;
            assert!(started.elapsed() < Duration::from_secs(10), "never stopped");
        }
        assert!(started.elapsed() >= Duration::from_millis(20));
    }

    #[tokio::test]
    async fn a_new_call_ends_the_spin_at_once() {
        let activity = Arc::new(Activity::new(Duration::from_secs(3600)));
        drop(activity.enter());
        assert!(spinning(&activity));
        let started = Instant::now();
        let _call = activity.enter();
        while spinning(&activity) {
            tokio::task::yield_now().await;
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "still spinning"
            );
        }
        assert_eq!(activity.in_flight(), 1);
    }

    #[tokio::test]
    async fn a_zero_window_never_spins() {
        let activity = Arc::new(Activity::new(Duration::ZERO));
        drop(activity.enter());
        assert!(!spinning(&activity));
    }
}
