//! One description of every suboption's fields, rendered as text or JSON,
//! so both outputs always carry the same names and values.
use mptcp_engine::wire::mptcp::{MpJoin, MptcpOption};
use mptcp_engine::wire::TcpFlags;
use serde_json::Value;
use std::fmt::Write as _;

/// A field value as the decode tool shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    Null,
    Bool(bool),
    Num(u64),
    /// Keys, tokens, nonces, HMACs: lowercase hex with `0x`.
    Hex(String),
    Str(String),
    List(Vec<u64>),
}

impl Field {
    pub fn to_json(&self) -> Value {
        match self {
            Field::Null => Value::Null,
            Field::Bool(b) => Value::Bool(*b),
            Field::Num(n) => Value::from(*n),
            Field::Hex(s) | Field::Str(s) => Value::String(s.clone()),
            Field::List(l) => Value::Array(l.iter().map(|&n| Value::from(n)).collect()),
        }
    }

    pub fn to_text(&self) -> String {
        match self {
            Field::Null => "null".into(),
            Field::Bool(b) => b.to_string(),
            Field::Num(n) => n.to_string(),
            Field::Hex(s) | Field::Str(s) => s.clone(),
            Field::List(l) => {
                let items: Vec<String> = l.iter().map(|n| n.to_string()).collect();
                format!("[{}]", items.join(","))
            }
        }
    }
}

fn hex64(v: u64) -> Field {
    Field::Hex(format!("0x{v:016x}"))
}
fn hex32(v: u32) -> Field {
    Field::Hex(format!("0x{v:08x}"))
}
fn hex16(v: u16) -> Field {
    Field::Hex(format!("0x{v:04x}"))
}
fn hex_bytes(b: &[u8]) -> Field {
    let mut s = String::with_capacity(2 + 2 * b.len());
    s.push_str("0x");
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    Field::Hex(s)
}
fn opt<T>(v: Option<T>, f: impl Fn(T) -> Field) -> Field {
    v.map(f).unwrap_or(Field::Null)
}

/// The subtype name and fields of one suboption, in the documented order.
pub fn suboption_fields(o: &MptcpOption) -> (&'static str, Vec<(&'static str, Field)>) {
    let fields = match o {
        MptcpOption::MpCapable(c) => vec![
            ("version", Field::Num(c.version as u64)),
            ("checksum_required", Field::Bool(c.checksum_required())),
            ("sender_key", opt(c.sender_key, hex64)),
            ("receiver_key", opt(c.receiver_key, hex64)),
            ("data_len", opt(c.data_len, |n| Field::Num(n as u64))),
            ("checksum", opt(c.checksum, hex16)),
        ],
        MptcpOption::MpJoin(j) => {
            let (backup, id, token, nonce, hmac) = match j {
                MpJoin::Syn {
                    backup,
                    addr_id,
                    token,
                    nonce,
                } => (
                    Field::Bool(*backup),
                    Field::Num(*addr_id as u64),
                    hex32(*token),
                    hex32(*nonce),
                    Field::Null,
                ),
                MpJoin::SynAck {
                    backup,
                    addr_id,
                    hmac,
                    nonce,
                } => (
                    Field::Bool(*backup),
                    Field::Num(*addr_id as u64),
                    Field::Null,
                    hex32(*nonce),
                    hex64(*hmac),
                ),
                MpJoin::Ack { hmac } => (
                    Field::Null,
                    Field::Null,
                    Field::Null,
                    Field::Null,
                    hex_bytes(hmac),
                ),
            };
            vec![
                ("backup", backup),
                ("address_id", id),
                ("token", token),
                ("nonce", nonce),
                ("hmac", hmac),
            ]
        }
        MptcpOption::Dss(d) => {
            let m = d.mapping.as_ref();
            vec![
                ("data_fin", Field::Bool(d.data_fin)),
                ("data_ack", opt(d.data_ack, Field::Num)),
                ("dsn", opt(m.map(|m| m.dsn), Field::Num)),
                ("ssn", opt(m.map(|m| m.ssn), |n| Field::Num(n as u64))),
                (
                    "data_len",
                    opt(m.map(|m| m.data_len), |n| Field::Num(n as u64)),
                ),
                ("checksum", opt(m.and_then(|m| m.checksum), hex16)),
            ]
        }
        MptcpOption::AddAddr(a) => vec![
            ("echo", Field::Bool(a.echo)),
            ("address_id", Field::Num(a.addr_id as u64)),
            ("addr", Field::Str(a.addr.to_string())),
            ("port", opt(a.port, |p| Field::Num(p as u64))),
            ("hmac", opt(a.hmac, hex64)),
        ],
        MptcpOption::RemoveAddr(ids) => {
            vec![(
                "address_ids",
                Field::List(ids.as_slice().iter().map(|&i| i as u64).collect()),
            )]
        }
        MptcpOption::MpPrio { backup, .. } => vec![("backup", Field::Bool(*backup))],
        MptcpOption::MpFail { dsn } => vec![("dsn", Field::Num(*dsn))],
        MptcpOption::MpFastclose { receiver_key } => vec![("receiver_key", hex64(*receiver_key))],
        MptcpOption::MpTcpRst { reason, .. } => vec![("reason", Field::Num(*reason as u64))],
    };
    (o.name(), fields)
}

/// Names of the set flags, in header bit order.
pub fn flag_names(flags: TcpFlags) -> Vec<&'static str> {
    [
        (TcpFlags::FIN, "FIN"),
        (TcpFlags::SYN, "SYN"),
        (TcpFlags::RST, "RST"),
        (TcpFlags::PSH, "PSH"),
        (TcpFlags::ACK, "ACK"),
        (TcpFlags::URG, "URG"),
        (TcpFlags::ECE, "ECE"),
        (TcpFlags::CWR, "CWR"),
    ]
    .into_iter()
    .filter(|(f, _)| flags.contains(*f))
    .map(|(_, n)| n)
    .collect()
}
