//! Packet codecs: zero-copy views over byte slices plus plain `Repr` structs
//! that parse and emit. No allocation, no panics on any input.
pub mod tcp;
