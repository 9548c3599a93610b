//! The time the lifecycle reasons with, injectable so tests fast-forward days in microseconds.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> SystemTime;

    /// The time to judge elapsed durations by when `now` is this clock's reading: whether a
    /// publish lead or a retention is over. Never later than `now`. By default `now` itself;
    /// see [`GuardedSystemClock`].
    fn judge(&self, now: SystemTime) -> SystemTime {
        now
    }
}

/// The system's real-time clock (production).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The system's real-time clock for a long-running server: times it records are the wall
/// clock's (token `exp` and `iat` come from the same clock), but elapsed durations are judged
/// by the monotonic clock since the server started, so a forward step of the wall clock (a
/// bad NTP server, an operator's `date -s`) cannot promote a next key before verifiers had
/// the lead to fetch it, or remove a retired key while its tokens are still live. A backward
/// step delays both, which is safe. Time spent suspended is not counted, which also only
/// delays.
#[derive(Debug, Clone, Copy)]
pub struct GuardedSystemClock {
    wall_at_start: SystemTime,
    started: Instant,
}

impl GuardedSystemClock {
    pub fn new() -> Self {
        Self::starting_at(SystemTime::now(), Instant::now())
    }

    /// A clock whose start was read as `wall_at_start` at `started`.
    pub fn starting_at(wall_at_start: SystemTime, started: Instant) -> Self {
        Self {
            wall_at_start,
            started,
        }
    }
}

impl Default for GuardedSystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for GuardedSystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn judge(&self, now: SystemTime) -> SystemTime {
        now.min(self.wall_at_start + self.started.elapsed())
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock forward by `by`, returning the new time.
    pub fn advance(&self, by: Duration) -> SystemTime {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
        *now
    }

    pub fn set(&self, to: SystemTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_step_of_the_wall_clock_does_not_count_as_elapsed_time() {
        let start = SystemTime::now();
        let clock = GuardedSystemClock::starting_at(start, Instant::now());
        let day = Duration::from_secs(86_400);
        // The wall clock jumped a day ahead: judged, at most the real time that passed.
        let judged = clock.judge(start + day);
        assert!(judged < start + Duration::from_secs(60), "{judged:?}");
        assert!(judged >= start);
        // A backward step is taken as it is: it only delays.
        assert_eq!(clock.judge(start - day), start - day);
        // Without a step, judged and read time agree to within the call's own duration.
        let now = clock.now();
        assert!(now.duration_since(clock.judge(now)).unwrap() < Duration::from_secs(1));
    }
}
