//! Service output: pipes split into lines, fanned out by the log hub to the
//! console, in-memory rings and followers.

mod console;
mod hub;
mod pipe;
mod ring;

pub use hub::{follower_channel, HubHandle, Line, LogHub, LogQuery};
pub use pipe::{pump, LogWatch};
