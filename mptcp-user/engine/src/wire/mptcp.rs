//! MPTCP v1 suboptions (RFC 8684 section 3), TCP option kind 30.
//!
//! Each suboption is a plain value; its shape (and so its length on the
//! wire) follows from which fields are present. `parse` takes one whole
//! option (kind and length bytes included); `emit` writes one.
use super::{be16, be32, be64, Error, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const OPTION_KIND: u8 = 30;

pub const SUBTYPE_MP_CAPABLE: u8 = 0x0;
pub const SUBTYPE_MP_JOIN: u8 = 0x1;
pub const SUBTYPE_DSS: u8 = 0x2;
pub const SUBTYPE_ADD_ADDR: u8 = 0x3;
pub const SUBTYPE_REMOVE_ADDR: u8 = 0x4;
pub const SUBTYPE_MP_PRIO: u8 = 0x5;
pub const SUBTYPE_MP_FAIL: u8 = 0x6;
pub const SUBTYPE_MP_FASTCLOSE: u8 = 0x7;
pub const SUBTYPE_MP_TCPRST: u8 = 0x8;

/// MP_CAPABLE: all four forms of RFC 8684 section 3.1 (lengths 4, 12, 20,
/// 22 and 24); v0's 12-byte SYN parses too (as a SYN/ACK-shaped value).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MpCapable {
    pub version: u8,
    /// The flag byte: A (checksum required) B (extensibility) C (no more
    /// subflows to this address) D-G (reserved) H (HMAC-SHA256).
    pub flags: u8,
    pub sender_key: Option<u64>,
    pub receiver_key: Option<u64>,
    /// Data-level length (third ACK carrying data).
    pub data_len: Option<u16>,
    /// DSS checksum of that data, when checksums are in use.
    pub checksum: Option<u16>,
}

impl MpCapable {
    pub const FLAG_CHECKSUM: u8 = 0x80;
    pub const FLAG_EXTENSIBILITY: u8 = 0x40;
    pub const FLAG_NO_MORE_SUBFLOWS: u8 = 0x20;
    pub const FLAG_HMAC_SHA256: u8 = 0x01;

    pub fn checksum_required(&self) -> bool {
        self.flags & Self::FLAG_CHECKSUM != 0
    }

    fn wire_len(&self) -> Result<usize> {
        match (
            self.sender_key,
            self.receiver_key,
            self.data_len,
            self.checksum,
        ) {
            (None, None, None, None) => Ok(4),
            (Some(_), None, None, None) => Ok(12),
            (Some(_), Some(_), None, None) => Ok(20),
            (Some(_), Some(_), Some(_), None) => Ok(22),
            (Some(_), Some(_), Some(_), Some(_)) => Ok(24),
            _ => Err(Error::Malformed),
        }
    }
}

/// MP_JOIN in its three forms (RFC 8684 section 3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MpJoin {
    /// Length 12.
    Syn {
        backup: bool,
        addr_id: u8,
        token: u32,
        nonce: u32,
    },
    /// Length 16: the leftmost 64 bits of the HMAC.
    SynAck {
        backup: bool,
        addr_id: u8,
        hmac: u64,
        nonce: u32,
    },
    /// Length 24: the full 160-bit HMAC (leftmost 20 bytes of HMAC-SHA256).
    Ack { hmac: [u8; 20] },
}

/// DSS mapping: DSN, subflow sequence number, data-level length, checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DssMapping {
    pub dsn: u64,
    /// Sent as 8 bytes (flag m); otherwise `dsn` must fit 32 bits.
    pub dsn_wide: bool,
    /// Relative to the subflow's initial sequence number.
    pub ssn: u32,
    pub data_len: u16,
    pub checksum: Option<u16>,
}

