//! Which event-time windows a time falls in.

/// Windows `[s, s + duration)` with `s = start + k * slide` for every integer `k` (aligned
/// to the Unix epoch, as Spark's `window(t, duration, slide, startTime)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Length, ms (> 0).
    pub duration_ms: i64,
    /// Distance between window starts, ms (> 0, at most the length).
    pub slide_ms: i64,
    /// Offset of the starts from the epoch, ms.
    pub start_ms: i64,
}

impl WindowSpec {
    /// Every window holding `time`, as `(start, end)`, latest first.
    pub fn windows_of(&self, time: i64) -> impl Iterator<Item = (i64, i64)> + '_ {
        let latest = time - (time - self.start_ms).rem_euclid(self.slide_ms);
        (0..)
            .map(move |k| latest - k * self.slide_ms)
            .take_while(move |start| start + self.duration_ms > time)
            .map(move |start| (start, start + self.duration_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(duration_ms: i64, slide_ms: i64, start_ms: i64, time: i64) -> Vec<(i64, i64)> {
        let spec = WindowSpec {
            duration_ms,
            slide_ms,
            start_ms,
        };
        let mut all: Vec<_> = spec.windows_of(time).collect();
        all.sort();
        all
    }

    #[test]
    fn tumbling_windows_align_to_the_epoch_and_the_offset() {
        assert_eq!(windows(5_000, 5_000, 0, 14_999), [(10_000, 15_000)]);
        assert_eq!(windows(5_000, 5_000, 0, 15_000), [(15_000, 20_000)]);
        assert_eq!(windows(10_000, 10_000, 5_000, 2_000), [(-5_000, 5_000)]);
        assert_eq!(windows(10_000, 10_000, 5_000, -6_000), [(-15_000, -5_000)]);
    }

    #[test]
    fn sliding_windows_hold_a_time_in_each_window_covering_it() {
        assert_eq!(windows(10, 3, 0, 7), [(0, 10), (3, 13), (6, 16)]);
        // Every window of the list covers the time, and no other one does.
        for time in -20..20 {
            for (start, end) in windows(10, 4, 1, time) {
                assert!(start <= time && time < end && (start - 1).rem_euclid(4) == 0);
            }
            assert_eq!(windows(10, 5, 0, time).len(), 2);
        }
    }
}
