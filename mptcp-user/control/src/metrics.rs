//! Prometheus metrics over HTTP (`serve --metrics ADDR:PORT`): the same
//! [`InstanceStats`] as `stats` and `ctl stats`, encoded by prometheus-client
//! (OpenMetrics text). Labels are bounded: interface names (as configured),
//! event names (8), connection and subflow states (5 and 4); never a token
//! or an address.

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request as HttpRequest, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::protocol::Request;
use crate::server::Ctx;
use crate::snapshot::{InstanceStats, MptcpEngineStats};

type Labels = Vec<(String, String)>;

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let g: Gauge = Gauge::default();
    g.set(v.min(i64::MAX as u64) as i64);
    reg.register(name, help, g);
}

fn counter_family<'a>(
    reg: &mut Registry,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let f = Family::<Labels, Counter>::default();
    for (l, v) in values {
        f.get_or_create(&vec![(label.to_string(), l.to_string())])
            .inc_by(v);
    }
    reg.register(name, help, f);
}

fn gauge_family<'a>(
    reg: &mut Registry,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let f = Family::<Labels, Gauge>::default();
    for (l, v) in values {
        f.get_or_create(&vec![(label.to_string(), l.to_string())])
            .set(v.min(i64::MAX as u64) as i64);
    }
    reg.register(name, help, f);
}

