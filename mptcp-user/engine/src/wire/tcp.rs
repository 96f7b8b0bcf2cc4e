//! TCP header and options.
use super::checksum;
use super::mptcp::{self, MptcpOption, MptcpOptions};
use super::{be16, be32, Error, Result};
use core::fmt;
use std::net::IpAddr;

pub const OPT_EOL: u8 = 0;
pub const OPT_NOP: u8 = 1;
pub const OPT_MSS: u8 = 2;
pub const OPT_WINDOW_SCALE: u8 = 3;
pub const OPT_SACK_PERMITTED: u8 = 4;
pub const OPT_SACK: u8 = 5;
pub const OPT_TIMESTAMPS: u8 = 8;
/// Longest option area (data offset 15).
pub const MAX_OPTIONS_LEN: usize = 40;

/// TCP header flags (the low byte of the flags field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    pub const ECE: TcpFlags = TcpFlags(0x40);
    pub const CWR: TcpFlags = TcpFlags(0x80);

    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn union(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | other.0)
    }
}

impl fmt::Display for TcpFlags {
    /// tcpdump-like letters: `S`, `S.`, `P.`, `F.`, `R`, ... (`.` is ACK).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (flag, c) in [
            (TcpFlags::SYN, "S"),
            (TcpFlags::FIN, "F"),
            (TcpFlags::RST, "R"),
            (TcpFlags::PSH, "P"),
            (TcpFlags::URG, "U"),
            (TcpFlags::ECE, "E"),
            (TcpFlags::CWR, "W"),
            (TcpFlags::ACK, "."),
        ] {
            if self.contains(flag) {
                f.write_str(c)?;
            }
        }
        if self.0 == 0 {
            f.write_str("none")?;
        }
        Ok(())
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        self.union(rhs)
    }
}

/// Up to four SACK blocks (left edge, right edge), as fits in 40 option bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SackBlocks {
    pub blocks: [(u32, u32); 4],
    pub len: u8,
}

impl SackBlocks {
    pub fn as_slice(&self) -> &[(u32, u32)] {
        &self.blocks[..self.len as usize]
    }
    /// Appends a block; returns false when all four slots are taken.
    pub fn push(&mut self, left: u32, right: u32) -> bool {
        if self.len as usize >= self.blocks.len() {
            return false;
        }
        self.blocks[self.len as usize] = (left, right);
        self.len += 1;
        true
    }
}

/// RFC 7323 timestamps option.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Timestamps {
    pub tsval: u32,
    pub tsecr: u32,
}

/// The TCP options of one segment. Fields may be added (MPTCP suboptions,
/// unknown options); construct with `..Default::default()`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub sack: SackBlocks,
    pub timestamps: Option<Timestamps>,
    /// MPTCP suboptions (kind 30) in wire order.
    pub mptcp: MptcpOptions,
    /// Options of unknown kinds (and MPTCP subtypes this codec does not
    /// know), kept whole as raw bytes.
    pub unknown: RawOptions,
}

/// A parsed TCP segment: header fields, options and a borrowed payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    /// The window field as on the wire (not scaled).
    pub window: u16,
    pub urgent: u16,
    pub options: TcpOptions,
    pub payload: &'a [u8],
}

/// Whole options kept as raw bytes (kind, length, data), concatenated.
#[derive(Clone, Copy, Debug)]
pub struct RawOptions {
    bytes: [u8; MAX_OPTIONS_LEN],
    len: u8,
}

impl Default for RawOptions {
    fn default() -> Self {
        RawOptions {
            bytes: [0; MAX_OPTIONS_LEN],
            len: 0,
        }
    }
}

