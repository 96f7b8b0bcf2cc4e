//! `decode --verify`: follows every MPTCP connection of a capture and
//! recomputes what the peers derived from their keys and nonces.
//!
//! Checks (their names appear in the output and the summary):
//! - `mp_capable_keys`: keys repeated in the third ACK (and later
//!   MP_CAPABLEs) match the ones first announced;
//! - `token`: an MP_JOIN SYN's token is the token of a key seen earlier;
//! - `idsn`: the lowest data mapping of each direction starts at IDSN + 1
//!   (reported after the last segment, at the frame of that mapping);
//! - `join_synack_hmac`, `join_ack_hmac`: MP_JOIN HMACs from keys and nonces;
//! - `add_addr_hmac`: ADD_ADDR HMAC with the sender's and receiver's keys;
//! - `dss_checksum`: DSS (and MP_CAPABLE-with-data) checksums over their data;
//! - `fastclose_key`: MP_FASTCLOSE carries the receiver's key.
//!
//! Something that cannot be checked (a join to a connection whose keys
//! were never seen, a mapping whose data was not captured) is counted as
//! skipped, not as a mismatch.
use mptcp_engine::crypto::{self, DssChecksum};
use mptcp_engine::wire::mptcp::{MpJoin, MptcpOption};
use mptcp_engine::wire::{TcpFlags, TcpRepr};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub frame: u64,
    pub kind: &'static str,
    pub ok: bool,
    /// What was expected and found (for the report).
    pub detail: String,
}

/// Totals per check kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// kind -> (ok, mismatch)
    pub counts: BTreeMap<&'static str, (u64, u64)>,
    /// reason -> count
    pub skipped: BTreeMap<&'static str, u64>,
}

impl Summary {
    pub fn mismatches(&self) -> u64 {
        self.counts.values().map(|c| c.1).sum()
    }
    pub fn ok(&self) -> u64 {
        self.counts.values().map(|c| c.0).sum()
    }
    pub fn count(&self, kind: &str) -> (u64, u64) {
        self.counts.get(kind).copied().unwrap_or((0, 0))
    }
}

pub const CHECK_KINDS: [&str; 8] = [
    "mp_capable_keys",
    "token",
    "idsn",
    "join_synack_hmac",
    "join_ack_hmac",
    "add_addr_hmac",
    "dss_checksum",
    "fastclose_key",
];

const CLIENT: usize = 0;
const SERVER: usize = 1;

#[derive(Debug, Default)]
struct Conn {
    /// Keys by role: the MP_CAPABLE initiator (client) and listener (server).
    keys: [Option<u64>; 2],
    /// Highest DSN seen per sending role, to widen 32-bit DSNs.
    last_dsn: [Option<u64>; 2],
    /// Lowest mapping per sending role, as (offset from IDSN + 1, DSN,
    /// frame): checked against the IDSN once the capture ends, so that
    /// mappings reordered across subflows do not matter.
    first_mapping: [Option<(u64, u64, u64)>; 2],
    /// The first data went in MP_CAPABLE, whose DSN is implied.
    implied_first: [bool; 2],
}

/// A DSS mapping whose data is still being collected for its checksum.
#[derive(Debug)]
struct PendingMap {
    frame: u64,
    dsn: u64,
    ssn: u32,
    data_len: u16,
    wire: u16,
    acc: DssChecksum,
    next_seq: u32,
    remaining: u32,
}

#[derive(Debug, Default)]
struct Subflow {
    /// The endpoint that sent the SYN (host A of RFC 8684).
    a: Option<SocketAddr>,
    /// Initial sequence numbers: A's, B's.
    isn: [Option<u32>; 2],
    conn: Option<usize>,
    /// Role (CLIENT or SERVER) of endpoint A within the connection.
    a_role: Option<usize>,
    nonce: [Option<u32>; 2],
    pending: [Option<PendingMap>; 2],
}