/// The exposition text of one snapshot. Metric `mptcp_user_X_total` is the
/// counter at JSON path X of `ctl stats --json` (dots as underscores).
pub fn encode_stats(s: &InstanceStats<MptcpEngineStats>) -> String {
    let mut root = Registry::with_prefix("mptcp_user");
    {
        let reg = root.sub_registry_with_prefix("classifier");
        let c = &s.classifier;
        counter(reg, "seen", "Frames the XDP classifier ran on", c.seen);
        counter(
            reg,
            "redirected",
            "Frames redirected to AF_XDP",
            c.redirected,
        );
        counter(
            reg,
            "passed",
            "Frames left to the kernel (XDP_PASS)",
            c.passed,
        );
        counter(
            reg,
            "owned",
            "Segments to an owned address and port",
            c.owned,
        );
        counter(
            reg,
            "owned_no_socket",
            "Owned segments with no AF_XDP socket on their queue",
            c.owned_no_socket,
        );
        counter(reg, "malformed", "Malformed frames", c.malformed);
        counter(
            reg,
            "mp_capable_syn",
            "Owned MP_CAPABLE SYNs",
            c.mp_capable_syn,
        );
        counter(reg, "mp_join_syn", "Owned MP_JOIN SYNs", c.mp_join_syn);
        counter(reg, "dss", "Owned segments with DSS", c.dss);
        counter(
            reg,
            "other_mptcp",
            "Owned segments with other MPTCP options",
            c.other_mptcp,
        );
        counter(reg, "plain_tcp", "Owned plain TCP segments", c.plain_tcp);
    }
    {
        let reg = root.sub_registry_with_prefix("worker");
        let w = &s.worker;
        counter(reg, "rx_frames", "Frames received", w.rx_frames);
        counter(reg, "tx_frames", "Frames sent", w.tx_frames);
        counter(
            reg,
            "rx_not_ip",
            "Received frames that were not IP",
            w.rx_not_ip,
        );
        counter(
            reg,
            "no_neighbour",
            "Packets dropped for want of a neighbour MAC",
            w.no_neighbour,
        );
        counter(
            reg,
            "tx_ring_full",
            "Passes that found the TX ring full",
            w.tx_ring_full,
        );
        counter(reg, "passes", "Passes through the worker loop", w.passes);
        counter(
            reg,
            "sleeps",
            "Passes that ended asleep in poll()",
            w.sleeps,
        );
        // Per worker (as many series as workers, never per connection).
        let names: Vec<String> = s.workers.iter().map(|e| e.worker.to_string()).collect();
        let each = |f: fn(&crate::snapshot::WorkerEntry) -> u64| {
            s.workers
                .iter()
                .zip(&names)
                .map(move |(e, n)| (n.as_str(), f(e)))
        };
        gauge_family(
            reg,
            "connections",
            "Live connections, per worker",
            "worker",
            each(|e| e.connections),
        );
        counter_family(
            reg,
            "handoffs",
            "Frames handed to the worker owning their connection, per worker that received them",
            "worker",
            each(|e| e.handoffs),
        );
        counter_family(
            reg,
            "handoff_dropped",
            "Frames dropped because their owner held too many of this worker's, per worker",
            "worker",
            each(|e| e.handoff_dropped),
        );
        counter_family(
            reg,
            "panics",
            "Times the worker panicked (its connections reset, the worker restarted)",
            "worker",
            each(|e| e.panics),
        );
    }
    {
        let reg = root.sub_registry_with_prefix("interface");
        let each = |f: fn(&crate::snapshot::InterfaceStats) -> u64| {
            s.interfaces.iter().map(move |i| (i.name.as_str(), f(i)))
        };
        counter_family(
            reg,
            "rx_frames",
            "Frames received, per interface",
            "interface",
            each(|i| i.rx_frames),
        );
        counter_family(
            reg,
            "tx_frames",
            "Frames sent, per interface",
            "interface",
            each(|i| i.tx_frames),
        );
        counter_family(
            reg,
            "kernel_rx_dropped",
            "Frames the kernel dropped before our RX ring",
            "interface",
            each(|i| i.kernel_rx_dropped),
        );
        counter_family(
            reg,
            "rx_ring_full",
            "Frames the kernel dropped because our RX ring was full",
            "interface",
            each(|i| i.rx_ring_full),
        );
        counter_family(
            reg,
            "rx_fill_ring_empty",
            "Times the kernel found our fill ring empty",
            "interface",
            each(|i| i.rx_fill_ring_empty),
        );
    }
    {
        let reg = root.sub_registry_with_prefix("engine");
        let e = &s.engine;
        gauge(reg, "connections", "Live connections", e.connections);
        gauge(
            reg,
            "fallbacks",
            "Live connections that fell back to TCP",
            e.fallbacks,
        );
        gauge(
            reg,
            "subflows",
            "Open subflows of the live connections",
            e.subflows,
        );
        gauge(
            reg,
            "half_open",
            "Accepted connections whose handshake is not complete",
            e.half_open,
        );
        gauge(
            reg,
            "buffer_bytes_in_use",
            "Pooled buffer bytes held by connections",
            e.buffers.in_use,
        );
        gauge_family(
            reg,
            "connections_by_state",
            "Live connections by state",
            "state",
            e.connections_by_state.iter().map(|(k, v)| (k.as_str(), *v)),
        );
        gauge_family(
            reg,
            "subflows_by_state",
            "Open subflows by state",
            "state",
            e.subflows_by_state.iter().map(|(k, v)| (k.as_str(), *v)),
        );
        counter(
            reg,
            "closed",
            "Connections the application finished",
            e.closed,
        );
        counter_family(
            reg,
            "events",
            "Monitor events by name",
            "event",
            e.events.iter().map(|(k, v)| (k.as_str(), *v)),
        );
        let reg = reg.sub_registry_with_prefix("counters");
        let c = &e.counters;
        counter(
            reg,
            "malformed",
            "Packets the engine could not parse",
            c.malformed,
        );
        counter(
            reg,
            "bad_checksum",
            "Packets with a bad TCP checksum",
            c.bad_checksum,
        );
        counter(
            reg,
            "partial_checksum",
            "Packets accepted with a partial checksum",
            c.partial_checksum,
        );
        counter(
            reg,
            "unmatched",
            "Packets that matched no connection or listener",
            c.unmatched,
        );
        counter(reg, "join_refused", "MP_JOIN SYNs refused", c.join_refused);
        counter(reg, "accepted", "Connections accepted", c.accepted);
        counter(
            reg,
            "join_accepted",
            "MP_JOIN SYNs accepted",
            c.join_accepted,
        );
        counter(
            reg,
            "resets_dropped",
            "RSTs not sent (queue full or rate limit)",
            c.resets_dropped,
        );
        counter(
            reg,
            "refused_max_connections",
            "SYNs refused at the connection limit",
            c.refused_max_connections,
        );
        counter(
            reg,
            "syn_dropped",
            "SYNs dropped with the half-open queue full",
            c.syn_dropped,
        );
        counter(
            reg,
            "syn_cookies_sent",
            "SYN/ACKs sent with a SYN cookie",
            c.syn_cookies_sent,
        );
        counter(
            reg,
            "syn_cookies_accepted",
            "Connections made from a SYN cookie",
            c.syn_cookies_accepted,
        );
        counter(
            reg,
            "syn_cookies_invalid",
            "ACKs whose SYN cookie did not check",
            c.syn_cookies_invalid,
        );
        counter(
            reg,
            "resets_sent",
            "RSTs sent for unmatched segments",
            c.resets_sent,
        );
        counter(
            reg,
            "monitor_dropped",
            "Monitor events the engine dropped",
            c.monitor_dropped,
        );
    }
    {
        let reg = root.sub_registry_with_prefix("control");
        counter(
            reg,
            "commands",
            "Control commands answered",
            s.engine.control.commands,
        );
        counter(
            reg,
            "events_dropped",
            "Monitor events dropped on the way to clients",
            s.engine.control.events_dropped,
        );
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &root);
    out
}

