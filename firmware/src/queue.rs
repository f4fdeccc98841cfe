//! Bounded store-and-forward outbox: holds encoded messages while the link is down and sends
//! them in order when it returns.
//!
//! When full, the oldest *telemetry* message makes room; alarms, status and acks are never
//! dropped to make room. Only when the outbox holds nothing but such messages is a new message
//! refused, and that is counted separately so the capacity can be sized from field data.

use streetgate_protocols::Channel;

use crate::platform::{LinkDown, Transport};

/// Largest encoded message the outbox stores.
pub const MAX_MESSAGE: usize = streetgate_protocols::codec::MAX_ENCODED_LEN;

/// Whether a message may be dropped to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Periodic telemetry: superseded by newer telemetry, may be dropped.
    Telemetry,
    /// Alarm events, status and acks: never dropped to make room.
    Critical,
}

impl Priority {
    /// Priority of a message on a channel.
    pub fn of(channel: Channel) -> Self {
        match channel {
            Channel::Telemetry => Self::Telemetry,
            _ => Self::Critical,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    channel: Channel,
    bytes: heapless::Vec<u8, MAX_MESSAGE>,
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// Longer than [`MAX_MESSAGE`].
    TooLong,
    /// Full of messages that may not be dropped.
    Full,
}

/// The outbox, holding up to `N` messages.
#[derive(Debug)]
pub struct Outbox<const N: usize> {
    entries: heapless::Vec<Entry, N>,
    dropped_telemetry: u32,
    refused: u32,
}

impl<const N: usize> Default for Outbox<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Outbox<N> {
    /// An empty outbox.
    pub const fn new() -> Self {
        Self {
            entries: heapless::Vec::new(),
            dropped_telemetry: 0,
            refused: 0,
        }
    }

    /// Queue a message, dropping the oldest telemetry when full.
    pub fn push(&mut self, channel: Channel, bytes: &[u8]) -> Result<(), QueueError> {
        let bytes = heapless::Vec::from_slice(bytes).map_err(|_| QueueError::TooLong)?;
        if self.entries.is_full() {
            match self
                .entries
                .iter()
                .position(|e| Priority::of(e.channel) == Priority::Telemetry)
            {
                Some(i) => {
                    self.entries.remove(i);
                    self.dropped_telemetry = self.dropped_telemetry.saturating_add(1);
                }
                None if Priority::of(channel) == Priority::Telemetry => {
                    self.dropped_telemetry = self.dropped_telemetry.saturating_add(1);
                    return Err(QueueError::Full);
                }
                None => {
                    self.refused = self.refused.saturating_add(1);
                    return Err(QueueError::Full);
                }
            }
        }
        self.entries
            .push(Entry { channel, bytes })
            .map_err(|_| QueueError::Full)
    }

    /// Send queued messages in order until the outbox is empty or the link fails.
    pub fn flush(&mut self, transport: &mut impl Transport) -> Result<usize, LinkDown> {
        let mut sent = 0;
        while let Some(first) = self.entries.first() {
            transport.send(first.channel, &first.bytes)?;
            self.entries.remove(0);
            sent += 1;
        }
        Ok(sent)
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Telemetry messages dropped to make room (or refused because only critical ones were left).
    pub fn dropped_telemetry(&self) -> u32 {
        self.dropped_telemetry
    }

    /// Critical messages refused because the outbox held nothing droppable.
    pub fn refused_critical(&self) -> u32 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    #[derive(Default)]
    struct Link {
        up: bool,
        sent: Vec<(Channel, Vec<u8>)>,
        fail_after: Option<usize>,
    }

    impl Transport for Link {
        fn send(&mut self, channel: Channel, payload: &[u8]) -> Result<(), LinkDown> {
            if !self.up || self.fail_after.is_some_and(|n| self.sent.len() >= n) {
                return Err(LinkDown);
            }
            self.sent.push((channel, payload.to_vec()));
            Ok(())
        }
        fn poll_downlink(&mut self, _buf: &mut [u8]) -> Option<(Channel, usize)> {
            None
        }
    }

    #[test]
    fn keeps_order_across_an_outage() {
        let mut q: Outbox<8> = Outbox::new();
        let mut link = Link::default();
        for i in 0..5u8 {
            q.push(
                if i == 2 {
                    Channel::Event
                } else {
                    Channel::Telemetry
                },
                &[i],
            )
            .unwrap();
        }
        assert_eq!(q.flush(&mut link), Err(LinkDown));
        assert_eq!(q.len(), 5);
        link.up = true;
        link.fail_after = Some(2);
        assert_eq!(q.flush(&mut link), Err(LinkDown));
        assert_eq!(q.len(), 3);
        link.fail_after = None;
        assert_eq!(q.flush(&mut link), Ok(3));
        let order: Vec<u8> = link.sent.iter().map(|(_, b)| b[0]).collect();
        assert_eq!(order, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn drops_oldest_telemetry_never_alarms() {
        let mut q: Outbox<3> = Outbox::new();
        q.push(Channel::Telemetry, b"t0").unwrap();
        q.push(Channel::Event, b"a0").unwrap();
        q.push(Channel::Telemetry, b"t1").unwrap();
        q.push(Channel::Event, b"a1").unwrap(); // drops t0
        q.push(Channel::Event, b"a2").unwrap(); // drops t1
        assert_eq!(q.dropped_telemetry(), 2);
        assert_eq!(q.push(Channel::Telemetry, b"t2"), Err(QueueError::Full));
        assert_eq!(q.push(Channel::Ack, b"k"), Err(QueueError::Full));
        assert_eq!((q.dropped_telemetry(), q.refused_critical()), (3, 1));
        let mut link = Link {
            up: true,
            ..Link::default()
        };
        q.flush(&mut link).unwrap();
        let sent: Vec<&[u8]> = link.sent.iter().map(|(_, b)| b.as_slice()).collect();
        assert_eq!(sent, [b"a0", b"a1", b"a2"]);
        assert_eq!(
            q.push(Channel::Telemetry, &[0; MAX_MESSAGE + 1]),
            Err(QueueError::TooLong)
        );
    }

    proptest! {
        #[test]
        fn alarms_survive_and_order_holds(ops in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..200)) {
            let mut q: Outbox<6> = Outbox::new();
            let mut link = Link::default();
            let mut alarms_pushed = Vec::new();
            for (n, (is_alarm, link_up)) in ops.into_iter().enumerate() {
                let id = u16::try_from(n).unwrap().to_be_bytes();
                let channel = if is_alarm { Channel::Event } else { Channel::Telemetry };
                if q.push(channel, &id).is_ok() && is_alarm {
                    alarms_pushed.push(id.to_vec());
                }
                link.up = link_up;
                let _ = q.flush(&mut link);
            }
            link.up = true;
            q.flush(&mut link).unwrap();
            let ids: Vec<u16> = link.sent.iter().map(|(_, b)| u16::from_be_bytes([b[0], b[1]])).collect();
            prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "order {:?}", ids);
            let alarms_sent: Vec<Vec<u8>> = link.sent.iter().filter(|(c, _)| *c == Channel::Event).map(|(_, b)| b.clone()).collect();
            prop_assert_eq!(alarms_sent, alarms_pushed);
        }
    }
}
