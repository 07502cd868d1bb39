//! Test support shared by the integration tests (`tests/it`) and the benches (`benches/*.rs`).
//!
//! Depends only on std, `tempfile` and `serde_json`; include it with
//! `#[path = "../support/mod.rs"] pub mod support;` (tests) or
//! `#[path = "../tests/support/mod.rs"] mod support;` (benches).

#![allow(dead_code)]

pub mod forge;
pub mod http;
pub mod kube;
pub mod postgres;
pub mod sshd;

/// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read the port, drop the listener).
///
/// Another process may take it before it is used; callers that can, retry with a new port.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local addr of listener")
        .port()
}
