//! Reading (and writing) packet captures: classic pcap (micro- and
//! nanosecond, either byte order) and pcapng (SHB, IDB, EPB, SPB blocks),
//! link types Ethernet, Linux cooked v1 (SLL) and v2 (SLL2), and raw IP.
//! The reader works over a byte slice (read the file whole) and never
//! panics on malformed input: it yields an error and stops.
use crate::wire::{Error, EthernetFrame, Result};
use std::io::{self, Write};

pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_IPV6: u32 = 229;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

/// One captured frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// 1-based position in the file, as Wireshark numbers frames.
    pub number: u64,
    /// Capture time in nanoseconds since the Unix epoch.
    pub ts_nanos: u64,
    pub linktype: u32,
    /// The captured bytes (possibly fewer than `orig_len`).
    pub data: &'a [u8],
    pub orig_len: u32,
}

impl<'a> Record<'a> {
    /// The network-layer packet (IPv4 or IPv6) inside the frame, with its
    /// EtherType; `Err(Unsupported)` for other link types or protocols.
    pub fn network(&self) -> Result<(u16, &'a [u8])> {
        link_payload(self.linktype, self.data)
    }
}

/// Strips the link-layer header of a frame.
pub fn link_payload(linktype: u32, data: &[u8]) -> Result<(u16, &[u8])> {
    use crate::wire::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
    let (ethertype, payload) = match linktype {
        LINKTYPE_ETHERNET => {
            let f = EthernetFrame::new_checked(data)?;
            let hl = f.header_len();
            (f.ethertype(), &data[hl..])
        }
        LINKTYPE_LINUX_SLL => {
            let h = data.get(..16).ok_or(Error::Truncated)?;
            (u16::from_be_bytes([h[14], h[15]]), &data[16..])
        }
        LINKTYPE_LINUX_SLL2 => {
            let h = data.get(..20).ok_or(Error::Truncated)?;
            (u16::from_be_bytes([h[0], h[1]]), &data[20..])
        }
        LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 => {
            let v = data.first().ok_or(Error::Truncated)? >> 4;
            (
                if v == 6 {
                    ETHERTYPE_IPV6
                } else {
                    ETHERTYPE_IPV4
                },
                data,
            )
        }
        _ => return Err(Error::Unsupported),
    };
    match ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Ok((ethertype, payload)),
        _ => Err(Error::Unsupported),
    }
}

#[derive(Clone, Copy, Debug)]
struct Interface {
    linktype: u32,
    /// Timestamp units per second.
    ticks_per_sec: u64,
}

#[derive(Clone, Copy, Debug)]
enum Format {
    Classic {
        big_endian: bool,
        nanos: bool,
        linktype: u32,
    },
    Ng {
        big_endian: bool,
    },
}

/// Iterates the frames of a capture held in memory.
pub struct PcapReader<'a> {
    data: &'a [u8],
    pos: usize,
    format: Format,
    /// pcapng interfaces of the current section (at most 16 tracked).
    interfaces: [Option<Interface>; 16],
    next_number: u64,
    failed: bool,
}

fn rd32(b: &[u8], at: usize, big: bool) -> Result<u32> {
    let s = b.get(at..at + 4).ok_or(Error::Truncated)?;
    let a = [s[0], s[1], s[2], s[3]];
    Ok(if big {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    })
}

fn rd16(b: &[u8], at: usize, big: bool) -> Result<u16> {
    let s = b.get(at..at + 2).ok_or(Error::Truncated)?;
    let a = [s[0], s[1]];
    Ok(if big {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    })
}

const PCAPNG_SHB: u32 = 0x0a0d_0d0a;

impl<'a> PcapReader<'a> {
    /// Checks the file header; `Malformed` if this is not a capture.
    pub fn new(data: &'a [u8]) -> Result<Self> {
        let magic = data.get(..4).ok_or(Error::Truncated)?;
        let magic = [magic[0], magic[1], magic[2], magic[3]];
        let mut r = PcapReader {
            data,
            pos: 0,
            format: Format::Ng { big_endian: false },
            interfaces: [None; 16],
            next_number: 1,
            failed: false,
        };
        if u32::from_le_bytes(magic) == PCAPNG_SHB {
            // The section header is parsed by the iterator like any block.
            return Ok(r);
        }
        let (big_endian, nanos) = match (u32::from_le_bytes(magic), u32::from_be_bytes(magic)) {
            (0xa1b2_c3d4, _) => (false, false),
            (0xa1b2_3c4d, _) => (false, true),
            (_, 0xa1b2_c3d4) => (true, false),
            (_, 0xa1b2_3c4d) => (true, true),
            _ => return Err(Error::Malformed),
        };
        let linktype = rd32(data, 20, big_endian)? & 0x0fff_ffff;
        r.format = Format::Classic {
            big_endian,
            nanos,
            linktype,
        };
        r.pos = 24;
        Ok(r)
    }