impl PartialEq for RawOptions {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for RawOptions {}

impl RawOptions {
    /// Appends one whole option (`opt[1]` must equal `opt.len()`, at least 2).
    pub fn push(&mut self, opt: &[u8]) -> Result<()> {
        if opt.len() < 2 || opt[1] as usize != opt.len() {
            return Err(Error::BadLength);
        }
        let at = self.len as usize;
        let dst = self
            .bytes
            .get_mut(at..at + opt.len())
            .ok_or(Error::Exhausted)?;
        dst.copy_from_slice(opt);
        self.len += opt.len() as u8;
        Ok(())
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Iterates (kind, whole option bytes).
    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> {
        let mut rest = self.as_bytes();
        core::iter::from_fn(move || {
            let len = *rest.get(1)? as usize;
            if len < 2 {
                return None;
            }
            let (opt, tail) = rest.split_at(len.min(rest.len()));
            rest = tail;
            Some((opt[0], opt))
        })
    }
}

impl TcpOptions {
    /// Parses an option area (the bytes between the fixed header and the data).
    pub fn parse(mut area: &[u8]) -> Result<TcpOptions> {
        let mut o = TcpOptions::default();
        while let Some(&kind) = area.first() {
            match kind {
                OPT_EOL => break,
                OPT_NOP => {
                    area = &area[1..];
                    continue;
                }
                _ => {}
            }
            let len = *area.get(1).ok_or(Error::Truncated)? as usize;
            if len < 2 {
                return Err(Error::BadLength);
            }
            let opt = area.get(..len).ok_or(Error::Truncated)?;
            match (kind, len) {
                (OPT_MSS, 4) => o.mss = Some(be16(opt, 2)?),
                (OPT_WINDOW_SCALE, 3) => o.window_scale = Some(opt[2]),
                (OPT_SACK_PERMITTED, 2) => o.sack_permitted = true,
                (OPT_SACK, _) => {
                    if !(len - 2).is_multiple_of(8) || len == 2 {
                        return Err(Error::BadLength);
                    }
                    o.sack = SackBlocks::default();
                    for i in 0..(len - 2) / 8 {
                        let at = 2 + i * 8;
                        if !o.sack.push(be32(opt, at)?, be32(opt, at + 4)?) {
                            return Err(Error::BadLength);
                        }
                    }
                }
                (OPT_TIMESTAMPS, 10) => {
                    o.timestamps = Some(Timestamps {
                        tsval: be32(opt, 2)?,
                        tsecr: be32(opt, 6)?,
                    })
                }
                (OPT_MSS | OPT_WINDOW_SCALE | OPT_SACK_PERMITTED | OPT_TIMESTAMPS, _) => {
                    return Err(Error::BadLength)
                }
                (mptcp::OPTION_KIND, _) => match MptcpOption::parse(opt)? {
                    Some(m) => o.mptcp.push(m)?,
                    None => o.unknown.push(opt)?,
                },
                _ => o.unknown.push(opt)?,
            }
            area = &area[len..];
        }
        Ok(o)
    }

    /// Writes the options unpadded into `out`; returns the length. The layout
    /// follows Linux: 4-byte alignment of MSS, timestamps, window scale, SACK.
    fn write(&self, out: &mut [u8; 64]) -> Result<usize> {
        let mut at = 0;
        let mut put = |bytes: &[u8], at: &mut usize| -> Result<()> {
            let dst = out
                .get_mut(*at..*at + bytes.len())
                .ok_or(Error::Exhausted)?;
            dst.copy_from_slice(bytes);
            *at += bytes.len();
            Ok(())
        };
        if let Some(mss) = self.mss {
            let m = mss.to_be_bytes();
            put(&[OPT_MSS, 4, m[0], m[1]], &mut at)?;
        }
        match (self.sack_permitted, self.timestamps) {
            (sp, Some(ts)) => {
                if sp {
                    put(&[OPT_SACK_PERMITTED, 2], &mut at)?;
                } else {
                    put(&[OPT_NOP, OPT_NOP], &mut at)?;
                }
                put(&[OPT_TIMESTAMPS, 10], &mut at)?;
                put(&ts.tsval.to_be_bytes(), &mut at)?;
                put(&ts.tsecr.to_be_bytes(), &mut at)?;
            }
            (true, None) => put(&[OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2], &mut at)?,
            (false, None) => {}
        }
        if let Some(ws) = self.window_scale {
            put(&[OPT_NOP, OPT_WINDOW_SCALE, 3, ws], &mut at)?;
        }
        if !self.sack.as_slice().is_empty() {
            let n = self.sack.as_slice().len();
            put(&[OPT_NOP, OPT_NOP, OPT_SACK, (2 + 8 * n) as u8], &mut at)?;
            for &(l, r) in self.sack.as_slice() {
                put(&l.to_be_bytes(), &mut at)?;
                put(&r.to_be_bytes(), &mut at)?;
            }
        }
        for m in self.mptcp.iter() {
            let mut tmp = [0u8; MAX_OPTIONS_LEN];
            let n = m.emit(&mut tmp)?;
            put(&tmp[..n], &mut at)?;
        }
        put(self.unknown.as_bytes(), &mut at)?;
        Ok(at)
    }

