//! Hand-off between workers: a frame that arrived on one worker's queue
//! but belongs to a connection another worker owns (the classifier says
//! which, in the frame's XDP metadata) goes to its owner without a copy.
//!
//! All workers are threads of one process, so every UMEM is already mapped
//! in every worker's address space: the receiving worker lends the frame
//! (keeps it out of its fill ring) and passes its address through a
//! single-producer single-consumer ring to the owner, which feeds it to its
//! engine and passes the address back through a return ring; the lender
//! then refills its fill ring with it. XDP_SHARED_UMEM would only be needed
//! to transmit from another socket's frames, which the owner never does.
//!
//! Rings are bounded: a lender keeps at most [`LEND_MAX`] frames out per
//! owner (so the return ring, as large, never overflows); a frame that does
//! not fit is dropped like a ring drop and counted, never waited for.
//! An owner asleep in poll() is woken through its eventfd, once per pass.

use std::cell::UnsafeCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Frames one worker may have lent to one other at a time.
pub const LEND_MAX: usize = 4096;

/// Keeps the producer's and the consumer's index on their own cache lines.
#[repr(align(64))]
struct Padded(AtomicUsize);

struct Ring<T> {
    slots: Box<[UnsafeCell<T>]>,
    mask: usize,
    /// Next slot the consumer reads.
    head: Padded,
    /// Next slot the producer writes.
    tail: Padded,
}

// SAFETY: a slot is written only by the one producer before it publishes
// `tail` (Release) and read only by the one consumer after it sees it (Acquire).
unsafe impl<T: Send> Sync for Ring<T> {}

/// The writing end of a bounded SPSC ring of `Copy` values.
pub struct Producer<T> {
    ring: Arc<Ring<T>>,
    tail: usize,
    /// The consumer's index as last read.
    head: usize,
}

/// The reading end.
pub struct Consumer<T> {
    ring: Arc<Ring<T>>,
    head: usize,
    /// The producer's index as last read.
    tail: usize,
}

/// A ring of at least `capacity` entries (rounded up to a power of two).
pub fn spsc<T: Copy + Default>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let size = capacity.max(2).next_power_of_two();
    let ring = Arc::new(Ring {
        slots: (0..size).map(|_| UnsafeCell::new(T::default())).collect(),
        mask: size - 1,
        head: Padded(AtomicUsize::new(0)),
        tail: Padded(AtomicUsize::new(0)),
    });
    (
        Producer {
            ring: ring.clone(),
            tail: 0,
            head: 0,
        },
        Consumer {
            ring,
            head: 0,
            tail: 0,
        },
    )
}

impl<T: Copy> Producer<T> {
    /// Adds `value`, or gives it back when the ring is full.
    pub fn push(&mut self, value: T) -> Result<(), T> {
        let size = self.ring.mask + 1;
        if self.tail.wrapping_sub(self.head) >= size {
            self.head = self.ring.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head) >= size {
                return Err(value);
            }
        }
        // SAFETY: the slot is free (the consumer is past it) and only we write it.
        unsafe { *self.ring.slots[self.tail & self.ring.mask].get() = value };
        self.tail = self.tail.wrapping_add(1);
        self.ring.tail.0.store(self.tail, Ordering::Release);
        Ok(())
    }
}

impl<T: Copy> Consumer<T> {
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.tail {
            self.tail = self.ring.tail.0.load(Ordering::Acquire);
            if self.head == self.tail {
                return None;
            }
        }
        // SAFETY: the producer published this slot (Acquire above) and will
        // not write it again until we move past it.
        let value = unsafe { *self.ring.slots[self.head & self.ring.mask].get() };
        self.head = self.head.wrapping_add(1);
        self.ring.head.0.store(self.head, Ordering::Release);
        Some(value)
    }

    /// True when nothing is waiting (reads the producer's index).
    pub fn is_empty(&self) -> bool {
        self.head == self.ring.tail.0.load(Ordering::Acquire)
    }
}

/// A frame lent by the worker whose queue received it.
#[derive(Clone, Copy, Debug)]
pub struct Lent {
    /// The frame in the lender's UMEM (valid until it is given back: the
    /// lender's sockets outlive every worker).
    pub ptr: *const u8,
    pub len: u32,
    /// The interface (the engine's path id, the same in every worker).
    pub path: u32,
    /// Which of the lender's sockets on that interface, and the frame's address there.
    pub socket: u32,
    pub addr: u64,
}

impl Default for Lent {
    fn default() -> Lent {
        Lent {
            ptr: std::ptr::null(),
            len: 0,
            path: 0,
            socket: 0,
            addr: 0,
        }
    }
}

// SAFETY: the pointer is into a UMEM that outlives the workers; the frame
// is read by one worker at a time (the lender does not touch it while lent).
unsafe impl Send for Lent {}

/// A lent frame on its way back to its lender.
#[derive(Clone, Copy, Debug, Default)]
pub struct Returned {
    pub path: u32,
    pub socket: u32,
    pub addr: u64,
}

/// Wakes a worker sleeping in poll().
pub struct Waker {
    eventfd: OwnedFd,
    sleeping: AtomicBool,
}

