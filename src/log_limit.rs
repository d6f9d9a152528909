//! Rate-limited log lines: a line that anybody on the network can cause (a
//! refused token, a refused connection) is written at most once per period,
//! with the count of those left out since the last one. Metrics count every
//! occurrence; the log only shows that they happen.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One kind of rate-limited line.
pub struct LogLimit {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimit {
    /// At most one line per `every`.
    pub const fn new(every: Duration) -> LogLimit {
        LogLimit {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Whether a line may be written now; if so, how many were left out since
    /// the last one written.
    pub fn allow(&self) -> Option<u64> {
        let Ok(mut s) = self.state.lock() else {
            return None;
        };
        let now = Instant::now();
        match s.0 {
            Some(last) if now.duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let left_out = s.1;
                *s = (Some(now), 0);
                Some(left_out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_left_out() {
        let l = LogLimit::new(Duration::from_millis(200));
        assert_eq!(l.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(l.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(l.allow(), Some(5));
        assert_eq!(l.allow(), None);
    }
}
