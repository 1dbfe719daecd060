//! The etcd backend of discovery: corral talks to the etcd the user already
//! runs through etcd's v3 JSON gateway. The agent (one task per corral)
//! keeps a lease, publishes this host's endpoints and watches every host's;
//! the supervisor merges what it reports into its view (runtime/discover.rs).

pub mod agent;
mod base64;
pub mod gateway;

#[cfg(test)]
mod tests;
