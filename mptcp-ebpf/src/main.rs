//! XDP classifier for the userspace MPTCP datapath.
//!
//! Segments whose destination address and TCP port belong to the engine
//! (see [`mptcp_common::Config`]) go to the AF_XDP socket of their receive
//! queue; everything else, and every owned segment whose queue has no socket,
//! stays with the kernel (XDP_PASS, unchanged).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_PASS, XDP_REDIRECT},
    helpers::generated::{bpf_xdp_adjust_meta, bpf_xdp_load_bytes},
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use mptcp_common::{
    Config, Counters, Meta, TupleKey, MAX_PORTS, MAX_QUEUES, MAX_TOKENS, MAX_TUPLES, MAX_V4,
    MAX_V6, META_MAGIC,
};

#[map(name = "CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

/// BPF_F_NO_PREALLOC: entries are allocated as userspace adds them.
const NO_PREALLOC: u32 = 1;

/// Subflow -> owning worker, written by the workers (one update per subflow).
#[map(name = "TUPLES")]
static TUPLES: HashMap<TupleKey, u32> = HashMap::with_max_entries(MAX_TUPLES, NO_PREALLOC);

/// Local token -> owning worker, for MP_JOIN SYNs.
#[map(name = "TOKENS")]
static TOKENS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TOKENS, NO_PREALLOC);

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const IPV6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;
const TCP_MAX_OPTIONS: usize = 40;
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_MPTCP: u8 = 30;
const MPTCP_SUB_CAPABLE: u8 = 0;
const MPTCP_SUB_JOIN: u8 = 1;
const MPTCP_SUB_DSS: u8 = 2;
const TCP_FLAG_SYN: u8 = 0x02;

#[derive(Clone, Copy)]
enum Kind {
    MpCapableSyn,
    MpJoinSyn,
    Dss,
    OtherMptcp,
    PlainTcp,
}

enum Class {
    /// Not for the engine: ARP, ICMP, UDP, other TCP, fragments, extension headers.
    Kernel,
    /// Truncated or inconsistent Ethernet or IP headers, or TCP header and
    /// options of a segment to an owned address; the kernel decides what to do.
    Malformed,
    Owned(Kind, Flow),
}

/// The segment's subflow, for the owner lookup (several workers only).
struct Flow {
    key: TupleKey,
    /// The MP_JOIN SYN's token (kind MpJoinSyn).
    token: u32,
}

#[xdp]
pub fn mptcp_classify(ctx: XdpContext) -> u32 {
    let Some(counters) = COUNTERS.get_ptr_mut(0) else {
        return XDP_PASS;
    };
    // SAFETY: per-CPU value, only this program on this CPU touches it while it runs.
    let counters = unsafe { &mut *counters };
    counters.seen += 1;
    match classify(&ctx) {
        Class::Kernel => {
            counters.passed += 1;
            XDP_PASS
        }
        Class::Malformed => {
            counters.malformed += 1;
            counters.passed += 1;
            debug!(&ctx, "malformed frame, passed to the kernel");
            XDP_PASS
        }
        Class::Owned(kind, flow) => {
            counters.owned += 1;
            match kind {
                Kind::MpCapableSyn => counters.mp_capable_syn += 1,
                Kind::MpJoinSyn => counters.mp_join_syn += 1,
                Kind::Dss => counters.dss += 1,
                Kind::OtherMptcp => counters.other_mptcp += 1,
                Kind::PlainTcp => counters.plain_tcp += 1,
            }
            if CONFIG.get(0).is_some_and(|c| c.workers > 1) {
                tag_owner(&ctx, kind, &flow, counters);
            }
            // The XDP_PASS flag makes a queue without a socket fall back to the kernel.
            match XSKS.redirect(ctx.rx_queue_index(), XDP_PASS as u64) {
                Ok(_) => {
                    counters.redirected += 1;
                    XDP_REDIRECT
                }
                Err(_) => {
                    counters.owned_no_socket += 1;
                    counters.passed += 1;
                    XDP_PASS
                }
            }
        }
    }
}

