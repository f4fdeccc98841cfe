//! A scripted UART for driver tests: serves queued bytes, records what was written.

use core::convert::Infallible;

extern crate std;
use std::collections::VecDeque;
use std::vec::Vec;

/// Fake serial port.
#[derive(Debug, Default)]
pub(crate) struct FakeSerial {
    pub(crate) rx: VecDeque<u8>,
    pub(crate) tx: Vec<u8>,
}

impl FakeSerial {
    pub(crate) fn with_rx(bytes: &[u8]) -> Self {
        Self {
            rx: bytes.iter().copied().collect(),
            tx: Vec::new(),
        }
    }
}

impl embedded_io::ErrorType for FakeSerial {
    type Error = Infallible;
}

impl embedded_io::Read for FakeSerial {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let mut n = 0;
        while n < buf.len() {
            match self.rx.pop_front() {
                Some(b) => {
                    buf[n] = b;
                    n += 1;
                }
                None => break,
            }
        }
        Ok(n)
    }
}

impl embedded_io::Write for FakeSerial {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.tx.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}