/// DSS (RFC 8684 section 3.3): any combination of DATA_ACK, mapping and DATA_FIN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Dss {
    pub data_fin: bool,
    pub data_ack: Option<u64>,
    /// DATA_ACK sent as 8 bytes (flag a); otherwise it must fit 32 bits.
    pub data_ack_wide: bool,
    pub mapping: Option<DssMapping>,
}

impl Dss {
    const F: u8 = 0x10;
    const M_WIDE: u8 = 0x08;
    const M: u8 = 0x04;
    const A_WIDE: u8 = 0x02;
    const A: u8 = 0x01;

    fn wire_len(&self) -> usize {
        let mut len = 4;
        if self.data_ack.is_some() {
            len += if self.data_ack_wide { 8 } else { 4 };
        }
        if let Some(m) = &self.mapping {
            len += if m.dsn_wide { 8 } else { 4 } + 4 + 2;
            if m.checksum.is_some() {
                len += 2;
            }
        }
        len
    }
}

/// ADD_ADDR (RFC 8684 section 3.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddAddr {
    pub echo: bool,
    pub addr_id: u8,
    pub addr: IpAddr,
    pub port: Option<u16>,
    /// Leftmost 64 bits of the HMAC; absent on echoes.
    pub hmac: Option<u64>,
}

impl AddAddr {
    fn wire_len(&self) -> usize {
        4 + match self.addr {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 16,
        } + if self.port.is_some() { 2 } else { 0 }
            + if self.hmac.is_some() { 8 } else { 0 }
    }
}

/// Address ids of REMOVE_ADDR (at most 37 fit in the TCP option space).
#[derive(Clone, Copy, Debug)]
pub struct AddrIds {
    ids: [u8; AddrIds::CAPACITY],
    len: u8,
}

impl AddrIds {
    pub const CAPACITY: usize = 37;

    pub const fn new() -> Self {
        AddrIds {
            ids: [0; Self::CAPACITY],
            len: 0,
        }
    }
    pub fn from_slice(ids: &[u8]) -> Result<Self> {
        let mut s = Self::new();
        for &id in ids {
            s.push(id)?;
        }
        Ok(s)
    }
    pub fn push(&mut self, id: u8) -> Result<()> {
        let slot = self
            .ids
            .get_mut(self.len as usize)
            .ok_or(Error::Exhausted)?;
        *slot = id;
        self.len += 1;
        Ok(())
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.ids[..self.len as usize]
    }
}

impl Default for AddrIds {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for AddrIds {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}
impl Eq for AddrIds {}
impl core::hash::Hash for AddrIds {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

/// One MPTCP suboption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MptcpOption {
    MpCapable(MpCapable),
    MpJoin(MpJoin),
    Dss(Dss),
    AddAddr(AddAddr),
    /// At least one id.
    RemoveAddr(AddrIds),
    /// `addr_id` only in the v0 form (length 4).
    MpPrio {
        backup: bool,
        addr_id: Option<u8>,
    },
    MpFail {
        dsn: u64,
    },
    MpFastclose {
        receiver_key: u64,
    },
    /// `flags` holds U, V, W, T in its low four bits (T = transient).
    MpTcpRst {
        flags: u8,
        reason: u8,
    },
}

impl Default for MptcpOption {
    /// A placeholder for fixed-capacity storage; never parsed from nothing.
    fn default() -> Self {
        MptcpOption::MpPrio {
            backup: false,
            addr_id: None,
        }
    }
}

impl MptcpOption {
    /// The subtype number on the wire.
    pub fn subtype(&self) -> u8 {
        match self {
            MptcpOption::MpCapable(_) => SUBTYPE_MP_CAPABLE,
            MptcpOption::MpJoin(_) => SUBTYPE_MP_JOIN,
            MptcpOption::Dss(_) => SUBTYPE_DSS,
            MptcpOption::AddAddr(_) => SUBTYPE_ADD_ADDR,
            MptcpOption::RemoveAddr(_) => SUBTYPE_REMOVE_ADDR,
            MptcpOption::MpPrio { .. } => SUBTYPE_MP_PRIO,
            MptcpOption::MpFail { .. } => SUBTYPE_MP_FAIL,
            MptcpOption::MpFastclose { .. } => SUBTYPE_MP_FASTCLOSE,
            MptcpOption::MpTcpRst { .. } => SUBTYPE_MP_TCPRST,
        }
    }