    fn next_classic(
        &mut self,
        big: bool,
        nanos: bool,
        linktype: u32,
    ) -> Result<Option<Record<'a>>> {
        if self.pos == self.data.len() {
            return Ok(None);
        }
        let h = self.pos;
        let sec = rd32(self.data, h, big)? as u64;
        let frac = rd32(self.data, h + 4, big)? as u64;
        let incl = rd32(self.data, h + 8, big)? as usize;
        let orig_len = rd32(self.data, h + 12, big)?;
        let start = h + 16;
        let data = self
            .data
            .get(start..start.saturating_add(incl))
            .ok_or(Error::Truncated)?;
        self.pos = start + incl;
        let ts_nanos = sec.saturating_mul(1_000_000_000).saturating_add(if nanos {
            frac
        } else {
            frac.saturating_mul(1000)
        });
        let number = self.next_number;
        self.next_number += 1;
        Ok(Some(Record {
            number,
            ts_nanos,
            linktype,
            data,
            orig_len,
        }))
    }

    fn next_ng(&mut self) -> Result<Option<Record<'a>>> {
        loop {
            if self.pos == self.data.len() {
                return Ok(None);
            }
            let at = self.pos;
            let raw_type = rd32(self.data, at, false)?;
            if raw_type == PCAPNG_SHB {
                // The byte-order magic decides how to read this section.
                let bom = rd32(self.data, at + 8, false)?;
                let big = match bom {
                    0x1a2b_3c4d => false,
                    0x4d3c_2b1a => true,
                    _ => return Err(Error::Malformed),
                };
                self.format = Format::Ng { big_endian: big };
                self.interfaces = [None; 16];
            }
            let Format::Ng { big_endian: big } = self.format else {
                return Err(Error::Malformed);
            };
            let btype = rd32(self.data, at, big)?;
            let blen = rd32(self.data, at + 4, big)? as usize;
            if blen < 12 || !blen.is_multiple_of(4) {
                return Err(Error::BadLength);
            }
            let block = self
                .data
                .get(at..at.saturating_add(blen))
                .ok_or(Error::Truncated)?;
            self.pos = at + blen;
            let body = &block[8..blen - 4];
            match btype {
                // Interface description: link type, snaplen, options.
                1 => {
                    let linktype = rd16(body, 0, big)? as u32;
                    let ticks_per_sec = if_tsresol(body.get(8..).unwrap_or(&[]), big);
                    if let Some(slot) = self.interfaces.iter_mut().find(|s| s.is_none()) {
                        *slot = Some(Interface {
                            linktype,
                            ticks_per_sec,
                        });
                    }
                }
                // Enhanced packet block.
                6 => {
                    let ifid = rd32(body, 0, big)? as usize;
                    let iface = self
                        .interfaces
                        .get(ifid)
                        .copied()
                        .flatten()
                        .ok_or(Error::Malformed)?;
                    let ts = ((rd32(body, 4, big)? as u64) << 32) | rd32(body, 8, big)? as u64;
                    let caplen = rd32(body, 12, big)? as usize;
                    let orig_len = rd32(body, 16, big)?;
                    let data = body
                        .get(20..20usize.saturating_add(caplen))
                        .ok_or(Error::Truncated)?;
                    return Ok(Some(self.ng_record(iface, ts, data, orig_len)));
                }
                // Simple packet block: interface 0, no timestamp.
                3 => {
                    let iface = self.interfaces[0].ok_or(Error::Malformed)?;
                    let orig_len = rd32(body, 0, big)?;
                    let data = &body[4..];
                    let data = &data[..data.len().min(orig_len as usize)];
                    return Ok(Some(self.ng_record(iface, 0, data, orig_len)));
                }
                _ => {}
            }
        }
    }

    fn ng_record(
        &mut self,
        iface: Interface,
        ts: u64,
        data: &'a [u8],
        orig_len: u32,
    ) -> Record<'a> {
        let tps = iface.ticks_per_sec.max(1);
        let ts_nanos = (ts / tps)
            .saturating_mul(1_000_000_000)
            .saturating_add((ts % tps).saturating_mul(1_000_000_000) / tps);
        let number = self.next_number;
        self.next_number += 1;
        Record {
            number,
            ts_nanos,
            linktype: iface.linktype,
            data,
            orig_len,
        }
    }
}

/// Timestamp resolution from IDB options (code 9); microseconds by default.
fn if_tsresol(mut opts: &[u8], big: bool) -> u64 {
    while opts.len() >= 4 {
        let (Ok(code), Ok(len)) = (rd16(opts, 0, big), rd16(opts, 2, big)) else {
            break;
        };
        let len = len as usize;
        if code == 0 {
            break;
        }
        if code == 9 && len >= 1 {
            if let Some(&v) = opts.get(4) {
                let exp = (v & 0x7f) as u32;
                let base: u64 = if v & 0x80 != 0 { 2 } else { 10 };
                return base.checked_pow(exp).unwrap_or(1_000_000);
            }
        }
        let step = 4 + len.next_multiple_of(4);
        opts = opts.get(step..).unwrap_or(&[]);
    }
    1_000_000
}