impl Waker {
    fn new() -> std::io::Result<Waker> {
        // SAFETY: eventfd(2) with valid flags.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Waker {
            // SAFETY: a fresh descriptor we own.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            sleeping: AtomicBool::new(false),
        })
    }

    /// Writes the eventfd if the worker said it is going to sleep.
    pub fn wake(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: 8 bytes to our eventfd.
            unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

/// What links one worker to the others.
pub struct Links {
    pub id: usize,
    /// Frames lent to worker `o` (`None` for ourselves), and how many are out.
    pub to: Vec<Option<Producer<Lent>>>,
    pub lent_to: Vec<usize>,
    /// Frames other workers lent us.
    pub from: Vec<Option<Consumer<Lent>>>,
    /// Frames going back to their lender `o`, and ours coming back from `o`.
    pub back_to: Vec<Option<Producer<Returned>>>,
    pub back_from: Vec<Option<Consumer<Returned>>>,
    /// Every worker's waker (ours at `id`).
    pub wakers: Arc<[Waker]>,
    /// Workers we lent frames to in this pass (to wake).
    pub pushed: Vec<bool>,
}

impl Links {
    /// The links of `n` workers: index `w` is worker `w`'s.
    pub fn mesh(n: usize) -> std::io::Result<Vec<Links>> {
        let wakers: Arc<[Waker]> = (0..n)
            .map(|_| Waker::new())
            .collect::<std::io::Result<Vec<_>>>()?
            .into();
        let mut links: Vec<Links> = (0..n)
            .map(|id| Links {
                id,
                to: (0..n).map(|_| None).collect(),
                lent_to: vec![0; n],
                from: (0..n).map(|_| None).collect(),
                back_to: (0..n).map(|_| None).collect(),
                back_from: (0..n).map(|_| None).collect(),
                wakers: wakers.clone(),
                pushed: vec![false; n],
            })
            .collect();
        for a in 0..n {
            for b in 0..n {
                if a == b {
                    continue;
                }
                let (p, c) = spsc::<Lent>(LEND_MAX);
                links[a].to[b] = Some(p);
                links[b].from[a] = Some(c);
                let (p, c) = spsc::<Returned>(LEND_MAX);
                links[b].back_to[a] = Some(p);
                links[a].back_from[b] = Some(c);
            }
        }
        Ok(links)
    }

    pub fn workers(&self) -> usize {
        self.wakers.len()
    }

    /// Our eventfd, to sleep on.
    pub fn wake_fd(&self) -> RawFd {
        self.wakers[self.id].eventfd.as_raw_fd()
    }

    /// Lends a frame to worker `owner`; false when it cannot take more.
    pub fn lend(&mut self, owner: usize, frame: Lent) -> bool {
        if self.lent_to[owner] >= LEND_MAX {
            return false;
        }
        match self.to[owner].as_mut().map(|p| p.push(frame)) {
            Some(Ok(())) => {
                self.lent_to[owner] += 1;
                self.pushed[owner] = true;
                true
            }
            _ => false,
        }
    }

    /// Wakes the workers we lent frames to in this pass.
    pub fn wake_owners(&mut self) {
        for (o, pushed) in self.pushed.iter_mut().enumerate() {
            if std::mem::take(pushed) {
                self.wakers[o].wake();
            }
        }
    }

    /// About to sleep: returns false (do not sleep) if frames already wait.
    /// Otherwise lenders that push from now on write our eventfd.
    pub fn prepare_sleep(&self) -> bool {
        self.wakers[self.id].sleeping.store(true, Ordering::SeqCst);
        let waiting = self.from.iter().flatten().any(|c| !c.is_empty());
        if waiting {
            self.wakers[self.id].sleeping.store(false, Ordering::SeqCst);
        }
        !waiting
    }

    /// Awake again: stop asking lenders for wake-ups, drain the eventfd
    /// (always: a lender may have written it just after a timeout woke us).
    pub fn woke(&self) {
        let w = &self.wakers[self.id];
        w.sleeping.store(false, Ordering::SeqCst);
        let mut buf = 0u64;
        // SAFETY: reading 8 bytes from our non-blocking eventfd.
        unsafe { libc::read(w.eventfd.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_keeps_order_and_refuses_when_full() {
        let (mut p, mut c) = spsc::<u32>(4);
        for i in 0..4 {
            assert!(p.push(i).is_ok());
        }
        assert_eq!(p.push(9), Err(9));
        assert_eq!(c.pop(), Some(0));
        assert!(p.push(4).is_ok());
        let got: Vec<u32> = std::iter::from_fn(|| c.pop()).collect();
        assert_eq!(got, [1, 2, 3, 4]);
        assert!(c.is_empty());
    }

    #[test]
    fn a_ring_carries_values_across_threads() {
        let (mut p, mut c) = spsc::<u64>(64);
        const N: u64 = 200_000;
        let t = std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                if p.push(i).is_ok() {
                    i += 1;
                }
            }
        });
        let mut expect = 0;
        while expect < N {
            if let Some(v) = c.pop() {
                assert_eq!(v, expect);
                expect += 1;
            }
        }
        t.join().unwrap();
    }

    #[test]
    fn lending_is_bounded_per_owner_and_wakes_a_sleeper() {
        let mut mesh = Links::mesh(2).unwrap();
        let (a, b) = mesh.split_at_mut(1);
        let (a, b) = (&mut a[0], &mut b[0]);
        assert!(b.prepare_sleep());
        let mut lent = 0;
        while a.lend(1, Lent::default()) {
            lent += 1;
        }
        assert_eq!(lent, LEND_MAX);
        a.wake_owners();
        let mut pfd = libc::pollfd {
            fd: b.wake_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 1000) }, 1, "woken");
        b.woke();
        assert!(!b.prepare_sleep(), "frames wait: no sleep");
        b.woke();
        let mut n = 0;
        while let Some(f) = b.from[0].as_mut().unwrap().pop() {
            b.back_to[0]
                .as_mut()
                .unwrap()
                .push(Returned {
                    addr: f.addr,
                    ..Returned::default()
                })
                .unwrap();
            n += 1;
        }
        assert_eq!(n, LEND_MAX);
        assert!(a.back_from[1].as_mut().unwrap().pop().is_some());
    }
}
