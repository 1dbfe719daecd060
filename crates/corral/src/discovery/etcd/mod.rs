//! The etcd backend of discovery: corral talks to the etcd the user already
//! runs through etcd's v3 JSON gateway (Step 7, in progress: the gateway
//! client is here and tested against a real etcd; the backend that
//! registers, watches and keeps a lease comes next).

// Until the backend uses it, the client is exercised by its tests only.
#![cfg_attr(not(test), allow(dead_code))]

mod base64;
pub mod gateway;

#[cfg(test)]
mod tests;