    /// The name used by `mptcp-user decode` (`mp_capable`, `dss`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            MptcpOption::MpCapable(_) => "mp_capable",
            MptcpOption::MpJoin(_) => "mp_join",
            MptcpOption::Dss(_) => "dss",
            MptcpOption::AddAddr(_) => "add_addr",
            MptcpOption::RemoveAddr(_) => "remove_addr",
            MptcpOption::MpPrio { .. } => "mp_prio",
            MptcpOption::MpFail { .. } => "mp_fail",
            MptcpOption::MpFastclose { .. } => "mp_fastclose",
            MptcpOption::MpTcpRst { .. } => "mp_tcprst",
        }
    }

    /// Parses one whole option (`opt[0]` is kind 30, `opt[1]` its length,
    /// equal to `opt.len()`). `Ok(None)` for subtypes this codec does not
    /// know (the caller keeps those as raw bytes).
    pub fn parse(opt: &[u8]) -> Result<Option<MptcpOption>> {
        if opt.len() < 3 {
            return Err(Error::BadLength);
        }
        if opt[0] != OPTION_KIND {
            return Err(Error::Malformed);
        }
        if opt[1] as usize != opt.len() {
            return Err(Error::BadLength);
        }
        let len = opt.len();
        let subtype = opt[2] >> 4;
        let low = opt[2] & 0x0f;
        let o = match subtype {
            SUBTYPE_MP_CAPABLE => {
                if !matches!(len, 4 | 12 | 20 | 22 | 24) {
                    return Err(Error::BadLength);
                }
                let mut c = MpCapable {
                    version: low,
                    flags: opt[3],
                    ..Default::default()
                };
                if len >= 12 {
                    c.sender_key = Some(be64(opt, 4)?);
                }
                if len >= 20 {
                    c.receiver_key = Some(be64(opt, 12)?);
                }
                if len >= 22 {
                    c.data_len = Some(be16(opt, 20)?);
                }
                if len == 24 {
                    c.checksum = Some(be16(opt, 22)?);
                }
                MptcpOption::MpCapable(c)
            }
            SUBTYPE_MP_JOIN => {
                let backup = low & 1 != 0;
                MptcpOption::MpJoin(match len {
                    12 => MpJoin::Syn {
                        backup,
                        addr_id: opt[3],
                        token: be32(opt, 4)?,
                        nonce: be32(opt, 8)?,
                    },
                    16 => MpJoin::SynAck {
                        backup,
                        addr_id: opt[3],
                        hmac: be64(opt, 4)?,
                        nonce: be32(opt, 12)?,
                    },
                    24 => {
                        let mut hmac = [0u8; 20];
                        hmac.copy_from_slice(&opt[4..24]);
                        MpJoin::Ack { hmac }
                    }
                    _ => return Err(Error::BadLength),
                })
            }
            SUBTYPE_DSS => {
                if len < 4 {
                    return Err(Error::BadLength);
                }
                let f = opt[3];
                let mut d = Dss {
                    data_fin: f & Dss::F != 0,
                    ..Default::default()
                };
                let mut at = 4;
                if f & Dss::A != 0 {
                    d.data_ack_wide = f & Dss::A_WIDE != 0;
                    d.data_ack = Some(if d.data_ack_wide {
                        be64(opt, at)?
                    } else {
                        be32(opt, at)? as u64
                    });
                    at += if d.data_ack_wide { 8 } else { 4 };
                }
                if f & Dss::M != 0 {
                    let dsn_wide = f & Dss::M_WIDE != 0;
                    let dsn = if dsn_wide {
                        be64(opt, at)?
                    } else {
                        be32(opt, at)? as u64
                    };
                    at += if dsn_wide { 8 } else { 4 };
                    let ssn = be32(opt, at)?;
                    let data_len = be16(opt, at + 4)?;
                    at += 6;
                    let checksum = match len - at.min(len) {
                        0 => None,
                        2 => Some(be16(opt, at)?),
                        _ => return Err(Error::BadLength),
                    };
                    at = len;
                    d.mapping = Some(DssMapping {
                        dsn,
                        dsn_wide,
                        ssn,
                        data_len,
                        checksum,
                    });
                }
                if at != len {
                    return Err(Error::BadLength);
                }
                MptcpOption::Dss(d)
            }
            SUBTYPE_ADD_ADDR => {
                let echo = low & 1 != 0;
                // Lengths without and with the HMAC never overlap.
                let (v6, port, hmac) = match len {
                    8 => (false, false, false),
                    10 => (false, true, false),
                    16 => (false, false, true),
                    18 => (false, true, true),
                    20 => (true, false, false),
                    22 => (true, true, false),
                    28 => (true, false, true),
                    30 => (true, true, true),
                    _ => return Err(Error::BadLength),
                };
                let (addr, mut at) = if v6 {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&opt[4..20]);
                    (IpAddr::V6(Ipv6Addr::from(a)), 20)
                } else {
                    (IpAddr::V4(Ipv4Addr::new(opt[4], opt[5], opt[6], opt[7])), 8)
                };
                let port = if port {
                    at += 2;
                    Some(be16(opt, at - 2)?)
                } else {
                    None
                };
                let hmac = if hmac { Some(be64(opt, at)?) } else { None };
                MptcpOption::AddAddr(AddAddr {
                    echo,
                    addr_id: opt[3],
                    addr,
                    port,
                    hmac,
                })
            }
            SUBTYPE_REMOVE_ADDR => {
                if len < 4 {
                    return Err(Error::BadLength);
                }
                MptcpOption::RemoveAddr(
                    AddrIds::from_slice(&opt[3..]).map_err(|_| Error::BadLength)?,
                )
            }
            SUBTYPE_MP_PRIO => match len {
                3 => MptcpOption::MpPrio {
                    backup: low & 1 != 0,
                    addr_id: None,
                },
                4 => MptcpOption::MpPrio {
                    backup: low & 1 != 0,
                    addr_id: Some(opt[3]),
                },
                _ => return Err(Error::BadLength),
            },
            SUBTYPE_MP_FAIL => {
                if len != 12 {
                    return Err(Error::BadLength);
                }
                MptcpOption::MpFail { dsn: be64(opt, 4)? }
            }
            SUBTYPE_MP_FASTCLOSE => {
                if len != 12 {
                    return Err(Error::BadLength);
                }
                MptcpOption::MpFastclose {
                    receiver_key: be64(opt, 4)?,
                }
            }
            SUBTYPE_MP_TCPRST => {
                if len != 4 {
                    return Err(Error::BadLength);
                }
                MptcpOption::MpTcpRst {
                    flags: low,
                    reason: opt[3],
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(o))
    }

    /// Length on the wire, kind and length bytes included.
    pub fn wire_len(&self) -> Result<usize> {
        Ok(match self {
            MptcpOption::MpCapable(c) => c.wire_len()?,
            MptcpOption::MpJoin(MpJoin::Syn { .. }) => 12,
            MptcpOption::MpJoin(MpJoin::SynAck { .. }) => 16,
            MptcpOption::MpJoin(MpJoin::Ack { .. }) => 24,
            MptcpOption::Dss(d) => d.wire_len(),
            MptcpOption::AddAddr(a) => a.wire_len(),
            MptcpOption::RemoveAddr(ids) => {
                if ids.as_slice().is_empty() {
                    return Err(Error::Malformed);
                }
                3 + ids.as_slice().len()
            }
            MptcpOption::MpPrio { addr_id, .. } => 3 + addr_id.is_some() as usize,
            MptcpOption::MpFail { .. } | MptcpOption::MpFastclose { .. } => 12,
            MptcpOption::MpTcpRst { .. } => 4,
        })
    }

    /// Writes the option at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.wire_len()?;
        let Some(o) = buf.get_mut(..len) else {
            return Err(Error::Exhausted);
        };
        o[0] = OPTION_KIND;
        o[1] = len as u8;
        o[2] = self.subtype() << 4;
        match self {
            MptcpOption::MpCapable(c) => {
                if c.version > 0x0f {
                    return Err(Error::Malformed);
                }
                o[2] |= c.version;
                o[3] = c.flags;
                if let Some(k) = c.sender_key {
                    o[4..12].copy_from_slice(&k.to_be_bytes());
                }
                if let Some(k) = c.receiver_key {
                    o[12..20].copy_from_slice(&k.to_be_bytes());
                }
                if let Some(l) = c.data_len {
                    o[20..22].copy_from_slice(&l.to_be_bytes());
                }
                if let Some(s) = c.checksum {
                    o[22..24].copy_from_slice(&s.to_be_bytes());
                }
            }
            MptcpOption::MpJoin(MpJoin::Syn {
                backup,
                addr_id,
                token,
                nonce,
            }) => {
                o[2] |= *backup as u8;
                o[3] = *addr_id;
                o[4..8].copy_from_slice(&token.to_be_bytes());
                o[8..12].copy_from_slice(&nonce.to_be_bytes());
            }
            MptcpOption::MpJoin(MpJoin::SynAck {
                backup,
                addr_id,
                hmac,
                nonce,
            }) => {
                o[2] |= *backup as u8;
                o[3] = *addr_id;
                o[4..12].copy_from_slice(&hmac.to_be_bytes());
                o[12..16].copy_from_slice(&nonce.to_be_bytes());
            }
            MptcpOption::MpJoin(MpJoin::Ack { hmac }) => {
                o[3] = 0;
                o[4..24].copy_from_slice(hmac);
            }
            MptcpOption::Dss(d) => {
                let mut f = 0;
                let mut at = 4;
                if d.data_fin {
                    f |= Dss::F;
                }
                if let Some(ack) = d.data_ack {
                    f |= Dss::A;
                    at = put_var(o, at, ack, d.data_ack_wide)?;
                    if d.data_ack_wide {
                        f |= Dss::A_WIDE;
                    }
                }
                if let Some(m) = &d.mapping {
                    f |= Dss::M;
                    if m.dsn_wide {
                        f |= Dss::M_WIDE;
                    }
                    at = put_var(o, at, m.dsn, m.dsn_wide)?;
                    o[at..at + 4].copy_from_slice(&m.ssn.to_be_bytes());
                    o[at + 4..at + 6].copy_from_slice(&m.data_len.to_be_bytes());
                    if let Some(c) = m.checksum {
                        o[at + 6..at + 8].copy_from_slice(&c.to_be_bytes());
                    }
                }
                o[3] = f;
            }
            MptcpOption::AddAddr(a) => {
                o[2] |= a.echo as u8;
                o[3] = a.addr_id;
                let mut at = match a.addr {
                    IpAddr::V4(v4) => {
                        o[4..8].copy_from_slice(&v4.octets());
                        8
                    }
                    IpAddr::V6(v6) => {
                        o[4..20].copy_from_slice(&v6.octets());
                        20
                    }
                };
                if let Some(p) = a.port {
                    o[at..at + 2].copy_from_slice(&p.to_be_bytes());
                    at += 2;
                }
                if let Some(h) = a.hmac {
                    o[at..at + 8].copy_from_slice(&h.to_be_bytes());
                }
            }
            MptcpOption::RemoveAddr(ids) => o[3..].copy_from_slice(ids.as_slice()),
            MptcpOption::MpPrio { backup, addr_id } => {
                o[2] |= *backup as u8;
                if let Some(id) = addr_id {
                    o[3] = *id;
                }
            }
            MptcpOption::MpFail { dsn } => {
                o[3] = 0;
                o[4..12].copy_from_slice(&dsn.to_be_bytes());
            }
            MptcpOption::MpFastclose { receiver_key } => {
                o[3] = 0;
                o[4..12].copy_from_slice(&receiver_key.to_be_bytes());
            }
            MptcpOption::MpTcpRst { flags, reason } => {
                if *flags > 0x0f {
                    return Err(Error::Malformed);
                }
                o[2] |= flags;
                o[3] = *reason;
            }
        }
        Ok(len)
    }
}