    /// Length of the option area on the wire, padded to a multiple of four.
    /// May exceed [`MAX_OPTIONS_LEN`]; `emit` then fails with `Exhausted`.
    pub fn wire_len(&self) -> Result<usize> {
        // Counted, not written: asked several times per segment sent. The
        // sizes follow `write` (checked against it in `emit`).
        let mut n = 4 * self.mss.is_some() as usize;
        n += match (self.sack_permitted, self.timestamps.is_some()) {
            (_, true) => 12,
            (true, false) => 4,
            (false, false) => 0,
        };
        n += 4 * self.window_scale.is_some() as usize;
        let sack = self.sack.as_slice().len();
        if sack > 0 {
            n += 4 + 8 * sack;
        }
        for m in self.mptcp.iter() {
            n += m.wire_len()?;
        }
        n += self.unknown.as_bytes().len();
        if n > 64 {
            return Err(Error::Exhausted);
        }
        Ok(n.next_multiple_of(4))
    }

    /// Writes the padded option area at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let mut tmp = [0u8; 64];
        let n = self.write(&mut tmp)?;
        let padded = n.next_multiple_of(4);
        debug_assert_eq!(self.wire_len().ok(), Some(padded));
        if padded > MAX_OPTIONS_LEN {
            return Err(Error::Exhausted);
        }
        let dst = buf.get_mut(..padded).ok_or(Error::Exhausted)?;
        // Zero padding reads as EOL.
        dst.copy_from_slice(&tmp[..padded]);
        Ok(padded)
    }
}

/// A checked view of a TCP segment: the whole header (options included)
/// is in the buffer.
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < 20 {
            return Err(Error::Truncated);
        }
        let hl = ((b[12] >> 4) as usize) * 4;
        if hl < 20 {
            return Err(Error::BadLength);
        }
        if b.len() < hl {
            return Err(Error::Truncated);
        }
        Ok(TcpPacket { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn src_port(&self) -> u16 {
        be16(self.b(), 0).unwrap_or(0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.b(), 2).unwrap_or(0)
    }
    pub fn seq(&self) -> u32 {
        be32(self.b(), 4).unwrap_or(0)
    }
    pub fn ack(&self) -> u32 {
        be32(self.b(), 8).unwrap_or(0)
    }
    pub fn header_len(&self) -> usize {
        ((self.b()[12] >> 4) as usize) * 4
    }
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.b()[13])
    }
    pub fn window(&self) -> u16 {
        be16(self.b(), 14).unwrap_or(0)
    }
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 16).unwrap_or(0)
    }
    pub fn urgent(&self) -> u16 {
        be16(self.b(), 18).unwrap_or(0)
    }
    pub fn options(&self) -> &[u8] {
        &self.b()[20..self.header_len()]
    }
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }
    /// True when the checksum over the pseudo-header and the whole buffer is
    /// correct (false for mixed address families).
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let len = self.b().len() as u32;
        match checksum::pseudo_header(src, dst, super::ipv4::PROTO_TCP, len) {
            Some(ph) => checksum::fold(checksum::accumulate(ph, self.b())) == 0xffff,
            None => false,
        }
    }
}