/// Several workers: the owner of a segment is the worker of its subflow,
/// or for a new subflow's MP_JOIN SYN the worker of its token; when the maps name one,
/// it goes in the metadata in front of the frame. Untagged frames belong to
/// whichever worker receives them (that is how a MP_CAPABLE SYN picks its owner).
#[inline(always)]
fn tag_owner(ctx: &XdpContext, kind: Kind, flow: &Flow, counters: &mut Counters) {
    // The subflow first: a SYN/ACK with MP_JOIN (our own join answered)
    // is a known subflow; an MP_JOIN SYN of a new subflow is not, and
    // carries the token of its connection instead.
    // SAFETY: map values are plain u32s, read once.
    let owner = unsafe {
        match TUPLES.get(&flow.key) {
            Some(o) => Some(*o),
            None if matches!(kind, Kind::MpJoinSyn) => TOKENS.get(&flow.token).copied(),
            None => None,
        }
    };
    let Some(owner) = owner else {
        return;
    };
    let meta_len = core::mem::size_of::<Meta>() as i32;
    // SAFETY: helper call on our context; the pointers are re-read after it.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -meta_len) } != 0 {
        counters.owner_meta_failed += 1;
        return;
    }
    let meta = ctx.metadata();
    if meta + core::mem::size_of::<Meta>() > ctx.data() {
        counters.owner_meta_failed += 1;
        return;
    }
    // SAFETY: bounds checked against data just above (the verifier checks it too).
    unsafe {
        core::ptr::write_unaligned(
            meta as *mut Meta,
            Meta {
                magic: META_MAGIC,
                owner,
            },
        )
    };
    counters.owner_tagged += 1;
}

/// Reads a `T` at `offset` from the start of the frame, if it is inside the frame.
#[inline(always)]
fn load<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: bounds checked against data_end just above (the verifier checks it too).
    Some(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
}

