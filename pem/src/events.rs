//! Decodes ring buffer records into events. Decoding only: no state, no I/O.

use px_ebpf::socket_trace::{
    CloseEvent, ConnId, DIR_EGRESS, DataEvent, EVENT_CLOSE, EVENT_DATA, EVENT_OPEN,
    EVENT_PROC_EXIT, EventHeader, OpenEvent,
};

use crate::protocols::Direction;

/// One record from the kernel.
#[derive(Debug)]
pub(crate) enum Event<'a> {
    /// A connection was opened.
    Open(OpenEvent),
    /// A connection was closed.
    Close(CloseEvent),
    /// Bytes crossed a connection; `payload` is what was captured of them.
    Data {
        /// The record's fixed part.
        event: DataEvent,
        /// Which way the bytes went.
        direction: Direction,
        /// The captured bytes (possibly fewer than `event.size`).
        payload: &'a [u8],
    },
    /// A process ended.
    ProcExit {
        /// The process.
        tgid: u32,
    },
}

/// Why a record could not be decoded (counted, never fatal).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Shorter than its kind requires.
    Truncated,
    /// A kind this PEM does not know.
    UnknownKind(u32),
}

fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Truncated);
    }
    // SAFETY: the length was checked; T is a #[repr(C)] plain-data mirror of a kernel
    // struct (integers and byte arrays), valid for any bit pattern; read_unaligned
    // does not require alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring buffer record.
pub(crate) fn decode(bytes: &[u8]) -> Result<Event<'_>, DecodeError> {
    let header: EventHeader = read(bytes)?;
    match header.kind {
        EVENT_OPEN => Ok(Event::Open(read(bytes)?)),
        EVENT_CLOSE => Ok(Event::Close(read(bytes)?)),
        EVENT_DATA => {
            let event: DataEvent = read(bytes)?;
            let start = size_of::<DataEvent>();
            let end = start + event.captured as usize;
            let payload = bytes.get(start..end).ok_or(DecodeError::Truncated)?;
            let direction = if event.direction == DIR_EGRESS {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            Ok(Event::Data {
                event,
                direction,
                payload,
            })
        }
        EVENT_PROC_EXIT => Ok(Event::ProcExit {
            tgid: header.conn.tgid,
        }),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// The map key of a connection: `tgid << 32 | fd`, as the kernel programs build it.
pub(crate) fn conn_key(conn: &ConnId) -> u64 {
    (u64::from(conn.tgid) << 32) | u64::from(conn.fd.cast_unsigned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: test-only view of a plain-data struct as bytes.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn data_event_carries_its_payload() {
        let mut event = DataEvent::default();
        event.hdr.kind = EVENT_DATA;
        event.captured = 3;
        event.size = 10;
        event.direction = DIR_EGRESS;
        let mut bytes = bytes_of(&event);
        bytes.extend_from_slice(b"GET");
        match decode(&bytes).unwrap() {
            Event::Data {
                payload, direction, ..
            } => {
                assert_eq!(payload, b"GET");
                assert_eq!(direction, Direction::Egress);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert_eq!(decode(&[1, 2, 3]).unwrap_err(), DecodeError::Truncated);
        let mut event = DataEvent::default();
        event.hdr.kind = EVENT_DATA;
        event.captured = 100;
        assert_eq!(
            decode(&bytes_of(&event)).unwrap_err(),
            DecodeError::Truncated
        );
        let header = EventHeader {
            kind: 99,
            ..EventHeader::default()
        };
        assert_eq!(
            decode(&bytes_of(&header)).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
    }

    #[test]
    fn conn_key_matches_the_kernel() {
        let id = ConnId {
            generation: 1,
            tgid: 7,
            fd: 3,
        };
        assert_eq!(conn_key(&id), (7 << 32) | 3);
    }
}
