//! The etcd backend of discovery: corral talks to the etcd the user already
//! runs through etcd's v3 JSON gateway (Step 7, in progress: the gateway
//! client and the agent that keeps a lease, publishes and watches are here
//! and tested against a real etcd; wiring them into the supervisor, the
//! config and the CLI comes next).

// Until the backend uses it, the client is exercised by its tests only.
#![cfg_attr(not(test), allow(dead_code))]

pub mod agent;
mod base64;
pub mod gateway;

#[cfg(test)]
mod tests;