/// Follows connections; feed it every TCP segment in capture order.
#[derive(Debug, Default)]
pub struct Verifier {
    conns: Vec<Conn>,
    subflows: HashMap<(SocketAddr, SocketAddr), Subflow>,
    tokens: HashMap<u32, usize>,
    pub summary: Summary,
}

fn key_of(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    if src <= dst {
        (src, dst)
    } else {
        (dst, src)
    }
}

/// The 64-bit value whose low 32 bits are `low`, nearest to `reference`.
fn widen(reference: u64, low: u32) -> u64 {
    let base = (reference & !0xffff_ffff) | low as u64;
    [base.wrapping_sub(1 << 32), base, base.wrapping_add(1 << 32)]
        .into_iter()
        .min_by_key(|c| c.wrapping_sub(reference).min(reference.wrapping_sub(*c)))
        .unwrap_or(base)
}

impl Verifier {
    pub fn new() -> Self {
        Self::default()
    }

    fn record(
        &mut self,
        out: &mut Vec<Check>,
        frame: u64,
        kind: &'static str,
        ok: bool,
        detail: String,
    ) {
        let c = self.summary.counts.entry(kind).or_default();
        if ok {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
        out.push(Check {
            frame,
            kind,
            ok,
            detail,
        });
    }

    fn skip(&mut self, reason: &'static str) {
        *self.summary.skipped.entry(reason).or_default() += 1;
    }

    fn compare(
        &mut self,
        out: &mut Vec<Check>,
        frame: u64,
        kind: &'static str,
        expected: u64,
        got: u64,
        width: usize,
    ) {
        let detail = format!("expected 0x{expected:0width$x}, got 0x{got:0width$x}");
        self.record(out, frame, kind, expected == got, detail);
    }

    fn register_tokens(&mut self, conn: usize) {
        for k in self.conns[conn].keys.into_iter().flatten() {
            self.tokens.insert(crypto::token(k), conn);
        }
    }

    /// Processes one segment; returns the checks it produced.
    pub fn segment(
        &mut self,
        frame: u64,
        src: SocketAddr,
        dst: SocketAddr,
        tcp: &TcpRepr<'_>,
    ) -> Vec<Check> {
        let mut out = Vec::new();
        let key = key_of(src, dst);
        let syn = tcp.flags.contains(TcpFlags::SYN);
        let ack = tcp.flags.contains(TcpFlags::ACK);
        {
            let sf = self.subflows.entry(key).or_default();
            if syn && !ack {
                if sf.a != Some(src) || sf.isn[0] != Some(tcp.seq) {
                    // A new SYN on a reused 4-tuple starts a new subflow.
                    *sf = Subflow {
                        a: Some(src),
                        ..Default::default()
                    };
                    sf.isn[0] = Some(tcp.seq);
                }
            } else if syn && ack {
                if sf.a.is_none() {
                    sf.a = Some(dst);
                }
                sf.isn[1] = Some(tcp.seq);
            } else if sf.a.is_none() {
                sf.a = Some(src);
            }
        }
        let dir = if self.subflows.get(&key).and_then(|s| s.a) == Some(src) {
            0
        } else {
            1
        };

        for o in tcp.options.mptcp.iter() {
            match o {
                MptcpOption::MpCapable(c) => self.mp_capable(&mut out, frame, key, dir, tcp, c),
                MptcpOption::MpJoin(j) => self.mp_join(&mut out, frame, key, dir, j),
                MptcpOption::AddAddr(a) => {
                    let Some(hmac) = a.hmac else { continue };
                    match self.roles_keys(key, dir) {
                        Some((ks, kr)) => {
                            let exp = crypto::add_addr_hmac(ks, kr, a.addr_id, a.addr, a.port);
                            self.compare(&mut out, frame, "add_addr_hmac", exp, hmac, 16);
                        }
                        None => self.skip("add_addr without known keys"),
                    }
                }
                MptcpOption::MpFastclose { receiver_key } => match self.roles_keys(key, dir) {
                    Some((_, kr)) => {
                        self.compare(&mut out, frame, "fastclose_key", kr, *receiver_key, 16)
                    }
                    None => self.skip("fastclose without known keys"),
                },
                MptcpOption::Dss(d) => {
                    if let Some(m) = d.mapping {
                        self.mapping(&mut out, frame, key, dir, tcp, d.data_fin, m);
                    }
                }
                _ => {}
            }
        }
        self.feed_payload(&mut out, key, dir, tcp);
        out
    }

    /// (sender's key, receiver's key) for a segment in direction `dir`.
    fn roles_keys(&self, key: (SocketAddr, SocketAddr), dir: usize) -> Option<(u64, u64)> {
        let sf = self.subflows.get(&key)?;
        let conn = &self.conns[sf.conn?];
        let sender = if dir == 0 { sf.a_role? } else { 1 - sf.a_role? };
        Some((conn.keys[sender]?, conn.keys[1 - sender]?))
    }

    fn mp_capable(
        &mut self,
        out: &mut Vec<Check>,
        frame: u64,
        key: (SocketAddr, SocketAddr),
        dir: usize,
        tcp: &TcpRepr<'_>,
        c: &mptcp_engine::wire::mptcp::MpCapable,
    ) {
        let conn = match self.subflows.get(&key).and_then(|s| s.conn) {
            Some(i) => i,
            None => {
                self.conns.push(Conn::default());
                let i = self.conns.len() - 1;
                if let Some(sf) = self.subflows.get_mut(&key) {
                    sf.conn = Some(i);
                    sf.a_role = Some(CLIENT);
                }
                i
            }
        };
        let sender = if dir == 0 { CLIENT } else { SERVER };
        // Each key the option carries is either learnt or compared.
        let carried = [(sender, c.sender_key), (1 - sender, c.receiver_key)];
        for (role, k) in carried {
            let Some(k) = k else { continue };
            match self.conns[conn].keys[role] {
                Some(known) => self.compare(out, frame, "mp_capable_keys", known, k, 16),
                None => self.conns[conn].keys[role] = Some(k),
            }
        }
        self.register_tokens(conn);
        if c.data_len.is_some() {
            self.conns[conn].implied_first[sender] = true;
        }
        if let (Some(len), Some(wire)) = (c.data_len, c.checksum) {
            match self.conns[conn].keys[sender] {
                Some(k) => {
                    // The implied mapping (IDSN+1, SSN 1) may span several
                    // segments, each repeating the option, as Linux sends it.
                    let m = mptcp_engine::wire::mptcp::DssMapping {
                        dsn: crypto::idsn(k).wrapping_add(1),
                        dsn_wide: true,
                        ssn: 1,
                        data_len: len,
                        checksum: Some(wire),
                    };
                    self.mapping(out, frame, key, dir, tcp, false, m);
                }
                None => self.skip("mp_capable data without sender key"),
            }
        }
    }

    fn mp_join(
        &mut self,
        out: &mut Vec<Check>,
        frame: u64,
        key: (SocketAddr, SocketAddr),
        dir: usize,
        j: &MpJoin,
    ) {
        match *j {
            MpJoin::Syn { token, nonce, .. } => {
                let found = self.tokens.get(&token).copied();
                let detail = format!(
                    "token 0x{token:08x} {}",
                    if found.is_some() {
                        "known"
                    } else {
                        "matches no key seen"
                    }
                );
                self.record(out, frame, "token", found.is_some(), detail);
                if let (Some(conn), Some(sf)) = (found, self.subflows.get_mut(&key)) {
                    sf.conn = Some(conn);
                    // The SYN goes to the holder of the token's key: A is the other role.
                    let b_role = if self.conns[conn].keys[SERVER].map(crypto::token) == Some(token)
                    {
                        SERVER
                    } else {
                        CLIENT
                    };
                    sf.a_role = Some(1 - b_role);
                    sf.nonce[0] = Some(nonce);
                }
            }
            MpJoin::SynAck { hmac, nonce, .. } => {
                if let Some(sf) = self.subflows.get_mut(&key) {
                    sf.nonce[1] = Some(nonce);
                }
                match self.join_material(key) {
                    Some((ka, kb, ra, rb)) if dir == 1 => {
                        let exp = crypto::join_synack_hmac(kb, ka, rb, ra);
                        self.compare(out, frame, "join_synack_hmac", exp, hmac, 16);
                    }
                    _ => self.skip("mp_join syn/ack without keys or nonces"),
                }
            }
            MpJoin::Ack { hmac } => match self.join_material(key) {
                Some((ka, kb, ra, rb)) if dir == 0 => {
                    let exp = crypto::join_ack_hmac(ka, kb, ra, rb);
                    let detail = format!("expected {}, got {}", hex(&exp), hex(&hmac));
                    self.record(out, frame, "join_ack_hmac", exp == hmac, detail);
                }
                _ => self.skip("mp_join ack without keys or nonces"),
            },
        }
    }

    /// (KeyA, KeyB, R_A, R_B) of a join subflow.
    fn join_material(&self, key: (SocketAddr, SocketAddr)) -> Option<(u64, u64, u32, u32)> {
        let sf = self.subflows.get(&key)?;
        let conn = &self.conns[sf.conn?];
        let a = sf.a_role?;
        Some((conn.keys[a]?, conn.keys[1 - a]?, sf.nonce[0]?, sf.nonce[1]?))
    }

    #[allow(clippy::too_many_arguments)]
    fn mapping(
        &mut self,
        out: &mut Vec<Check>,
        frame: u64,
        key: (SocketAddr, SocketAddr),
        dir: usize,
        tcp: &TcpRepr<'_>,
        data_fin: bool,
        m: mptcp_engine::wire::mptcp::DssMapping,
    ) {
        let Some(sf) = self.subflows.get(&key) else {
            return;
        };
        let (conn, a_role, isn) = (sf.conn, sf.a_role, sf.isn[dir]);
        let sender = a_role.map(|a| if dir == 0 { a } else { 1 - a });
        let sender_key = match (conn, sender) {
            (Some(c), Some(s)) => self.conns[c].keys[s],
            _ => None,
        };
        // Widen a 32-bit DSN against what this sender sent before (or its IDSN).
        let dsn = if m.dsn_wide {
            Some(m.dsn)
        } else {
            let reference = match (conn, sender) {
                (Some(c), Some(s)) => self.conns[c].last_dsn[s].or(sender_key.map(crypto::idsn)),
                _ => None,
            };
            reference.map(|r| widen(r, m.dsn as u32))
        };
        if let (Some(c), Some(s), Some(dsn)) = (conn, sender, dsn) {
            let last = &mut self.conns[c].last_dsn[s];
            *last = Some(last.map_or(dsn, |l| l.max(dsn)));
            if let Some(k) = sender_key {
                let offset = dsn.wrapping_sub(crypto::idsn(k).wrapping_add(1));
                let first = &mut self.conns[c].first_mapping[s];
                if first.is_none_or(|(o, _, _)| offset < o) {
                    *first = Some((offset, dsn, frame));
                }
            }
        }
        let Some(wire) = m.checksum else { return };
        if m.data_len == 0 {
            // Infinite mapping: no checksum to compute.
            self.skip("infinite mapping");
            return;
        }
        let Some(dsn) = dsn else {
            self.skip("32-bit DSN without a reference");
            return;
        };
        if let Some(p) = self
            .subflows
            .get(&key)
            .and_then(|s| s.pending[dir].as_ref())
        {
            if p.dsn == dsn && p.ssn == m.ssn && p.data_len == m.data_len {
                return; // the same mapping repeated on a later segment
            }
            self.skip("mapping data not fully captured");
        }
        let start = match isn {
            Some(i) => i.wrapping_add(m.ssn),
            None => tcp.seq,
        };
        let remaining =
            m.data_len as u32 - u32::from(data_fin && m.data_len > 0).min(m.data_len as u32);
        let pending = PendingMap {
            frame,
            dsn,
            ssn: m.ssn,
            data_len: m.data_len,
            wire,
            acc: DssChecksum::new(dsn, m.ssn, m.data_len),
            next_seq: start,
            remaining,
        };
        if let Some(sf) = self.subflows.get_mut(&key) {
            sf.pending[dir] = Some(pending);
        }
        self.complete_if_done(out, key, dir);
    }

    /// Adds this segment's payload to a pending mapping of its direction.
    fn feed_payload(
        &mut self,
        out: &mut Vec<Check>,
        key: (SocketAddr, SocketAddr),
        dir: usize,
        tcp: &TcpRepr<'_>,
    ) {
        let Some(p) = self
            .subflows
            .get_mut(&key)
            .and_then(|s| s.pending[dir].as_mut())
        else {
            return;
        };
        if tcp.payload.is_empty() || p.remaining == 0 {
            return;
        }
        // Only in-order bytes: skip what was already added (retransmissions).
        let offset = p.next_seq.wrapping_sub(tcp.seq) as usize;
        if offset >= tcp.payload.len() {
            return;
        }
        let take = (tcp.payload.len() - offset).min(p.remaining as usize);
        p.acc.add(&tcp.payload[offset..offset + take]);
        p.next_seq = p.next_seq.wrapping_add(take as u32);
        p.remaining -= take as u32;
        self.complete_if_done(out, key, dir);
    }

    fn complete_if_done(
        &mut self,
        out: &mut Vec<Check>,
        key: (SocketAddr, SocketAddr),
        dir: usize,
    ) {
        let Some(sf) = self.subflows.get_mut(&key) else {
            return;
        };
        if sf.pending[dir].as_ref().is_some_and(|p| p.remaining == 0) {
            if let Some(p) = sf.pending[dir].take() {
                let exp = p.acc.finish();
                self.compare(out, p.frame, "dss_checksum", exp as u64, p.wire as u64, 4);
            }
        }
    }

    /// Call after the last segment: runs the checks that need the whole
    /// capture (`idsn`) and counts mappings still waiting for data.
    pub fn finish(&mut self) -> Vec<Check> {
        let mut out = Vec::new();
        let open: u64 = self
            .subflows
            .values()
            .map(|s| s.pending.iter().flatten().count() as u64)
            .sum();
        if open > 0 {
            *self
                .summary
                .skipped
                .entry("mapping data not fully captured")
                .or_default() += open;
        }
        for i in 0..self.conns.len() {
            for role in [CLIENT, SERVER] {
                let (Some(k), Some((_, dsn, frame))) =
                    (self.conns[i].keys[role], self.conns[i].first_mapping[role])
                else {
                    continue;
                };
                if self.conns[i].implied_first[role] {
                    // MP_CAPABLE data has no DSN on the wire: it is IDSN + 1
                    // by definition, so there is nothing to compare (and
                    // nothing left unchecked).
                    continue;
                }
                let exp = crypto::idsn(k).wrapping_add(1);
                self.compare(&mut out, frame, "idsn", exp, dsn, 16);
            }
        }
        out.sort_by_key(|c| c.frame);
        out
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::from("0x");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::widen;

    #[test]
    fn widen_picks_nearest() {
        assert_eq!(widen(0x1_0000_0010, 0x20), 0x1_0000_0020);
        assert_eq!(widen(0x1_ffff_fff0, 0x10), 0x2_0000_0010);
        assert_eq!(widen(0x2_0000_0010, 0xffff_fff0), 0x1_ffff_fff0);
        assert_eq!(widen(5, 0xffff_fffe), 0xffff_ffff_ffff_fffe); // DSNs wrap modulo 2^64
    }
}
