//! NewReno (RFC 5681 window rules, RFC 6582 recovery is in the subflow),
//! with appropriate byte counting (RFC 3465, L = 2).

use super::{loss_window, min_ssthresh, rescaled_window, AckEvent, CongestionControl};
use crate::time::Instant;
use core::any::Any;

#[derive(Clone, Debug)]
pub struct NewReno {
    cwnd: u64,
    ssthresh: u64,
    mss: u32,
    /// Bytes acknowledged in congestion avoidance not yet turned into growth.
    ca_acked: u64,
}

impl NewReno {
    pub fn new(mss: u32, init_segments: u32) -> NewReno {
        NewReno {
            cwnd: mss as u64 * init_segments.max(1) as u64,
            ssthresh: u64::MAX,
            mss,
            ca_acked: 0,
        }
    }
}

impl CongestionControl for NewReno {
    fn name(&self) -> &'static str {
        "newreno"
    }
    fn window(&self) -> u64 {
        self.cwnd
    }
    fn ssthresh(&self) -> u64 {
        self.ssthresh
    }
    fn set_mss(&mut self, mss: u32) {
        if mss == 0 || mss == self.mss {
            return;
        }
        self.cwnd = rescaled_window(self.cwnd, self.mss, mss);
        self.mss = mss;
    }
    fn on_ack(&mut self, ack: &AckEvent) {
        if !ack.cwnd_limited {
            return;
        }
        let mss = self.mss as u64;
        if self.cwnd < self.ssthresh {
            self.cwnd += ack.acked_bytes.min(2 * mss);
            return;
        }
        self.ca_acked += ack.acked_bytes;
        if self.ca_acked >= self.cwnd {
            self.ca_acked -= self.cwnd;
            self.cwnd += mss;
        }
    }
    fn on_congestion_event(&mut self, _now: Instant, in_flight: u64) {
        self.ssthresh = (in_flight / 2).max(min_ssthresh(self.mss));
        self.cwnd = self.ssthresh;
        self.ca_acked = 0;
    }
    fn on_rto(&mut self, _now: Instant, in_flight: u64) {
        self.ssthresh = (in_flight / 2).max(min_ssthresh(self.mss));
        self.cwnd = loss_window(self.mss);
        self.ca_acked = 0;
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
