//! The control protocol: one JSON object per line each way.
//!
//! A request is `{"cmd": NAME, ...}`; the answer is `{"ok": true, "result":
//! ...}` or `{"ok": false, "error": "..."}`. `monitor` answers with one
//! event object per line until the client hangs up. Tokens are written as
//! `ip mptcp monitor` writes them (8 hex digits); every counter is a number.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use mptcp_engine::mptcp::{MonitorEvent, SubflowId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An MPTCP connection token, shown and parsed as 8 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token(pub u32);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl FromStr for Token {
    type Err = String;
    fn from_str(s: &str) -> Result<Token, String> {
        let hex = s.strip_prefix("0x").unwrap_or(s);
        u32::from_str_radix(hex, 16).map(Token).map_err(|_| {
            format!("token {s:?}: expected hex digits as `ctl connections` shows them")
        })
    }
}

impl Serialize for Token {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Token, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A command to the running instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Every connection ([`ConnectionRow`]).
    Connections,
    /// The subflows of one connection ([`SubflowRow`]), closed ones included.
    Subflows { token: Token },
    /// One subflow ([`SubflowRow`]).
    SubflowStats { token: Token, id: SubflowId },
    /// Opens a subflow by tuple (port 0 picks one); answers its id.
    Open {
        token: Token,
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// Closes a subflow (FIN); its unacknowledged data moves to the others.
    Close { token: Token, id: SubflowId },
    /// Backup priority (MP_PRIO to the peer).
    Prio {
        token: Token,
        id: SubflowId,
        backup: bool,
    },
    /// DSCP of the packets a subflow sends (six bits).
    Dscp {
        token: Token,
        id: SubflowId,
        dscp: u8,
    },
    /// Announces one of our addresses to the peer (ADD_ADDR).
    Announce { token: Token, addr: IpAddr },
    /// Withdraws one of our addresses (REMOVE_ADDR); its subflows close.
    Remove { token: Token, addr: IpAddr },
    /// The instance's counters ([`crate::snapshot::InstanceStats`]).
    Stats,
    /// The event stream ([`EventRow`] lines).
    Monitor,
}

/// The answer line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn from_result(r: Result<serde_json::Value, String>) -> Reply {
        match r {
            Ok(v) => Reply {
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Reply {
                ok: false,
                result: None,
                error: Some(e),
            },
        }
    }
}

/// One connection, as `ctl connections` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionRow {
    pub token: Token,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: String,
    pub fallback: bool,
    /// Why it fell back to TCP.
    pub fallback_reason: Option<String>,
    /// Data-level bytes: sent (first transmissions), acknowledged by the
    /// peer, received in order. They survive subflows closing.
    pub bytes_sent: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub bytes_retransmitted: u64,
    pub bytes_reinjected: u64,
    /// Subflows open now, and ever.
    pub subflows: u64,
    pub subflows_total: u64,
    /// The worker that owns it (and every one of its subflows).
    #[serde(default)]
    pub worker: usize,
}

/// One subflow, with the TCP_INFO-like figures of MPTCP_FULL_INFO.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubflowRow {
    /// Stable within the connection, never reused.
    pub id: SubflowId,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub interface: String,
    pub local_id: u8,
    pub remote_id: u8,
    /// We asked the peer to treat it as backup.
    pub backup: bool,
    /// The peer asked us to.
    pub peer_backup: bool,
    pub state: String,
    pub dscp: u8,
    pub cwnd: u64,
    pub ssthresh: u64,
    pub srtt_us: u64,
    pub rttvar_us: u64,
    pub rto_us: u64,
    pub bytes_sent: u64,
    pub bytes_acked: u64,
    pub bytes_retransmitted: u64,
    pub bytes_received: u64,
    pub bytes_reinjected: u64,
    pub retransmits: u64,
}

/// One monitor event, with the names and fields of `ip mptcp monitor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    /// CREATED, ESTABLISHED, CLOSED, ANNOUNCED, REMOVED, SF_ESTABLISHED,
    /// SF_CLOSED or SF_PRIO.
    pub event: String,
    pub token: Token,
    /// The subflow id (SF_* events).
    pub id: Option<SubflowId>,
    pub locid: Option<u8>,
    pub remid: Option<u8>,
    pub saddr: Option<IpAddr>,
    pub daddr: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub backup: bool,
    /// SF_CLOSED: why (normal, reset, timed-out, refused, bad-hmac,
    /// address-removed, local).
    pub error: Option<String>,
    /// SF_CLOSED: the MP_TCPRST reason code the peer sent.
    pub reset_reason: Option<u8>,
}

impl From<&MonitorEvent> for EventRow {
    fn from(e: &MonitorEvent) -> EventRow {
        EventRow {
            event: e.kind.name().into(),
            token: Token(e.token),
            id: e.subflow,
            locid: e.local_id,
            remid: e.remote_id,
            saddr: e.local.map(|a| a.ip()),
            daddr: e.remote.map(|a| a.ip()),
            sport: e.local.map(|a| a.port()),
            dport: e.remote.map(|a| a.port()),
            backup: e.backup,
            error: e.close_reason.map(|r| r.name().into()),
            reset_reason: e.reset_reason,
        }
    }
}

impl fmt::Display for EventRow {
    /// As `ip mptcp monitor` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:>16}] token={}", self.event, self.token)?;
        if let Some(id) = self.id {
            write!(f, " id={id}")?;
        }
        if let Some(r) = self.remid {
            write!(f, " remid={r}")?;
        }
        if let Some(l) = self.locid {
            write!(f, " locid={l}")?;
        }
        let v = |a: &IpAddr| if a.is_ipv4() { 4 } else { 6 };
        if let Some(a) = &self.saddr {
            write!(f, " saddr{}={a}", v(a))?;
        }
        if let Some(a) = &self.daddr {
            write!(f, " daddr{}={a}", v(a))?;
        }
        if let Some(p) = self.sport {
            write!(f, " sport={p}")?;
        }
        if let Some(p) = self.dport {
            write!(f, " dport={p}")?;
        }
        if self.event.starts_with("SF_") {
            write!(f, " backup={}", u8::from(self.backup))?;
        }
        if let Some(e) = &self.error {
            write!(f, " error={e}")?;
        }
        if let Some(r) = self.reset_reason {
            write!(f, " reset_reason={r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_json_lines_with_hex_tokens() {
        let r = Request::Prio {
            token: Token(0xa1b2c3d4),
            id: 1,
            backup: true,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"cmd":"prio","token":"a1b2c3d4","id":1,"backup":true}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        assert_eq!("0x00000010".parse::<Token>(), Ok(Token(16)));
        assert!("zz".parse::<Token>().is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"nope"}"#).is_err());
    }
}