#[inline(always)]
fn load_be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    load::<[u8; 2]>(ctx, offset).map(u16::from_be_bytes)
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> Class {
    let Some(mut ethertype) = load_be16(ctx, 12) else {
        return Class::Malformed;
    };
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q {
        let Some(inner) = load_be16(ctx, ETH_HLEN + 2) else {
            return Class::Malformed;
        };
        ethertype = inner;
        l3 += VLAN_HLEN;
    }
    let Some(config) = CONFIG.get(0) else {
        return Class::Kernel;
    };
    let mut key = TupleKey::default();
    // l4: start of TCP; l4_end: end of the IP payload.
    let (l4, l4_end) = match ethertype {
        ETH_P_IP => {
            let Some(ip) = load::<[u8; 20]>(ctx, l3) else {
                return Class::Malformed;
            };
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            let total_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            if ip[0] >> 4 != 4 || ihl < 20 || total_len < ihl {
                return Class::Malformed;
            }
            // The packet, as its total length says, must be in the frame
            // (Ethernet padding after it is fine).
            if load::<u8>(ctx, l3 + total_len - 1).is_none() {
                return Class::Malformed;
            }
            // More-fragments flag or a fragment offset: the kernel reassembles.
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || ip[9] != IPPROTO_TCP {
                return Class::Kernel;
            }
            let dst = [ip[16], ip[17], ip[18], ip[19]];
            if !owns_v4(config, dst) {
                return Class::Kernel;
            }
            key.family = 4;
            key.remote[..4].copy_from_slice(&ip[12..16]);
            key.local[..4].copy_from_slice(&dst);
            (l3 + ihl, l3 + total_len)
        }
        ETH_P_IPV6 => {
            let Some(ip) = load::<[u8; 8]>(ctx, l3) else {
                return Class::Malformed;
            };
            let payload_len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            if ip[0] >> 4 != 6 {
                return Class::Malformed;
            }
            let Some(dst) = load::<[u8; 16]>(ctx, l3 + 24) else {
                return Class::Malformed;
            };
            if payload_len > 0 && load::<u8>(ctx, l3 + IPV6_HLEN + payload_len - 1).is_none() {
                return Class::Malformed;
            }
            // Extension headers (including fragments) stay with the kernel.
            if ip[6] != IPPROTO_TCP || !owns_v6(config, &dst) {
                return Class::Kernel;
            }
            let Some(src) = load::<[u8; 16]>(ctx, l3 + 8) else {
                return Class::Malformed;
            };
            key.family = 6;
            key.remote = src;
            key.local = dst;
            (l3 + IPV6_HLEN, l3 + IPV6_HLEN + payload_len)
        }
        _ => return Class::Kernel,
    };
    let Some(tcp) = load::<[u8; TCP_HLEN]>(ctx, l4) else {
        return Class::Malformed;
    };
    let data_offset = ((tcp[12] >> 4) as usize) * 4;
    if data_offset < TCP_HLEN || l4 + data_offset > l4_end {
        return Class::Malformed;
    }
    let dst_port = u16::from_be_bytes([tcp[2], tcp[3]]);
    if !owns_port(config, dst_port) {
        return Class::Kernel;
    }
    key.remote_port = u16::from_be_bytes([tcp[0], tcp[1]]);
    key.local_port = dst_port;
    let syn = tcp[13] & TCP_FLAG_SYN != 0;
    let Some((kinds, token)) = mptcp_kinds(ctx, l4 + TCP_HLEN, data_offset - TCP_HLEN) else {
        return Class::Malformed;
    };
    let flow = Flow { key, token };
    // One kind per segment: SYN kinds first, then DSS, then any other subtype.
    let kind = if syn && kinds & SEEN_CAPABLE != 0 {
        Kind::MpCapableSyn
    } else if syn && kinds & SEEN_JOIN != 0 {
        Kind::MpJoinSyn
    } else if kinds & SEEN_DSS != 0 {
        Kind::Dss
    } else if kinds != 0 {
        Kind::OtherMptcp
    } else {
        Kind::PlainTcp
    };
    Class::Owned(kind, flow)
}

#[inline(always)]
fn owns_v4(config: &Config, dst: [u8; 4]) -> bool {
    let dst = u32::from_ne_bytes(dst);
    let mut i = 0;
    while i < MAX_V4 {
        if (i as u32) < config.n_v4 && u32::from_ne_bytes(config.v4[i]) == dst {
            return true;
        }
        i += 1;
    }
    false
}

#[inline(always)]
fn owns_v6(config: &Config, dst: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < MAX_V6 {
        if (i as u32) < config.n_v6 && config.v6[i] == *dst {
            return true;
        }
        i += 1;
    }
    false
}

#[inline(always)]
fn owns_port(config: &Config, port: u16) -> bool {
    if config.client_port_lo <= port && port <= config.client_port_hi {
        return true;
    }
    let mut i = 0;
    while i < MAX_PORTS {
        if (i as u32) < config.n_listen_ports && config.listen_ports[i] == port {
            return true;
        }
        i += 1;
    }
    false
}

/// Bits of [`OptionWalk::kinds`].
const SEEN_OTHER: u32 = 1;
const SEEN_DSS: u32 = 2;
const SEEN_CAPABLE: u32 = 4;
const SEEN_JOIN: u32 = 8;

/// Loop state of the option walk, kept in map memory on purpose: the verifier
/// does not track values loaded from a map, so every iteration's state looks
/// alike and pruning keeps verification linear in the 40 iterations instead
/// of exponential in the option layouts.
#[repr(C)]
struct OptionWalk {
    pos: u32,
    kinds: u32,
    /// The token of the last MP_JOIN option long enough to carry one (a SYN's).
    token: u32,
}

#[map(name = "WALK")]
static WALK: PerCpuArray<OptionWalk> = PerCpuArray::with_max_entries(1, 0);

