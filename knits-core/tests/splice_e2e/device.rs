//! An in-memory Ethernet device, the smoltcp host behind it, and the host's sockets.

use std::collections::VecDeque;

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use crate::net::{Key4, TSGEN, host_gw, host_ip, host_mac};

#[derive(Debug, Default)]
pub(crate) struct Dev {
    pub(crate) rx: VecDeque<Vec<u8>>,
    pub(crate) tx: VecDeque<Vec<u8>>,
}

pub(crate) struct RxTok(Vec<u8>);
pub(crate) struct TxTok<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for Dev {
    type RxToken<'a> = RxTok;
    type TxToken<'a> = TxTok<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxTok, TxTok<'_>)> {
        let f = self.rx.pop_front()?;
        Some((RxTok(f), TxTok(&mut self.tx)))
    }
    fn transmit(&mut self, _: Instant) -> Option<TxTok<'_>> {
        Some(TxTok(&mut self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

pub(crate) struct Host {
    pub(crate) iface: Interface,
    pub(crate) dev: Dev,
    pub(crate) sockets: SocketSet<'static>,
}

impl Host {
    pub(crate) fn new(h: usize, seed: u64) -> Host {
        let mut dev = Dev::default();
        let mut cfg = IfaceConfig::new(HardwareAddress::Ethernet(host_mac(h)));
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut dev, Instant::from_millis(0));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(host_ip(h)), 24))
                .unwrap()
        });
        iface
            .routes_mut()
            .add_default_ipv4_route(host_gw(h))
            .unwrap();
        Host {
            iface,
            dev,
            sockets: SocketSet::new(vec![]),
        }
    }
}

pub(crate) fn tcp_socket(h: usize, rx: usize, tx: usize, cfg: SockCfg) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; rx]),
        tcp::SocketBuffer::new(vec![0; tx]),
    );
    s.set_tsval_generator(cfg.ts.then_some(TSGEN[h]));
    match cfg.ack_delay_ms {
        None => {}
        Some(0) => s.set_ack_delay(None),
        Some(ms) => s.set_ack_delay(Some(smoltcp::time::Duration::from_millis(ms))),
    }
    s
}

/// Socket settings of a host.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SockCfg {
    pub(crate) ts: bool,
    pub(crate) ack_delay_ms: Option<u64>,
}

/// The socket that holds connection `k` (local, remote), if the host has one.
fn socket_of(sockets: &SocketSet<'_>, k: Key4) -> Option<SocketHandle> {
    sockets.iter().find_map(|(h, s)| match s {
        smoltcp::socket::Socket::Tcp(t) => {
            let l = t.local_endpoint()?;
            let r = t.remote_endpoint()?;
            (l == IpEndpoint::new(IpAddress::Ipv4(k.0), k.1)
                && r == IpEndpoint::new(IpAddress::Ipv4(k.2), k.3))
            .then_some(h)
        }
        _ => None,
    })
}

/// Removes the socket that holds connection `k` (local, remote) from the host.
pub(crate) fn remove_socket(sockets: &mut SocketSet<'_>, k: Key4) {
    if let Some(h) = socket_of(sockets, k) {
        sockets.remove(h);
    }
}

/// The state of the socket `h`, if the host still has it.
pub(crate) fn sock_state(sockets: &SocketSet<'_>, h: SocketHandle) -> Option<tcp::State> {
    sockets.iter().find_map(|(x, s)| match s {
        smoltcp::socket::Socket::Tcp(t) if x == h => Some(t.state()),
        _ => None,
    })
}

/// The state of the socket that holds connection `k` (local, remote), if one does.
pub(crate) fn socket_state(sockets: &SocketSet<'_>, k: Key4) -> Option<tcp::State> {
    sock_state(sockets, socket_of(sockets, k)?)
}
