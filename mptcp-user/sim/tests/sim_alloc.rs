//! No allocation per packet in steady state: the network recycles packet
//! buffers and event slots, and a whole simulated TCP transfer stops
//! allocating once warm. A counting global allocator keeps score.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use mptcp_engine::time::Instant;
use mptcp_sim::tcp::TcpFactory;
use mptcp_sim::{parse_path_spec, run_with, Hooks, Network, Progress, Side, SimConfig};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

// One test per binary phase: the counter is global, so the tests run in one function.
#[test]
fn steady_state_allocates_only_new_pool_buffers() {
    // The network alone, every knob on.
    let spec =
        parse_path_spec("rate=1gbit,delay=10ms,jitter=1ms,loss=1%,reorder=1%,dup=1%").unwrap();
    let mut net = Network::new(&[spec], 1);
    let packet = [0u8; 1500];
    let mut now = Instant::ZERO;
    let mut delivered = 0u64;
    let step = |net: &mut Network, now: &mut Instant, delivered: &mut u64| {
        while let Some(t) = net.next_event_time().filter(|&t| t <= *now) {
            net.process_until(t, |d| *delivered += d.packet.len() as u64);
        }
        net.send(*now, Side::Client, 0, &packet);
        net.send(*now, Side::Server, 0, &packet[..60]);
        *now = Instant::from_nanos(now.as_nanos() + 12_000);
    };
    for _ in 0..50_000 {
        step(&mut net, &mut now, &mut delivered);
    }
    let (before, pool_before) = (allocations(), net.pool_buffers());
    for _ in 0..200_000 {
        step(&mut net, &mut now, &mut delivered);
    }
    let (grown, pool_grown) = (allocations() - before, net.pool_buffers() - pool_before);
    println!("network: {grown} allocations over 400000 packets, {pool_grown} new pool buffers");
    // Only new peaks of packets in flight add a buffer; nothing else allocates.
    assert_eq!(
        grown, pool_grown as u64,
        "network allocated besides its pool"
    );
    assert!(pool_grown < 400, "pool grew by {pool_grown} buffers");
    assert!(delivered > 200_000 * 1500);

    // A whole TCP transfer: allocation counts seen by the progress hook
    // stop moving after the first quarter of the run.
    let cfg = SimConfig::new(
        vec![parse_path_spec("rate=1gbit,delay=10ms,loss=0.1%").unwrap()],
        32 << 20,
        1,
    );
    let mut samples: Vec<(u64, u64)> = Vec::with_capacity(100_000);
    let mut record = |p: &Progress| {
        if samples.len() < samples.capacity() {
            samples.push((p.received, allocations()));
        }
    };
    let report = run_with(
        &cfg,
        &mut TcpFactory::default(),
        Hooks {
            observer: None,
            progress: Some(&mut record),
        },
    );
    assert!(report.byte_exact, "{report}");
    let warm: Vec<_> = samples.iter().filter(|s| s.0 >= 8 << 20).collect();
    assert!(warm.len() > 10, "too few samples: {}", warm.len());
    let first = warm[0].1;
    let last = warm[warm.len() - 1].1;
    println!(
        "tcp transfer: {} allocations after 8 MiB ({} samples)",
        last - first,
        warm.len()
    );
    // New in-flight peaks may add a few pool buffers; per-packet allocation would add thousands.
    assert!(
        last - first < 100,
        "{} allocations in the warm part of the transfer",
        last - first
    );
}
