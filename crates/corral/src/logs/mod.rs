//! Service output: pipes split into lines, multiplexed onto corral's stdout.

mod console;
mod pipe;

pub use console::{Console, Stream};
pub use pipe::{pump, LogWatch};
