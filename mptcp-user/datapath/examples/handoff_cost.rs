//! What a hand-off between two workers costs, per frame, on this machine:
//! `cargo run --release -p mptcp-datapath --example handoff_cost`.
//!
//! Two threads as two workers. The lender passes MTU-sized frames of its
//! own memory to the owner, which reads the headers (64 bytes, as the
//! engine's parse does) and the payload (as its reassembly copy does) and
//! gives the frame back; the lender refills. Compared with the same loop
//! where the frame is copied into the ring's own slot instead (the copy
//! hand-off the design rejected). Figures: wall time per frame with both
//! threads spinning, the median of 5 runs, next to no hand-off at all
//! (one thread reads the frames where they are).

use std::hint::black_box;
use std::time::Instant;

use mptcp_datapath::handoff::{spsc, Lent, Links, Returned, LEND_MAX};

const FRAME: usize = 1514;
const FRAMES: usize = 2_000_000;

/// The owner's work on a frame: the headers, then every payload byte.
fn consume(frame: &[u8]) -> u64 {
    let mut sum = 0u64;
    for c in frame.chunks(64) {
        sum = sum.wrapping_add(u64::from(c[0]));
    }
    sum
}

/// Zero copy: descriptors out, addresses back.
fn lend_run() -> f64 {
    let mut mesh = Links::mesh(2).expect("mesh");
    let mut b = mesh.pop().expect("owner");
    let mut a = mesh.pop().expect("lender");
    let umem = vec![7u8; LEND_MAX * 2048];
    let base = umem.as_ptr() as usize;
    let owner = std::thread::spawn(move || {
        let mut done = 0;
        let mut sum = 0u64;
        while done < FRAMES {
            let (from, back) = (b.from[0].as_mut().unwrap(), b.back_to[0].as_mut().unwrap());
            while let Some(f) = from.pop() {
                // SAFETY: the lender's buffer outlives this thread (joined below).
                let frame = unsafe { std::slice::from_raw_parts(f.ptr, f.len as usize) };
                sum = sum.wrapping_add(consume(frame));
                let _ = back.push(Returned {
                    path: f.path,
                    socket: f.socket,
                    addr: f.addr,
                });
                done += 1;
            }
        }
        black_box(sum);
    });
    let start = Instant::now();
    let mut free: Vec<u64> = (0..LEND_MAX as u64).map(|i| i * 2048).collect();
    let mut sent = 0;
    while sent < FRAMES {
        while let Some(r) = a.back_from[1].as_mut().unwrap().pop() {
            a.lent_to[1] -= 1;
            free.push(r.addr);
        }
        while sent < FRAMES {
            let Some(addr) = free.pop() else { break };
            let lent = Lent {
                ptr: (base + addr as usize) as *const u8,
                len: FRAME as u32,
                path: 0,
                socket: 0,
                addr,
            };
            if !a.lend(1, lent) {
                free.push(addr);
                break;
            }
            sent += 1;
        }
    }
    owner.join().expect("owner");
    black_box(&umem);
    start.elapsed().as_nanos() as f64 / FRAMES as f64
}

/// A copy hand-off: the frame's bytes into the ring's slot.
#[derive(Clone, Copy)]
struct Slot {
    len: u32,
    bytes: [u8; FRAME],
}

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            len: 0,
            bytes: [0; FRAME],
        }
    }
}

fn copy_run() -> f64 {
    let (mut tx, mut rx) = spsc::<Slot>(1024);
    let owner = std::thread::spawn(move || {
        let mut done = 0;
        let mut sum = 0u64;
        while done < FRAMES {
            while let Some(s) = rx.pop() {
                sum = sum.wrapping_add(consume(&s.bytes[..s.len as usize]));
                done += 1;
            }
        }
        black_box(sum);
    });
    let frame = [7u8; FRAME];
    let start = Instant::now();
    let mut sent = 0;
    while sent < FRAMES {
        let mut s = Slot::default();
        s.bytes.copy_from_slice(&frame);
        s.len = FRAME as u32;
        if tx.push(s).is_ok() {
            sent += 1;
        }
    }
    owner.join().expect("owner");
    start.elapsed().as_nanos() as f64 / FRAMES as f64
}

/// No hand-off: the receiving worker does the owner's work itself, over
/// the same memory.
fn local_run() -> f64 {
    let umem = vec![7u8; LEND_MAX * 2048];
    let start = Instant::now();
    let mut sum = 0u64;
    for i in 0..FRAMES {
        let at = (i % LEND_MAX) * 2048;
        sum = sum.wrapping_add(consume(&umem[at..at + FRAME]));
    }
    black_box(sum);
    start.elapsed().as_nanos() as f64 / FRAMES as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let local = median((0..5).map(|_| local_run()).collect());
    let lend = median((0..5).map(|_| lend_run()).collect());
    let copy = median((0..5).map(|_| copy_run()).collect());
    println!("hand-off of a {FRAME}-byte frame between two spinning threads ({cores} cores), median of 5 x {FRAMES} frames:");
    println!("  no hand-off (the receiver reads it):       {local:.1} ns/frame");
    println!("  zero copy (descriptor out, address back): {lend:.1} ns/frame");
    println!("  copy (by-value slots: in and out):        {copy:.1} ns/frame");
}
