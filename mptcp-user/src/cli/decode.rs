//! `mptcp-user decode`: every TCP segment of a capture with its MPTCP
//! suboptions; `--verify` recomputes the crypto.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct DecodeArgs {
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Recompute tokens, HMACs and DSS checksums; exit non-zero on a mismatch.
    #[arg(long)]
    verify: bool,
    /// A pcap or pcapng file (Ethernet, Linux cooked v1/v2, raw IP).
    file: PathBuf,
}

pub fn decode(a: &DecodeArgs) -> anyhow::Result<()> {
    let opts = mptcp_decode::Options {
        json: a.json,
        verify: a.verify,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let report = mptcp_decode::decode_file(&a.file, opts, &mut out)?;
    std::io::Write::flush(&mut out)?;
    if !report.clean() {
        std::process::exit(1);
    }
    Ok(())
}
