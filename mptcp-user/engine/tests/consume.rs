//! `ByteStream::consume`: a discarding application drops received bytes
//! without copying them out, and that must count as reading: the windows
//! open again, so a transfer many times the receive buffer completes, with
//! the plain TCP engine and with MPTCP over two subflows.

use mptcp_engine::app::{App, Discard};
use mptcp_engine::io::{ByteStream, Engine};
use mptcp_engine::mptcp::{LocalAddr, MptcpConfig, MptcpEndpoint};
use mptcp_engine::tcp::{Config, TcpEndpoint};
use mptcp_engine::time::Instant;
use std::net::SocketAddr;
use std::time::Duration;

/// Carries the server's packets to the client, then advances the clock
/// 100 us and fires both sides' due timers; returns the new time.
fn answer_and_tick<'a>(
    client: &'a mut dyn Engine,
    server: &'a mut dyn Engine,
    frame: &mut [u8],
    now: Instant,
) -> Instant {
    while let Some((path, n)) = server.poll_transmit(now, frame) {
        client.handle_packet(now, path, &frame[..n]);
    }
    let now = now + Duration::from_micros(100);
    for e in [client, server] {
        if e.poll_timeout().is_some_and(|t| t <= now) {
            e.handle_timeout(now);
        }
    }
    now
}

/// Sends `total` bytes client -> server; the server runs `Discard`.
/// Returns the bytes the server discarded.
fn transfer<C, S>(mut client: C, mut server: S, total: u64) -> u64
where
    C: Engine + ByteStream,
    S: Engine + ByteStream,
{
    let data = vec![0x5au8; 64 << 10];
    let mut frame = vec![0u8; 2048];
    let mut now = Instant::ZERO;
    let mut sent = 0u64;
    let mut app = Discard::default();
    // Enough rounds for the transfer many times over; a window that never
    // reopens ends the loop with bytes missing.
    for _ in 0..100_000 {
        if app.bytes >= total {
            break;
        }
        if sent < total {
            let n = (total - sent).min(data.len() as u64) as usize;
            sent += client.send(&data[..n]) as u64;
        }
        while let Some((path, n)) = client.poll_transmit(now, &mut frame) {
            server.handle_packet(now, path, &frame[..n]);
        }
        app.poll(now, &mut server);
        now = answer_and_tick(&mut client, &mut server, &mut frame, now);
    }
    app.bytes
}

#[test]
fn tcp_discard_without_copy_keeps_the_window_open() {
    let cfg = Config {
        recv_buffer: 256 << 10,
        ..Config::default()
    };
    let client = TcpEndpoint::client(
        cfg.clone(),
        "192.0.2.1:40000".parse().unwrap(),
        "192.0.2.2:80".parse().unwrap(),
        Instant::ZERO,
    );
    let server = TcpEndpoint::listen(cfg, "192.0.2.2:80".parse().unwrap());
    // 32 times the receive buffer.
    let total = 8u64 << 20;
    assert_eq!(transfer(client, server, total), total);
}

/// An MPTCP client and server over two paths, with 256 KiB receive buffers.
fn mptcp_pair() -> (MptcpEndpoint, MptcpEndpoint) {
    let locals = |host: u8| -> Vec<LocalAddr> {
        (0..2)
            .map(|p| LocalAddr {
                ip: format!("10.0.{p}.{host}").parse().unwrap(),
                path: p,
                signal: false,
            })
            .collect()
    };
    let mut cfg = MptcpConfig {
        recv_buffer: 256 << 10,
        ..MptcpConfig::default()
    };
    cfg.tcp.recv_buffer = 256 << 10;
    let client = MptcpEndpoint::client(
        cfg.clone(),
        &locals(1),
        40000,
        SocketAddr::new("10.0.0.2".parse().unwrap(), 5201),
        Instant::ZERO,
    );
    (client, MptcpEndpoint::server(cfg, &locals(2), 5201))
}

#[test]
fn mptcp_discard_without_copy_keeps_the_windows_open() {
    let (client, server) = mptcp_pair();
    let total = 8u64 << 20;
    assert_eq!(transfer(client, server, total), total);
}

/// `ByteStream::read_slices`: the MPTCP engine hands received bytes over
/// where they lie (as `serve --mode forward` writes them to its backend
/// with writev), in order, what the reader takes counts as read and the
/// rest stays for the next call; the windows reopen as with `recv`.
#[test]
fn mptcp_read_slices_hands_bytes_over_in_place() {
    let (mut client, mut server) = mptcp_pair();
    assert!(server.can_read_slices());
    let total = 4usize << 20;
    let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 4093) as u8).collect();
    let mut got = Vec::with_capacity(total);
    let (mut sent, mut calls, mut partial) = (0usize, 0u64, 0u64);
    let mut frame = vec![0u8; 2048];
    let mut now = Instant::ZERO;
    for _ in 0..100_000 {
        if got.len() >= total {
            break;
        }
        sent += client.send(&data[sent..]);
        while let Some((path, n)) = client.poll_transmit(now, &mut frame) {
            server.handle_packet(now, path, &frame[..n]);
        }
        // Take at most 3000 bytes a call: fewer than offered, mostly.
        loop {
            let n = server.read_slices(&mut |iov| {
                calls += 1;
                let offered: usize = iov.iter().map(|s| s.len()).sum();
                let mut want = offered.min(3000);
                partial += (want < offered) as u64;
                for s in iov {
                    let k = s.len().min(want);
                    got.extend_from_slice(&s[..k]);
                    want -= k;
                }
                offered.min(3000)
            });
            if n == 0 {
                break;
            }
        }
        now = answer_and_tick(&mut client, &mut server, &mut frame, now);
    }
    assert_eq!(got.len(), total, "{calls} calls");
    assert!(got == data, "bytes differ");
    assert!(partial > 0, "every call took all it was offered");
}
