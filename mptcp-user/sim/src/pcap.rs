//! Every packet the simulated links deliver, into a pcap file (raw IP),
//! for `decode --verify`, tshark and Wireshark (`sim --pcap`).

/// Delivered packets into a pcap file (`--pcap`).
pub struct PcapObserver {
    w: mptcp_engine::pcap::PcapWriter<std::io::BufWriter<std::fs::File>>,
    error: Option<std::io::Error>,
}

impl PcapObserver {
    pub fn create(path: &std::path::Path) -> std::io::Result<PcapObserver> {
        let f = std::fs::File::create(path)?;
        let w = mptcp_engine::pcap::PcapWriter::new(
            std::io::BufWriter::new(f),
            mptcp_engine::pcap::LINKTYPE_RAW,
        )?;
        Ok(PcapObserver { w, error: None })
    }

    /// Flushes; reports the first write error.
    pub fn finish(self) -> std::io::Result<()> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.w
            .into_inner()
            .into_inner()
            .map_err(|e| e.into_error())?;
        Ok(())
    }
}

impl crate::runner::Observer for PcapObserver {
    fn on_deliver(&mut self, d: &crate::net::Delivery<'_>) {
        if self.error.is_none() {
            let t = d.at - mptcp_engine::time::Instant::ZERO;
            if let Err(e) = self.w.write(t.as_nanos() as u64, d.packet) {
                self.error = Some(e);
            }
        }
    }
}