pub(crate) async fn serve(listener: tokio::net::TcpListener, ctx: Ctx) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(ctx.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(ctx: Ctx, req: HttpRequest<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        Ok(r)
    };
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try GET /metrics\n".into(),
        );
    }
    let stats = ctx.ask(Request::Stats).await.and_then(|v| {
        serde_json::from_value::<InstanceStats<MptcpEngineStats>>(v).map_err(|e| e.to_string())
    });
    match stats {
        Ok(s) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            encode_stats(&s),
        ),
        Err(e) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ClassifierStats, InterfaceStats, WorkerCounters};

    #[test]
    fn counters_gauges_and_bounded_labels() {
        let mut engine = MptcpEngineStats {
            connections: 3,
            ..Default::default()
        };
        engine.events.insert("SF_CLOSED".into(), 7);
        let s = InstanceStats {
            pid: 1,
            role: "serve".into(),
            interfaces: vec![InterfaceStats {
                name: "eth0".into(),
                xdp: "Driver".into(),
                af_xdp: "Copy".into(),
                rx_frames: 11,
                tx_frames: 12,
                kernel_rx_dropped: 0,
                rx_dropped: 0,
                rx_ring_full: 0,
                rx_fill_ring_empty: 0,
                rx_invalid_descs: 0,
                rx_frames_per_queue: vec![11],
            }],
            classifier: ClassifierStats {
                redirected: 42,
                ..Default::default()
            },
            worker: WorkerCounters::default(),
            workers: vec![crate::snapshot::WorkerEntry {
                worker: 1,
                handoffs: 5,
                ..Default::default()
            }],
            engine,
        };
        let text = encode_stats(&s);
        for line in [
            "# TYPE mptcp_user_classifier_redirected counter",
            "mptcp_user_classifier_redirected_total 42",
            "# TYPE mptcp_user_engine_connections gauge",
            "mptcp_user_engine_connections 3",
            "mptcp_user_engine_events_total{event=\"SF_CLOSED\"} 7",
            "mptcp_user_interface_rx_frames_total{interface=\"eth0\"} 11",
            "mptcp_user_worker_handoffs_total{worker=\"1\"} 5",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
        // No per-connection labels: the series count does not grow with connections.
        assert!(!text.contains("token"));
    }
}
