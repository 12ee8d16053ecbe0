//! Linux network capture: sock_diag netlink dumps and destroy
//! notifications (`sock_diag`), socket owners from `/proc` (`procs`), the
//! first bytes of flows through `AF_PACKET` with a classic BPF filter
//! (`inspect`).

mod diag_msg;
pub mod inspect;
mod netlink;
pub mod procs;
pub mod sock_diag;

pub use inspect::open as open_inspector;
pub use procs::open as open_processes;
pub use sock_diag::open as open_sockets;

#[cfg(test)]
mod measure_tests;