/// What a segment's checksum field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumState {
    /// The full checksum, correct.
    Valid,
    /// Only the folded pseudo-header sum: a sender using checksum offload
    /// (CHECKSUM_PARTIAL) whose segment was captured, or handed over by a
    /// veth, before the NIC would have finished it. Linux kernel segments
    /// seen on veth (and in shared/fixtures) look like this.
    Partial,
    Bad,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Classifies the checksum: valid, offload-partial, or bad.
    pub fn checksum_state(&self, src: IpAddr, dst: IpAddr) -> ChecksumState {
        if self.verify_checksum(src, dst) {
            return ChecksumState::Valid;
        }
        let len = self.b().len() as u32;
        match checksum::pseudo_header(src, dst, super::ipv4::PROTO_TCP, len) {
            Some(ph) if checksum::fold(ph) == self.checksum() => ChecksumState::Partial,
            _ => ChecksumState::Bad,
        }
    }
}

impl<'a> TcpPacket<&'a [u8]> {
    /// The payload with the lifetime of the underlying buffer.
    pub fn payload_ref(&self) -> &'a [u8] {
        &self.buffer[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }
    /// Computes and stores the checksum over the whole buffer.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) -> Result<()> {
        let b = self.buffer.as_mut();
        let len = u32::try_from(b.len()).map_err(|_| Error::BadLength)?;
        let ph = checksum::pseudo_header(src, dst, super::ipv4::PROTO_TCP, len)
            .ok_or(Error::Malformed)?;
        b[16] = 0;
        b[17] = 0;
        let c = !checksum::fold(checksum::accumulate(ph, b));
        b[16..18].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }
    /// Rewrites the window field, patching the checksum (RFC 1624).
    pub fn set_window(&mut self, window: u16) {
        let old = self.window();
        let c = checksum::update16(self.checksum(), old, window);
        let b = self.buffer.as_mut();
        b[14..16].copy_from_slice(&window.to_be_bytes());
        b[16..18].copy_from_slice(&c.to_be_bytes());
    }
}

