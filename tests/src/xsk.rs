//! The smallest AF_XDP socket the kernel accepts as an XSKMAP entry: a UMEM,
//! fill/completion/RX rings that are never mapped, bound in copy mode. It
//! lets tests prove that owned segments really leave the kernel's path; the
//! frames it receives are dropped (its fill ring stays empty). The real
//! driver lives in mptcp-user.
use std::{
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use anyhow::{bail, Result};

const FRAMES: usize = 16;
const FRAME_SIZE: usize = 4096;
const RING_SIZE: u32 = 16;

pub struct MinimalXsk {
    fd: OwnedFd,
    umem: *mut libc::c_void,
}

fn check(ret: libc::c_int, what: &str) -> Result<()> {
    if ret != 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl MinimalXsk {
    /// Binds to `ifindex` queue `queue` of the caller's network namespace.
    pub fn bind(ifindex: u32, queue: u32) -> Result<MinimalXsk> {
        // SAFETY: plain syscalls; every pointer passed is to a live local of the right size.
        unsafe {
            let raw = libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            if raw < 0 {
                bail!("socket(AF_XDP): {}", std::io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(raw);
            let len = FRAMES * FRAME_SIZE;
            let umem = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if umem == libc::MAP_FAILED {
                bail!("mmap UMEM: {}", std::io::Error::last_os_error());
            }
            let xsk = MinimalXsk { fd, umem };
            let reg = libc::xdp_umem_reg {
                addr: umem as u64,
                len: len as u64,
                chunk_size: FRAME_SIZE as u32,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            xsk.setsockopt(libc::XDP_UMEM_REG, &reg, "XDP_UMEM_REG")?;
            for (opt, name) in [
                (libc::XDP_UMEM_FILL_RING, "XDP_UMEM_FILL_RING"),
                (libc::XDP_UMEM_COMPLETION_RING, "XDP_UMEM_COMPLETION_RING"),
                (libc::XDP_RX_RING, "XDP_RX_RING"),
            ] {
                xsk.setsockopt(opt, &RING_SIZE, name)?;
            }
            let addr = libc::sockaddr_xdp {
                sxdp_family: libc::AF_XDP as u16,
                sxdp_flags: libc::XDP_COPY,
                sxdp_ifindex: ifindex,
                sxdp_queue_id: queue,
                sxdp_shared_umem_fd: 0,
            };
            check(
                libc::bind(
                    xsk.fd.as_raw_fd(),
                    (&addr as *const libc::sockaddr_xdp).cast(),
                    size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                ),
                "bind AF_XDP",
            )?;
            Ok(xsk)
        }
    }

    unsafe fn setsockopt<T>(&self, opt: libc::c_int, value: &T, what: &str) -> Result<()> {
        // SAFETY: `value` is a live T and the length says so.
        check(
            unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_XDP,
                    opt,
                    (value as *const T).cast(),
                    size_of::<T>() as libc::socklen_t,
                )
            },
            what,
        )
    }
}

// SAFETY: the UMEM mapping is owned by this value alone and never aliased.
unsafe impl Send for MinimalXsk {}

impl AsRawFd for MinimalXsk {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for MinimalXsk {
    fn drop(&mut self) {
        // SAFETY: the mapping made in bind, unmapped once; the socket closes after.
        unsafe {
            libc::munmap(self.umem, FRAMES * FRAME_SIZE);
        }
    }
}

/// `if_nametoindex` in the caller's network namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let cname = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        bail!("no interface {name}: {}", std::io::Error::last_os_error());
    }
    Ok(index)
}
