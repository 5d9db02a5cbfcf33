//! A service's log: the last lines in a ring buffer, plus a live feed.

use std::collections::VecDeque;

use futures::stream::BoxStream;
use parking_lot::Mutex;
use solo_sandbox::Level;
use solo_types::api::LogLine;
use solo_types::clock::system_now_ns;
use tokio::sync::broadcast;

/// The longest line kept; longer lines are cut.
const MAX_LINE: usize = 4096;

/// The last `capacity` lines of a service and a feed of new ones.
pub(crate) struct LogRing {
    capacity: usize,
    inner: Mutex<Ring>,
}

struct Ring {
    lines: VecDeque<LogLine>,
    next_seq: u64,
    /// Created by the first follower: most services are never followed, and a feed
    /// preallocates its buffer.
    live: Option<broadcast::Sender<LogLine>>,
}

/// How many lines a slow follower may fall behind before it loses some.
const FEED_BUFFER: usize = 256;

impl LogRing {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Ring {
                lines: VecDeque::new(),
                next_seq: 1,
                live: None,
            }),
        }
    }

    pub(crate) fn push(&self, level: Level, message: &str) {
        let mut text = message.to_string();
        if text.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        let mut ring = self.inner.lock();
        let line = LogLine {
            seq: ring.next_seq,
            ts: system_now_ns(),
            level: level.as_str().to_string(),
            message: text,
        };
        ring.next_seq += 1;
        if ring.lines.len() == self.capacity {
            ring.lines.pop_front();
        }
        // Sent under the lock, so a follower's backlog and feed never overlap or gap.
        if let Some(live) = &ring.live {
            if live.receiver_count() == 0 {
                ring.live = None;
            } else {
                let _ = live.send(line.clone());
            }
        }
        ring.lines.push_back(line);
    }

    /// The last `n` lines, oldest first.
    pub(crate) fn tail(&self, n: usize) -> Vec<LogLine> {
        let ring = self.inner.lock();
        let skip = ring.lines.len().saturating_sub(n);
        ring.lines.iter().skip(skip).cloned().collect()
    }

    /// The last `n` lines and a feed of every line after them.
    pub(crate) fn follow(&self, n: usize) -> (Vec<LogLine>, BoxStream<'static, LogLine>) {
        let mut ring = self.inner.lock();
        let rx = match &ring.live {
            Some(live) => live.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(FEED_BUFFER);
                ring.live = Some(tx);
                rx
            }
        };
        let skip = ring.lines.len().saturating_sub(n);
        (ring.lines.iter().skip(skip).cloned().collect(), feed(rx))
    }
}

/// The lines of a log feed as a stream; a slow reader skips what it missed, and the
/// stream ends when the service goes away.
fn feed(rx: broadcast::Receiver<LogLine>) -> BoxStream<'static, LogLine> {
    use tokio::sync::broadcast::error::RecvError;
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(line) => return Some((line, rx)),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_in_order() {
        let ring = LogRing::new(3);
        for i in 0..5 {
            ring.push(Level::Info, &format!("line {i}"));
        }
        let tail: Vec<String> = ring.tail(10).into_iter().map(|l| l.message).collect();
        assert_eq!(tail, ["line 2", "line 3", "line 4"]);
        assert_eq!(ring.tail(1)[0].seq, 5);
        ring.push(Level::Warn, &"x".repeat(10_000));
        assert!(ring.tail(1)[0].message.len() <= MAX_LINE + 3);
    }

    #[tokio::test]
    async fn follow_has_no_gap_between_backlog_and_feed() {
        let ring = LogRing::new(10);
        ring.push(Level::Info, "a");
        use futures::StreamExt;
        let (backlog, mut rx) = ring.follow(10);
        ring.push(Level::Info, "b");
        assert_eq!(backlog.len(), 1);
        assert_eq!(rx.next().await.unwrap().message, "b");
    }
}