impl<'a> TcpRepr<'a> {
    /// Parses a segment (header, options, payload). The checksum is not
    /// checked here: see [`TcpPacket::verify_checksum`].
    pub fn parse(segment: &'a [u8]) -> Result<TcpRepr<'a>> {
        let p = TcpPacket::new_checked(segment)?;
        Self::parse_packet(&p)
    }

    pub fn parse_packet(p: &TcpPacket<&'a [u8]>) -> Result<TcpRepr<'a>> {
        Ok(TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq: p.seq(),
            ack: p.ack(),
            flags: p.flags(),
            window: p.window(),
            urgent: p.urgent(),
            options: TcpOptions::parse(p.options())?,
            payload: p.payload_ref(),
        })
    }

    /// Header length with options, padded.
    pub fn header_len(&self) -> Result<usize> {
        Ok(20 + self.options.wire_len()?)
    }

    /// Header plus payload.
    pub fn buffer_len(&self) -> Result<usize> {
        Ok(self.header_len()? + self.payload.len())
    }

    /// Sequence space the segment occupies (payload, SYN and FIN each count one).
    pub fn segment_len(&self) -> usize {
        self.payload.len()
            + self.flags.contains(TcpFlags::SYN) as usize
            + self.flags.contains(TcpFlags::FIN) as usize
    }

    /// Writes header, options and payload into `buf` with the checksum for
    /// the given pseudo-header addresses; returns the length written.
    pub fn emit(&self, buf: &mut [u8], src: IpAddr, dst: IpAddr) -> Result<usize> {
        let (hl, total) = self.emit_header(buf)?;
        let len = u32::try_from(total).map_err(|_| Error::BadLength)?;
        let ph = checksum::pseudo_header(src, dst, super::ipv4::PROTO_TCP, len)
            .ok_or(Error::Malformed)?;
        // The payload is copied and summed in one pass; the header (a
        // multiple of four bytes, so the payload's sum simply adds) after.
        let sum = checksum::copy_and_accumulate(ph, &mut buf[hl..total], self.payload);
        let c = !checksum::fold(checksum::accumulate(sum, &buf[..hl]));
        buf[16..18].copy_from_slice(&c.to_be_bytes());
        Ok(total)
    }

    /// As [`emit`](Self::emit) but leaves the checksum zero (for offload).
    pub fn emit_without_checksum(&self, buf: &mut [u8]) -> Result<usize> {
        let (hl, total) = self.emit_header(buf)?;
        buf[hl..total].copy_from_slice(self.payload);
        Ok(total)
    }

    /// Writes the header and options (checksum zero); returns the header
    /// length and the segment's.
    fn emit_header(&self, buf: &mut [u8]) -> Result<(usize, usize)> {
        let mut opts = [0u8; MAX_OPTIONS_LEN];
        let olen = self.options.emit(&mut opts)?;
        let hl = 20 + olen;
        let total = hl + self.payload.len();
        let out = buf.get_mut(..total).ok_or(Error::Exhausted)?;
        out[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        out[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        out[4..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..12].copy_from_slice(&self.ack.to_be_bytes());
        out[12] = ((hl / 4) as u8) << 4;
        out[13] = self.flags.0;
        out[14..16].copy_from_slice(&self.window.to_be_bytes());
        out[16..18].copy_from_slice(&[0, 0]);
        out[18..20].copy_from_slice(&self.urgent.to_be_bytes());
        out[20..hl].copy_from_slice(&opts[..olen]);
        Ok((hl, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mptcp::{Dss, DssMapping};

    fn addrs() -> (IpAddr, IpAddr) {
        ("10.1.1.1".parse().unwrap(), "10.1.1.2".parse().unwrap())
    }

    fn sample(payload: &[u8]) -> TcpRepr<'_> {
        let mut options = TcpOptions {
            timestamps: Some(Timestamps {
                tsval: 0xdeadbeef,
                tsecr: 7,
            }),
            ..Default::default()
        };
        options
            .mptcp
            .push(MptcpOption::Dss(Dss {
                data_ack: Some(5),
                mapping: Some(DssMapping {
                    dsn: 1,
                    ssn: 1,
                    data_len: 3,
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .unwrap();
        TcpRepr {
            src_port: 40000,
            dst_port: 8080,
            seq: 1,
            ack: 2,
            flags: TcpFlags::ACK | TcpFlags::PSH,
            window: 502,
            urgent: 0,
            options,
            payload,
        }
    }

    #[test]
    fn roundtrip_with_checksum() {
        let (s, d) = addrs();
        let r = sample(b"abc");
        let mut buf = [0u8; 128];
        let n = r.emit(&mut buf, s, d).unwrap();
        assert_eq!(n, r.buffer_len().unwrap());
        let p = TcpPacket::new_checked(&buf[..n]).unwrap();
        assert!(p.verify_checksum(s, d));
        assert_eq!(TcpRepr::parse(&buf[..n]).unwrap(), r);
        buf[n - 1] ^= 0x40;
        assert!(!TcpPacket::new_checked(&buf[..n])
            .unwrap()
            .verify_checksum(s, d));
    }

    #[test]
    fn syn_options_roundtrip() {
        let mut o = TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamps: Some(Timestamps { tsval: 1, tsecr: 0 }),
            ..Default::default()
        };
        o.mptcp
            .push(MptcpOption::MpCapable(crate::wire::mptcp::MpCapable {
                version: 1,
                flags: 1,
                ..Default::default()
            }))
            .unwrap();
        let mut buf = [0u8; 40];
        let n = o.emit(&mut buf).unwrap();
        assert_eq!(n, 24);
        assert_eq!(TcpOptions::parse(&buf[..n]).unwrap(), o);
        let mut s = TcpOptions::default();
        s.sack.push(100, 200);
        s.sack.push(300, 400);
        let n = s.emit(&mut buf).unwrap();
        assert_eq!(n, 20);
        assert_eq!(TcpOptions::parse(&buf[..n]).unwrap(), s);
    }

    #[test]
    fn set_window_keeps_checksum_valid() {
        let (s, d) = addrs();
        let mut buf = [0u8; 128];
        let n = sample(b"hello").emit(&mut buf, s, d).unwrap();
        let mut p = TcpPacket::new_checked(&mut buf[..n]).unwrap();
        p.set_window(0x1234);
        assert!(p.verify_checksum(s, d));
        assert_eq!(p.window(), 0x1234);
    }

    #[test]
    fn unknown_options_kept_raw() {
        // MSS, NOP, unknown kind 254 (len 4), TFO-like kind 34 (len 2), EOL.
        let area = [2, 4, 5, 0xb4, 1, 254, 4, 0xaa, 0xbb, 34, 2, 0];
        let o = TcpOptions::parse(&area).unwrap();
        assert_eq!(o.mss, Some(1460));
        let raw: Vec<_> = o.unknown.iter().collect();
        assert_eq!(
            raw,
            vec![(254, &[254, 4, 0xaa, 0xbb][..]), (34, &[34, 2][..])]
        );
        let mut buf = [0u8; 40];
        let n = o.emit(&mut buf).unwrap();
        assert_eq!(TcpOptions::parse(&buf[..n]).unwrap(), o);
    }

    #[test]
    fn bad_options() {
        assert_eq!(TcpOptions::parse(&[2, 4, 5]).unwrap_err(), Error::Truncated);
        assert_eq!(TcpOptions::parse(&[2]).unwrap_err(), Error::Truncated);
        assert_eq!(TcpOptions::parse(&[2, 3, 5]).unwrap_err(), Error::BadLength);
        assert_eq!(TcpOptions::parse(&[99, 1]).unwrap_err(), Error::BadLength);
        assert_eq!(
            TcpOptions::parse(&[5, 9, 0, 0, 0, 0, 0, 0, 0]).unwrap_err(),
            Error::BadLength
        );
        // Bytes after EOL are ignored.
        assert_eq!(
            TcpOptions::parse(&[0, 2, 3]).unwrap(),
            TcpOptions::default()
        );
    }

    #[test]
    fn oversized_options_refused() {
        let mut r = sample(b"");
        r.options.sack.push(1, 2);
        r.options.sack.push(3, 4);
        r.options.sack.push(5, 6);
        assert_eq!(
            r.emit_without_checksum(&mut [0u8; 100]).unwrap_err(),
            Error::Exhausted
        );
    }

    #[test]
    fn bad_headers() {
        let (s, d) = addrs();
        let mut buf = [0u8; 128];
        let n = sample(b"").emit(&mut buf, s, d).unwrap();
        assert_eq!(TcpRepr::parse(&buf[..n - 1]).unwrap_err(), Error::Truncated);
        assert_eq!(TcpRepr::parse(&buf[..19]).unwrap_err(), Error::Truncated);
        buf[12] = 0x40;
        assert_eq!(TcpRepr::parse(&buf[..n]).unwrap_err(), Error::BadLength);
    }

    #[test]
    fn flags_display() {
        assert_eq!((TcpFlags::SYN | TcpFlags::ACK).to_string(), "S.");
        assert_eq!(
            (TcpFlags::FIN | TcpFlags::ACK | TcpFlags::PSH).to_string(),
            "FP."
        );
    }
}
