//! Acknowledgements that follow the commit.
//!
//! A QoS 1 (or 2) message is acknowledged to whoever handed it over (a device on the embedded
//! broker, or an external broker) only once the reading, and any case it caused, is committed
//! to the store. The [`Ack`] travels with the message through the pipeline and is settled by
//! the store writer after the transaction; a message refused on the way is settled at once (its
//! refusal is counted, and a redelivery would be refused again). An [`Ack`] dropped without
//! being settled sends nothing: the sender keeps the message and delivers it again after a
//! reconnect, and sequence numbers drop the duplicates.

use tokio::sync::mpsc;

/// The acknowledgement packet owed to the sender: `PUBACK` for QoS 1, `PUBREC` for QoS 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPacket {
    /// Packet identifier of the PUBLISH.
    pub pkid: u16,
    /// Its QoS (1 or 2).
    pub qos: u8,
}

/// Where settled acknowledgements go: the connection (or client) that owes them. Unbounded
/// because its length is bounded by the sender's in-flight window, and a settling writer must
/// never wait on the transport it acknowledges to (that transport may itself be waiting for the
/// pipeline).
pub type AckSender = mpsc::UnboundedSender<AckPacket>;

/// The acknowledgement of one message, settled once what it caused is committed.
#[derive(Debug, Default)]
#[must_use = "an Ack that is dropped is never sent: settle it once the message is committed"]
pub struct Ack(Option<(AckSender, AckPacket)>);

impl Ack {
    /// Nothing to acknowledge (QoS 0, Modbus, a last will).
    pub fn none() -> Self {
        Self(None)
    }

    /// An acknowledgement owed on `to` for the PUBLISH `pkid` at `qos` (QoS 0: none).
    pub fn new(to: &AckSender, pkid: u16, qos: u8) -> Self {
        if qos == 0 {
            return Self(None);
        }
        Self(Some((to.clone(), AckPacket { pkid, qos })))
    }

    /// Whether anything is owed.
    pub fn is_owed(&self) -> bool {
        self.0.is_some()
    }

    /// Send the acknowledgement (a closed connection has nothing left to acknowledge).
    pub fn settle(self) {
        if let Some((to, packet)) = self.0 {
            let _ = to.send(packet);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settles_once_and_only_when_owed() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        Ack::new(&tx, 7, 1).settle();
        Ack::new(&tx, 8, 0).settle();
        drop(Ack::new(&tx, 9, 1));
        assert_eq!(rx.try_recv(), Ok(AckPacket { pkid: 7, qos: 1 }));
        assert!(
            rx.try_recv().is_err(),
            "QoS 0 and a dropped Ack send nothing"
        );
        Ack::none().settle();
    }
}
