//! A service's mailbox: a bounded queue of boxed envelopes held in its entry, with one
//! reader (the service's actor) and any number of senders. Unlike a channel, an empty
//! mailbox allocates nothing (tokio's bounded channel holds ~0.8 KiB per service from
//! its creation, which a million mostly idle services would pay for).

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::entry::Envelope;

pub(crate) struct Mailbox {
    queue: Mutex<VecDeque<Box<Envelope>>>,
    capacity: usize,
    /// Woken when an envelope arrives (the reader waits on it).
    arrived: Notify,
    /// Woken when an envelope is taken (a sender that waits for room waits on it).
    taken: Notify,
}

/// The mailbox was full: the envelope comes back.
pub(crate) struct Full(pub(crate) Box<Envelope>);

impl Mailbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            arrived: Notify::new(),
            taken: Notify::new(),
        }
    }

    /// Queues `envelope` unless the mailbox is full.
    pub(crate) fn try_send(&self, envelope: Box<Envelope>) -> Result<(), Full> {
        {
            let mut q = self.queue.lock();
            if q.len() >= self.capacity {
                return Err(Full(envelope));
            }
            q.push_back(envelope);
        }
        self.arrived.notify_one();
        Ok(())
    }

    /// Queues `envelope`, waiting for room while the mailbox is full.
    pub(crate) async fn send(&self, mut envelope: Box<Envelope>) {
        loop {
            // Registered before the attempt, so a take in between is not missed.
            let room = self.taken.notified();
            match self.try_send(envelope) {
                Ok(()) => return,
                Err(Full(back)) => envelope = back,
            }
            room.await;
        }
    }

    /// The next envelope, waiting for one. Cancel-safe: an envelope is taken only by
    /// the call that returns it.
    pub(crate) async fn recv(&self) -> Box<Envelope> {
        loop {
            let arrived = self.arrived.notified();
            if let Some(envelope) = self.try_recv() {
                return envelope;
            }
            arrived.await;
        }
    }

    /// The next envelope, if one is queued.
    pub(crate) fn try_recv(&self) -> Option<Box<Envelope>> {
        let envelope = {
            let mut q = self.queue.lock();
            let envelope = q.pop_front()?;
            if q.is_empty() && q.capacity() > 4 {
                // A burst is over: give its room back.
                *q = VecDeque::new();
            }
            envelope
        };
        self.taken.notify_one();
        Some(envelope)
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.lock().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn cast(n: usize) -> Box<Envelope> {
        Box::new(Envelope::Cast {
            message: n.to_string(),
            from: solo_sandbox::GuestCaller {
                kind: "tenant",
                tenant: "t".into(),
                service_id: None,
                token_hash: None,
            },
        })
    }

    fn number(e: &Envelope) -> usize {
        match e {
            Envelope::Cast { message, .. } => message.parse().unwrap(),
            _ => usize::MAX,
        }
    }

    #[tokio::test]
    async fn keeps_order_refuses_when_full_and_gives_the_envelope_back() {
        let m = Mailbox::new(2);
        assert!(m.is_empty());
        assert!(m.try_send(cast(1)).is_ok());
        assert!(m.try_send(cast(2)).is_ok());
        let Err(Full(back)) = m.try_send(cast(3)) else {
            panic!("a third message fits in a mailbox of two");
        };
        assert_eq!(number(&back), 3);
        assert_eq!(m.len(), 2);
        assert_eq!(number(&*m.recv().await), 1);
        assert_eq!(number(&m.try_recv().unwrap()), 2);
        assert!(m.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_and_a_waiting_sender_gets_room() {
        let m = Arc::new(Mailbox::new(1));
        let reader = tokio::spawn({
            let m = Arc::clone(&m);
            async move { number(&*m.recv().await) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        m.try_send(cast(7)).ok().unwrap();
        assert_eq!(reader.await.unwrap(), 7);

        m.try_send(cast(1)).ok().unwrap();
        let sender = tokio::spawn({
            let m = Arc::clone(&m);
            async move { m.send(cast(2)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sender.is_finished(), "sent into a full mailbox");
        assert_eq!(number(&*m.recv().await), 1);
        tokio::time::timeout(Duration::from_secs(5), sender)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(number(&*m.recv().await), 2);
    }

    #[tokio::test]
    async fn a_cancelled_receive_loses_nothing() {
        let m = Mailbox::new(8);
        for _ in 0..100 {
            // Cancelled before anything arrives.
            let _ = tokio::time::timeout(Duration::from_micros(1), m.recv()).await;
        }
        m.try_send(cast(5)).ok().unwrap();
        assert_eq!(number(&*m.recv().await), 5);
    }

    #[tokio::test]
    async fn many_senders_one_reader_every_message_once() {
        let m = Arc::new(Mailbox::new(4));
        let mut senders = Vec::new();
        for s in 0..8 {
            let m = Arc::clone(&m);
            senders.push(tokio::spawn(async move {
                for i in 0..250 {
                    m.send(cast(s * 1000 + i)).await;
                }
            }));
        }
        let mut seen = vec![Vec::new(); 8];
        for _ in 0..2000 {
            let n = number(&*m.recv().await);
            seen[n / 1000].push(n % 1000);
        }
        for (s, got) in seen.iter().enumerate() {
            assert_eq!(
                *got,
                (0..250).collect::<Vec<_>>(),
                "sender {s} in order, once"
            );
        }
        assert!(m.is_empty());
    }
}
