//! Packet codecs: zero-copy views over byte slices plus plain `Repr` structs
//! that parse and emit. No allocation, no panics on any input.
//!
//! Shape (after smoltcp): `XxxPacket<T: AsRef<[u8]>>` is a checked view with
//! field getters (and setters when `T: AsMut<[u8]>`); `XxxRepr` is a plain
//! value with `parse`, `emit` (into a caller's buffer, returning the length)
//! and `header_len`/`buffer_len` so callers can size buffers.
pub mod checksum;
pub mod ethernet;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod mptcp;
pub mod tcp;

pub use ethernet::{EthernetFrame, EthernetRepr, MacAddr};
pub use ip::{emit_eth_ip_tcp, emit_ip_tcp, parse_eth_ip_tcp, parse_ip_tcp, IpRepr};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use mptcp::{MptcpOption, MptcpOptions};
pub use tcp::{TcpFlags, TcpOptions, TcpPacket, TcpRepr};

use core::fmt;

/// Why a packet could not be parsed or emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer ends before the structure it must hold.
    Truncated,
    /// A length field is impossible (too small, not a legal option length...).
    BadLength,
    /// An IP version field does not match the header being parsed.
    BadVersion,
    /// A field holds a value the codec cannot represent or accept.
    Malformed,
    /// A fixed-capacity list is full, or an emit buffer is too small.
    Exhausted,
    /// Recognised but not handled here (e.g. a non-TCP protocol, a fragment).
    Unsupported,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated packet",
            Error::BadLength => "bad length field",
            Error::BadVersion => "bad IP version",
            Error::Malformed => "malformed field",
            Error::Exhausted => "buffer or list capacity exhausted",
            Error::Unsupported => "unsupported packet",
        })
    }
}

impl std::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;

/// Big-endian field access that cannot panic: callers check lengths first,
/// these return `Truncated` if they did not.
pub(crate) fn be16(b: &[u8], at: usize) -> Result<u16> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(Error::Truncated),
    }
}

pub(crate) fn be32(b: &[u8], at: usize) -> Result<u32> {
    match b.get(at..at + 4) {
        Some(s) => Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]])),
        None => Err(Error::Truncated),
    }
}

pub(crate) fn be64(b: &[u8], at: usize) -> Result<u64> {
    match b.get(at..at + 8) {
        Some(s) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            Ok(u64::from_be_bytes(a))
        }
        None => Err(Error::Truncated),
    }
}
