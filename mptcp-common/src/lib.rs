//! Types shared by the XDP programs (`mptcp-ebpf`) and the userspace engine.
//! `no_std` and tiny on purpose: everything here is part of the map ABI.
#![no_std]

/// Name of the XDP program in the eBPF object.
pub const PROGRAM_CLASSIFY: &str = "mptcp_classify";
/// Array map with one [`Config`] at index 0.
pub const MAP_CONFIG: &str = "CONFIG";
/// Per-CPU array map with one [`Counters`] at index 0.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// XSKMAP indexed by receive queue.
pub const MAP_XSKS: &str = "XSKS";
/// Hash map [`TupleKey`] -> owning worker (u32), written by userspace per subflow.
pub const MAP_TUPLES: &str = "TUPLES";
/// Hash map local token (u32) -> owning worker (u32), for MP_JOIN SYNs.
pub const MAP_TOKENS: &str = "TOKENS";
/// Capacity of [`MAP_TUPLES`] (not preallocated: an empty map costs nothing).
pub const MAX_TUPLES: u32 = 1 << 20;
/// Capacity of [`MAP_TOKENS`].
pub const MAX_TOKENS: u32 = 1 << 18;
/// First word of the XDP metadata the classifier writes in front of a frame
/// whose owner it found ([`Meta`]); "MPTW".
pub const META_MAGIC: u32 = 0x4d50_5457;

/// Capacity of the owned IPv4 address table.
pub const MAX_V4: usize = 8;
/// Capacity of the owned IPv6 address table.
pub const MAX_V6: usize = 8;
/// Capacity of the listening port table.
pub const MAX_PORTS: usize = 16;
/// Entries of the XSKMAP (receive queues that can have an AF_XDP socket).
pub const MAX_QUEUES: u32 = 64;

/// Which local addresses and TCP ports belong to the engine.
///
/// Addresses are stored as wire bytes (network order) so both sides compare
/// them without byte swapping. Ports are host order. Fixed arrays with counts
/// keep the eBPF side a bounded loop over one map value. No padding: the
/// layout is the same on both sides.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Config {
    pub v4: [[u8; 4]; MAX_V4],
    pub v6: [[u8; 16]; MAX_V6],
    pub listen_ports: [u16; MAX_PORTS],
    pub n_v4: u32,
    pub n_v6: u32,
    pub n_listen_ports: u32,
    /// Client (ephemeral) port range, inclusive; `lo > hi` means none.
    pub client_port_lo: u16,
    pub client_port_hi: u16,
    /// Workers sharing the interface's queues; above 1 the classifier looks
    /// up each owned segment's owner and tags the frame with a [`Meta`].
    pub workers: u32,
}

impl Config {
    /// Owns nothing: every packet is passed to the kernel.
    pub const EMPTY: Config = Config {
        v4: [[0; 4]; MAX_V4],
        v6: [[0; 16]; MAX_V6],
        listen_ports: [0; MAX_PORTS],
        n_v4: 0,
        n_v6: 0,
        n_listen_ports: 0,
        client_port_lo: 1,
        client_port_hi: 0,
        workers: 0,
    };
}

/// Key of [`MAP_TUPLES`]: a subflow as its segments arrive. Addresses are
/// wire bytes (IPv4 in the first four, the rest zero), ports host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct TupleKey {
    pub remote: [u8; 16],
    pub local: [u8; 16],
    pub remote_port: u16,
    pub local_port: u16,
    /// 4 or 6.
    pub family: u8,
    pub pad: [u8; 3],
}

/// The XDP metadata in front of a tagged frame (`bpf_xdp_adjust_meta`; in
/// copy mode the kernel copies it into the UMEM frame too).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Meta {
    pub magic: u32,
    pub owner: u32,
}

/// Per-CPU packet counters. Invariants (summed over CPUs):
/// `seen == redirected + passed`, `owned == redirected + owned_no_socket`,
/// and the five kind counters sum to `owned`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Counters {
    /// Every frame the program ran on.
    pub seen: u64,
    /// Returned XDP_REDIRECT to an AF_XDP socket.
    pub redirected: u64,
    /// Returned XDP_PASS (includes `owned_no_socket` and `malformed`).
    pub passed: u64,
    /// Segments for the engine (owned address and port, well formed).
    pub owned: u64,
    /// Owned segments that fell back to the kernel: no socket on their queue.
    pub owned_no_socket: u64,
    /// Truncated or inconsistent Ethernet/IP headers (any frame), and TCP
    /// header or option errors (bad data offset, option lengths) of segments
    /// to an owned address; options are only walked for owned segments.
    pub malformed: u64,
    /// Owned segments by MPTCP kind (exactly one each).
    pub mp_capable_syn: u64,
    pub mp_join_syn: u64,
    pub dss: u64,
    pub other_mptcp: u64,
    pub plain_tcp: u64,
    /// Owned segments whose owning worker the maps named (frame tagged).
    pub owner_tagged: u64,
    /// Tags that could not be written (bpf_xdp_adjust_meta refused).
    pub owner_meta_failed: u64,
}

impl Counters {
    /// Field-wise sum, used to fold the per-CPU values.
    pub fn add(&mut self, other: &Counters) {
        self.seen += other.seen;
        self.redirected += other.redirected;
        self.passed += other.passed;
        self.owned += other.owned;
        self.owned_no_socket += other.owned_no_socket;
        self.malformed += other.malformed;
        self.mp_capable_syn += other.mp_capable_syn;
        self.mp_join_syn += other.mp_join_syn;
        self.dss += other.dss;
        self.other_mptcp += other.other_mptcp;
        self.plain_tcp += other.plain_tcp;
        self.owner_tagged += other.owner_tagged;
        self.owner_meta_failed += other.owner_meta_failed;
    }

    /// Field-wise difference (`self - earlier`), saturating at zero.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            seen: self.seen.saturating_sub(earlier.seen),
            redirected: self.redirected.saturating_sub(earlier.redirected),
            passed: self.passed.saturating_sub(earlier.passed),
            owned: self.owned.saturating_sub(earlier.owned),
            owned_no_socket: self.owned_no_socket.saturating_sub(earlier.owned_no_socket),
            malformed: self.malformed.saturating_sub(earlier.malformed),
            mp_capable_syn: self.mp_capable_syn.saturating_sub(earlier.mp_capable_syn),
            mp_join_syn: self.mp_join_syn.saturating_sub(earlier.mp_join_syn),
            dss: self.dss.saturating_sub(earlier.dss),
            other_mptcp: self.other_mptcp.saturating_sub(earlier.other_mptcp),
            plain_tcp: self.plain_tcp.saturating_sub(earlier.plain_tcp),
            owner_tagged: self.owner_tagged.saturating_sub(earlier.owner_tagged),
            owner_meta_failed: self
                .owner_meta_failed
                .saturating_sub(earlier.owner_meta_failed),
        }
    }
}
