//! No allocation per segment: a counting global allocator watches the whole
//! per-packet path (codecs, subflow, endpoint) in steady state, loss and
//! recovery included. Buffer memory comes from a pool of chunks that
//! grows only when the data in flight reaches a new peak: those few chunk
//! allocations are counted apart.

use mptcp_engine::io::{ByteStream, Engine};
use mptcp_engine::tcp::{pool, Config, TcpEndpoint};
use mptcp_engine::time::Instant;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

struct Counting;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ENABLED.with(|e| e.get()) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ENABLED.with(|e| e.get()) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_and_recovery_do_not_allocate() {
    let cfg = Config::default();
    let mut a = TcpEndpoint::client(
        cfg.clone(),
        "192.0.2.1:40000".parse().unwrap(),
        "192.0.2.2:80".parse().unwrap(),
        Instant::ZERO,
    );
    let mut b = TcpEndpoint::listen(cfg, "192.0.2.2:80".parse().unwrap());
    let data = vec![0xa5u8; 1 << 16];
    let mut sink = vec![0u8; 1 << 16];
    let mut frame = vec![0u8; 2048];
    let mut now = Instant::ZERO;
    let mut received = 0u64;
    let mut chunks_at_warmup = None;
    let mut packets = 0u64;
    let mut counted_packets = 0u64;
    let warmup = 4u64 << 20;
    let total = 24u64 << 20;
    while received < total {
        let counting = received >= warmup;
        if counting && chunks_at_warmup.is_none() {
            chunks_at_warmup = Some(pool::stats().allocated);
        }
        ENABLED.with(|e| e.set(counting));
        a.send(&data);
        while let Some((_, n)) = a.poll_transmit(now, &mut frame) {
            packets += 1;
            counted_packets += counting as u64;
            // Every 97th packet is lost: out-of-order data, SACK, recovery.
            if !packets.is_multiple_of(97) {
                b.handle_packet(now, 0, &frame[..n]);
            }
        }
        while let Some((_, n)) = b.poll_transmit(now, &mut frame) {
            a.handle_packet(now, 0, &frame[..n]);
        }
        loop {
            let n = b.recv(&mut sink);
            if n == 0 {
                break;
            }
            received += n as u64;
        }
        now = now + Duration::from_micros(50);
        for e in [&mut a as &mut dyn Engine, &mut b] {
            if e.poll_timeout().is_some_and(|t| t <= now) {
                e.handle_timeout(now);
            }
        }
        ENABLED.with(|e| e.set(false));
    }
    let chunks = pool::stats().allocated - chunks_at_warmup.unwrap_or(0);
    assert!(
        chunks <= 8,
        "the pool grew by {chunks} chunks after warm-up"
    );
    let allocations = COUNT.with(|c| c.get()) - chunks;
    let st = a.subflow_stats().unwrap();
    assert!(st.retransmits > 100, "losses were exercised: {st:?}");
    assert!(counted_packets > 10_000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations over {counted_packets} packets"
    );
}