/// Writes a 4- or 8-byte value; a narrow value must fit 32 bits.
fn put_var(o: &mut [u8], at: usize, v: u64, wide: bool) -> Result<usize> {
    if wide {
        o[at..at + 8].copy_from_slice(&v.to_be_bytes());
        Ok(at + 8)
    } else {
        let v = u32::try_from(v).map_err(|_| Error::Malformed)?;
        o[at..at + 4].copy_from_slice(&v.to_be_bytes());
        Ok(at + 4)
    }
}

/// The MPTCP suboptions of one segment (fixed capacity, no allocation).
#[derive(Clone, Copy, Debug, Default)]
pub struct MptcpOptions {
    items: [MptcpOption; MptcpOptions::CAPACITY],
    len: u8,
}

impl MptcpOptions {
    pub const CAPACITY: usize = 4;

    pub fn push(&mut self, o: MptcpOption) -> Result<()> {
        let slot = self
            .items
            .get_mut(self.len as usize)
            .ok_or(Error::Exhausted)?;
        *slot = o;
        self.len += 1;
        Ok(())
    }
    pub fn as_slice(&self) -> &[MptcpOption] {
        &self.items[..self.len as usize]
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn clear(&mut self) {
        self.len = 0;
    }
    pub fn iter(&self) -> core::slice::Iter<'_, MptcpOption> {
        self.as_slice().iter()
    }
    pub fn dss(&self) -> Option<&Dss> {
        self.iter().find_map(|o| match o {
            MptcpOption::Dss(d) => Some(d),
            _ => None,
        })
    }
    pub fn mp_capable(&self) -> Option<&MpCapable> {
        self.iter().find_map(|o| match o {
            MptcpOption::MpCapable(c) => Some(c),
            _ => None,
        })
    }
    pub fn mp_join(&self) -> Option<&MpJoin> {
        self.iter().find_map(|o| match o {
            MptcpOption::MpJoin(j) => Some(j),
            _ => None,
        })
    }
}

