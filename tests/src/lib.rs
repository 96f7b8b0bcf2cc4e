//! Helpers for the integration tests (network namespaces, veth, kernel peers).
