//! `cargo xtask bench`: placeholder until the AF_XDP datapath exists.
use std::path::Path;

use anyhow::Result;

pub fn run(_binary: &Path, _seconds: u64) -> Result<()> {
    println!("bench: the datapath benchmark arrives with the AF_XDP driver");
    Ok(())
}