impl PartialEq for MptcpOptions {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}
impl Eq for MptcpOptions {}

impl<'a> IntoIterator for &'a MptcpOptions {
    type Item = &'a MptcpOption;
    type IntoIter = core::slice::Iter<'a, MptcpOption>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Parses `bytes`, checks the value, and checks emit gives the bytes back.
    fn check(bytes: &[u8], want: MptcpOption) {
        assert_eq!(MptcpOption::parse(bytes).unwrap(), Some(want));
        let mut buf = [0u8; 40];
        let n = want.emit(&mut buf).unwrap();
        assert_eq!(&buf[..n], bytes);
        assert_eq!(want.wire_len().unwrap(), bytes.len());
        // Every shorter prefix, with its length byte kept, fails cleanly.
        for cut in 0..bytes.len() {
            assert!(MptcpOption::parse(&bytes[..cut]).is_err(), "prefix {cut}");
        }
    }

    // Byte vectors from the Linux 6.18 captures in shared/fixtures.
    #[test]
    fn kernel_mp_capable() {
        let syn = MpCapable {
            version: 1,
            flags: 0x81,
            ..Default::default()
        };
        check(&hex("1e040181"), MptcpOption::MpCapable(syn));
        let synack = MpCapable {
            sender_key: Some(0x600f5efc49aeb015),
            ..syn
        };
        check(
            &hex("1e0c0181600f5efc49aeb015"),
            MptcpOption::MpCapable(synack),
        );
        let ack = MpCapable {
            sender_key: Some(0x340393a418be4e0c),
            receiver_key: Some(0x600f5efc49aeb015),
            ..syn
        };
        check(
            &hex("1e140181340393a418be4e0c600f5efc49aeb015"),
            MptcpOption::MpCapable(ack),
        );
        assert!(ack.checksum_required());
        let data = MpCapable {
            data_len: Some(1100),
            ..ack
        };
        check(
            &hex("1e160181340393a418be4e0c600f5efc49aeb015044c"),
            MptcpOption::MpCapable(data),
        );
        let data_ck = MpCapable {
            checksum: Some(0xbeef),
            ..data
        };
        check(
            &hex("1e180181340393a418be4e0c600f5efc49aeb015044cbeef"),
            MptcpOption::MpCapable(data_ck),
        );
        let bad = MpCapable {
            receiver_key: Some(1),
            ..syn
        };
        assert_eq!(
            MptcpOption::MpCapable(bad).emit(&mut [0; 40]).unwrap_err(),
            Error::Malformed
        );
        assert_eq!(
            MptcpOption::parse(&hex("1e0501810000")[..5]).unwrap_err(),
            Error::BadLength
        );
    }

