//! Issue 21: what the collector does with the agents' network records
//! (`NetworkEvent`, `P2pEvent`): the `NetworkReport` rpc (`report`). Their
//! index fields live with the other kinds' in `store/index/network.rs`,
//! the `p2p` alert kind in `alerts/`.

pub mod report;