impl<'a> Iterator for PcapReader<'a> {
    type Item = Result<Record<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = match self.format {
            Format::Classic {
                big_endian,
                nanos,
                linktype,
            } => self.next_classic(big_endian, nanos, linktype),
            Format::Ng { .. } => self.next_ng(),
        };
        match r {
            Ok(Some(rec)) => Some(Ok(rec)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Writes a classic pcap file with nanosecond timestamps.
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut out: W, linktype: u32) -> io::Result<Self> {
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&0xa1b2_3c4du32.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        h[16..20].copy_from_slice(&262_144u32.to_le_bytes());
        h[20..24].copy_from_slice(&linktype.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out })
    }

    pub fn write(&mut self, ts_nanos: u64, frame: &[u8]) -> io::Result<()> {
        let len =
            u32::try_from(frame.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&((ts_nanos / 1_000_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((ts_nanos % 1_000_000_000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(frame)
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_reader_roundtrip() {
        let mut w = PcapWriter::new(Vec::new(), LINKTYPE_RAW).unwrap();
        w.write(1_500_000_123, &[0x45, 1, 2]).unwrap();
        w.write(2_000_000_000, &[0x60]).unwrap();
        let bytes = w.into_inner();
        let recs: Vec<_> = PcapReader::new(&bytes)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].ts_nanos, 1_500_000_123);
        assert_eq!(recs[0].data, &[0x45, 1, 2]);
        assert_eq!(recs[1].number, 2);
        assert_eq!(
            recs[1].network().unwrap().0,
            crate::wire::ethernet::ETHERTYPE_IPV6
        );
        // Truncated record: one error, then the iterator stops.
        let mut r = PcapReader::new(&bytes[..bytes.len() - 1]).unwrap();
        assert!(r.next().unwrap().is_ok());
        assert_eq!(r.next().unwrap().unwrap_err(), Error::Truncated);
        assert!(r.next().is_none());
        for cut in 0..bytes.len() {
            if let Ok(r) = PcapReader::new(&bytes[..cut]) {
                for _ in r {}
            }
        }
    }

    fn ng_block(btype: u32, body: &[u8]) -> Vec<u8> {
        let len = 12 + body.len().next_multiple_of(4);
        let mut b = Vec::new();
        b.extend_from_slice(&btype.to_le_bytes());
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b.extend_from_slice(body);
        b.resize(len - 4, 0);
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b
    }

    #[test]
    fn pcapng_with_sll2_and_nanosecond_resolution() {
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1a2b3c4du32.to_le_bytes());
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut idb = Vec::new();
        idb.extend_from_slice(&(LINKTYPE_LINUX_SLL2 as u16).to_le_bytes());
        idb.extend_from_slice(&[0, 0]);
        idb.extend_from_slice(&0u32.to_le_bytes());
        idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]); // if_tsresol = 10^-9, end
        let mut frame = vec![0x86, 0xdd];
        frame.resize(20, 0);
        frame.push(0x60);
        let mut epb = Vec::new();
        epb.extend_from_slice(&0u32.to_le_bytes());
        let ts: u64 = 3_000_000_007;
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        epb.extend_from_slice(&frame);
        let mut file = ng_block(PCAPNG_SHB, &shb);
        let idb_at = file.len();
        file.extend(ng_block(1, &idb));
        let epb_at = file.len();
        file.extend(ng_block(6, &epb));
        let recs: Vec<_> = PcapReader::new(&file)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].ts_nanos, 3_000_000_007);
        assert_eq!(recs[0].network().unwrap(), (0x86dd, &[0x60][..]));
        // A cut inside a block is reported; one at a block boundary is a clean end.
        for cut in 4..file.len() {
            let r = PcapReader::new(&file[..cut]).unwrap();
            let errs = r.take(10).filter(|x| x.is_err()).count();
            let boundary = cut == idb_at || cut == epb_at;
            assert_eq!(errs, if boundary { 0 } else { 1 }, "cut {cut}");
        }
    }

    #[test]
    fn sll_v1() {
        let mut f = vec![0u8; 14];
        f.extend_from_slice(&[0x08, 0x00, 0x45]);
        assert_eq!(
            link_payload(LINKTYPE_LINUX_SLL, &f).unwrap(),
            (0x0800, &[0x45][..])
        );
        assert_eq!(
            link_payload(LINKTYPE_LINUX_SLL, &f[..15]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(link_payload(42, &f).unwrap_err(), Error::Unsupported);
    }
}