    #[test]
    fn kernel_mp_join() {
        check(
            &hex("1e0c10010e430aa106aafb9c"),
            MptcpOption::MpJoin(MpJoin::Syn {
                backup: false,
                addr_id: 1,
                token: 0x0e430aa1,
                nonce: 0x06aafb9c,
            }),
        );
        check(
            &hex("1e10100103ca5d4bbb1b971bf95f297c"),
            MptcpOption::MpJoin(MpJoin::SynAck {
                backup: false,
                addr_id: 1,
                hmac: 0x03ca5d4bbb1b971b,
                nonce: 0xf95f297c,
            }),
        );
        let mut hmac = [0u8; 20];
        hmac.copy_from_slice(&hex("18a9996ccb6b19df7a0d058885bf0481221e3207"));
        check(
            &hex("1e18100018a9996ccb6b19df7a0d058885bf0481221e3207"),
            MptcpOption::MpJoin(MpJoin::Ack { hmac }),
        );
        check(
            &hex("1e0c11050e430aa106aafb9c"),
            MptcpOption::MpJoin(MpJoin::Syn {
                backup: true,
                addr_id: 5,
                token: 0x0e430aa1,
                nonce: 0x06aafb9c,
            }),
        );
        assert_eq!(
            MptcpOption::parse(&hex("1e0d10010e430aa106aafb9c00")).unwrap_err(),
            Error::BadLength
        );
    }