/// Walks the TCP options at `start..start + len` (len <= 40). Returns `None`
/// if they are malformed, else the [`OptionWalk::kinds`] bits it saw and
/// the MP_JOIN SYN token, if any.
///
/// The options are first copied to the stack with one helper call: a walk
/// over packet memory needs a bounds check per byte, and LLVM rewrites
/// one-byte checks (`p + 1 > end` into `p >= end`) into a form the verifier
/// cannot use.
#[inline(always)]
fn mptcp_kinds(ctx: &XdpContext, start: usize, len: usize) -> Option<(u32, u32)> {
    let walk = WALK.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, used only while this program runs on this CPU.
    // Volatile so the compiler keeps the round trip through map memory.
    unsafe {
        let pos_ptr = core::ptr::addr_of_mut!((*walk).pos);
        let kinds_ptr = core::ptr::addr_of_mut!((*walk).kinds);
        let token_ptr = core::ptr::addr_of_mut!((*walk).token);
        // Through memory too: LLVM would otherwise fold the bounds below into
        // earlier checks the verifier tracks on another register.
        core::ptr::write_volatile(pos_ptr, len as u32);
        let len = core::ptr::read_volatile(pos_ptr) as usize;
        if len > TCP_MAX_OPTIONS {
            return None;
        }
        if len == 0 {
            return Some((0, 0));
        }
        // 8 bytes of slack: reads at pos + 2 stay inside even where the
        // verifier only knows pos < 40.
        let mut opts = [0u8; TCP_MAX_OPTIONS + 8];
        // The buffer has room for `len` <= 40 bytes; the helper checks the packet bounds.
        if bpf_xdp_load_bytes(ctx.ctx, start as u32, opts.as_mut_ptr().cast(), len as u32) != 0 {
            return None;
        }
        core::ptr::write_volatile(pos_ptr, 0);
        core::ptr::write_volatile(kinds_ptr, 0);
        core::ptr::write_volatile(token_ptr, 0);
        // Each iteration consumes at least one byte, so 40 iterations cover every layout.
        for _ in 0..TCP_MAX_OPTIONS {
            let pos = core::ptr::read_volatile(pos_ptr) as usize;
            if pos >= len || pos >= TCP_MAX_OPTIONS {
                break;
            }
            let kind = *opts.get(pos)?;
            if kind == TCPOPT_EOL {
                break;
            }
            if kind == TCPOPT_NOP {
                core::ptr::write_volatile(pos_ptr, (pos + 1) as u32);
                continue;
            }
            if pos + 1 >= len {
                return None;
            }
            let opt_len = *opts.get(pos + 1)? as usize;
            if opt_len < 2 || pos + opt_len > len {
                return None;
            }
            if kind == TCPOPT_MPTCP {
                if opt_len < 3 {
                    return None;
                }
                let bit = match *opts.get(pos + 2)? >> 4 {
                    MPTCP_SUB_CAPABLE => SEEN_CAPABLE,
                    MPTCP_SUB_JOIN => SEEN_JOIN,
                    MPTCP_SUB_DSS => SEEN_DSS,
                    _ => SEEN_OTHER,
                };
                core::ptr::write_volatile(kinds_ptr, core::ptr::read_volatile(kinds_ptr) | bit);
                // MP_JOIN SYN: kind, length 12, subtype, address id, token, nonce.
                if bit == SEEN_JOIN && opt_len == 12 {
                    let t = [
                        *opts.get(pos + 4)?,
                        *opts.get(pos + 5)?,
                        *opts.get(pos + 6)?,
                        *opts.get(pos + 7)?,
                    ];
                    core::ptr::write_volatile(token_ptr, u32::from_be_bytes(t));
                }
            }
            core::ptr::write_volatile(pos_ptr, (pos + opt_len) as u32);
        }
        Some((
            core::ptr::read_volatile(kinds_ptr),
            core::ptr::read_volatile(token_ptr),
        ))
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
