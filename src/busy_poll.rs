//! Polling the runtime's I/O driver without sleeping, shared by the server's busy-poll window
//! (`api::activity`) and `signet bench --spin`.
//!
//! Why: on a VM a thread that sleeps in `epoll_wait` halts its vCPU, and the hypervisor's
//! wake-up is a large share of a short call's latency (BENCHMARKS.md, "Wake-ups").

/// Keeps this runtime thread polling its I/O driver instead of sleeping while `keep_polling`
/// returns true. `yield_now` defers the task until the driver has been polled without
/// blocking, so each turn is one non-blocking `epoll_wait`: readiness is seen as soon as it
/// arrives, and the other tasks on the thread still run between two turns.
pub(crate) async fn poll_io_while(mut keep_polling: impl FnMut() -> bool) {
    while keep_polling() {
        tokio::task::yield_now().await;
    }
}
