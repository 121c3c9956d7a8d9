//! Linux TAP devices with a virtio-net header (`/dev/net/tun`, `Documentation/networking/tuntap.rst`).
//!
//! A port of the switch is one TAP opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`. With
//! offloads on (`TUNSETOFFLOAD` with checksum and TSO4/TSO6) the kernel hands the switch 64 KiB
//! TSO frames with partial checksums and accepts such frames back, so one read and one write move
//! up to 64 KiB. The fd is non-blocking; the event loop polls it.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::vnet;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;

const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_TSO_ECN: libc::c_uint = 0x08;

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Largest frame a TAP with TSO can hand over: 64 KiB of IP packet plus Ethernet.
pub const MAX_FRAME: usize = 65535 + 14;

/// Buffer size for one read: virtio-net header plus the largest frame.
pub const BUF_LEN: usize = vnet::HDR_LEN + MAX_FRAME;

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Options for opening a TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapOptions {
    /// Checksum and TSO offloads (64 KiB frames, partial checksums). Off: MTU-sized frames with
    /// full checksums (the header is still there, all zero).
    pub offloads: bool,
    /// Open as a multi-queue TAP (each further [`Tap::open_queue`] adds a queue).
    pub multi_queue: bool,
}

impl Default for TapOptions {
    fn default() -> Self {
        TapOptions {
            offloads: true,
            multi_queue: false,
        }
    }
}

/// One open TAP queue.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
    opts: TapOptions,
}

/// Checks that `name` is a usable interface name.
pub fn check_ifname(name: &str) -> io::Result<()> {
    if name.is_empty()
        || name.len() > MAX_IFNAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} must be 1..={MAX_IFNAME} characters of [A-Za-z0-9_-]"),
        ));
    }
    Ok(())
}

fn ioctl_int(fd: RawFd, req: libc::c_ulong, arg: libc::c_ulong, what: &str) -> io::Result<()> {
    // SAFETY: the requests used here take an integer argument by value.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

impl Tap {
    /// Creates (or attaches to) the TAP `name` in the calling thread's network namespace.
    pub fn open(name: &str, opts: TapOptions) -> io::Result<Tap> {
        check_ifname(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "open /dev/net/tun: {e} (needs root or CAP_NET_ADMIN and the tun module)"
                    ),
                )
            })?;
        // SAFETY: into_raw_fd hands over ownership of a valid fd.
        let fd = unsafe { OwnedFd::from_raw_fd(file.into_raw_fd()) };
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        if opts.multi_queue {
            req.flags |= IFF_MULTI_QUEUE;
        }
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReq lays out (40 bytes).
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("TUNSETIFF {name}: {e}")));
        }
        let hdr_len: libc::c_int = vnet::HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int through the pointer.
        let r = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                TUNSETVNETHDRSZ as _,
                &hdr_len as *const libc::c_int,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("TUNSETVNETHDRSZ {name}: {e}"),
            ));
        }
        let offload = if opts.offloads {
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
        } else {
            0
        };
        ioctl_int(
            fd.as_raw_fd(),
            TUNSETOFFLOAD,
            offload as libc::c_ulong,
            &format!("TUNSETOFFLOAD {name}"),
        )?;
        Ok(Tap {
            fd,
            name: name.to_string(),
            opts,
        })
    }

    /// Opens another queue of a multi-queue TAP.
    pub fn open_queue(&self) -> io::Result<Tap> {
        Tap::open(&self.name, self.opts)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The options the TAP was opened with.
    pub fn options(&self) -> TapOptions {
        self.opts
    }

    /// Reads one frame (virtio-net header + Ethernet frame) into `buf`. `Ok(None)` when nothing
    /// is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(n as usize))
    }

    /// Writes one frame (virtio-net header + Ethernet frame).
    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: buf is valid for reads of buf.len() bytes.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Writes a header and a frame with one `writev`.
    pub fn send_parts(&self, hdr: &[u8], frame: &[u8]) -> io::Result<()> {
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut _,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut _,
                iov_len: frame.len(),
            },
        ];
        // SAFETY: both iovecs point at live slices of the given lengths.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        assert!(check_ifname("kn1a2b-client").is_ok());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("this-name-is-too-long").is_err());
        assert!(check_ifname("bad name").is_err());
        assert!(check_ifname("bad/name").is_err());
    }

    #[test]
    fn ifreq_is_40_bytes() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
