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
        while let Some((path, n)) = server.poll_transmit(now, &mut frame) {
            client.handle_packet(now, path, &frame[..n]);
        }
        now = now + Duration::from_micros(100);
        for e in [&mut client as &mut dyn Engine, &mut server] {
            if e.poll_timeout().is_some_and(|t| t <= now) {
                e.handle_timeout(now);
            }
        }
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

#[test]
fn mptcp_discard_without_copy_keeps_the_windows_open() {
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
    let server = MptcpEndpoint::server(cfg, &locals(2), 5201);
    let total = 8u64 << 20;
    assert_eq!(transfer(client, server, total), total);
}