    #[test]
    fn kernel_dss() {
        // Data ACK 4 bytes, 8-byte DSN, SSN, length, checksum.
        check(
            &hex("1e18200df2a7415dc9587f34dd4a5aef00000001044ce454"),
            MptcpOption::Dss(Dss {
                data_fin: false,
                data_ack: Some(0xf2a7415d),
                data_ack_wide: false,
                mapping: Some(DssMapping {
                    dsn: 0xc9587f34dd4a5aef,
                    dsn_wide: true,
                    ssn: 1,
                    data_len: 1100,
                    checksum: Some(0xe454),
                }),
            }),
        );
        // DATA_ACK only, 8 bytes.
        check(
            &hex("1e0c200326689911f2a745a9"),
            MptcpOption::Dss(Dss {
                data_ack: Some(0x26689911f2a745a9),
                data_ack_wide: true,
                ..Default::default()
            }),
        );
        // 4-byte DSN with DATA_FIN, no checksum, no DATA_ACK.
        check(
            &hex("1e0e2014000000640000000a0001"),
            MptcpOption::Dss(Dss {
                data_fin: true,
                mapping: Some(DssMapping {
                    dsn: 100,
                    ssn: 10,
                    data_len: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        // Flags only: an empty DSS is legal.
        check(&hex("1e042000"), MptcpOption::Dss(Dss::default()));
        // A length one byte off the flags' shape.
        assert_eq!(
            MptcpOption::parse(&hex("1e0d200326689911f2a745a900")).unwrap_err(),
            Error::BadLength
        );
        assert_eq!(
            MptcpOption::parse(&hex("1e0b200326689911f2a745")).unwrap_err(),
            Error::Truncated
        );
        let narrow = Dss {
            data_ack: Some(1 << 40),
            ..Default::default()
        };
        assert_eq!(
            MptcpOption::Dss(narrow).emit(&mut [0; 40]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn kernel_add_addr_and_others() {
        check(
            &hex("1e1030010a0102026b2eff7b008656f3"),
            MptcpOption::AddAddr(AddAddr {
                echo: false,
                addr_id: 1,
                addr: "10.1.2.2".parse().unwrap(),
                port: None,
                hmac: Some(0x6b2eff7b008656f3),
            }),
        );
        check(
            &hex("1e0831010a010202"),
            MptcpOption::AddAddr(AddAddr {
                echo: true,
                addr_id: 1,
                addr: "10.1.2.2".parse().unwrap(),
                port: None,
                hmac: None,
            }),
        );
        check(
            &hex("1e0351"),
            MptcpOption::MpPrio {
                backup: true,
                addr_id: None,
            },
        );
        check(
            &hex("1e044001"),
            MptcpOption::RemoveAddr(AddrIds::from_slice(&[1]).unwrap()),
        );
        check(
            &hex("1e0c7000c98923496e7af8bb"),
            MptcpOption::MpFastclose {
                receiver_key: 0xc98923496e7af8bb,
            },
        );
        check(
            &hex("1e048000"),
            MptcpOption::MpTcpRst {
                flags: 0,
                reason: 0,
            },
        );
    }

    #[test]
    fn constructed_forms() {
        check(
            &hex("1e1e3004200100000000000000000000000000011f901122334455667788"),
            MptcpOption::AddAddr(AddAddr {
                echo: false,
                addr_id: 4,
                addr: "2001::1".parse().unwrap(),
                port: Some(8080),
                hmac: Some(0x1122334455667788),
            }),
        );
        check(
            &hex("1e0a30010a0102021f90"),
            MptcpOption::AddAddr(AddAddr {
                echo: false,
                addr_id: 1,
                addr: "10.1.2.2".parse().unwrap(),
                port: Some(8080),
                hmac: None,
            }),
        );
        check(
            &hex("1e06400102ff"),
            MptcpOption::RemoveAddr(AddrIds::from_slice(&[1, 2, 255]).unwrap()),
        );
        check(
            &hex("1e045007"),
            MptcpOption::MpPrio {
                backup: false,
                addr_id: Some(7),
            },
        );
        check(
            &hex("1e0c60000000000000000102"),
            MptcpOption::MpFail { dsn: 0x102 },
        );
        check(
            &hex("1e048103"),
            MptcpOption::MpTcpRst {
                flags: 1,
                reason: 3,
            },
        );
        assert_eq!(
            MptcpOption::parse(&hex("1e0340")).unwrap_err(),
            Error::BadLength
        );
        assert_eq!(
            MptcpOption::parse(&hex("1e0b6000000000000000")).unwrap_err(),
            Error::BadLength
        );
        // Unknown subtype (MP_EXPERIMENTAL): left to the caller.
        assert_eq!(MptcpOption::parse(&hex("1e04f000")).unwrap(), None);
    }
}
