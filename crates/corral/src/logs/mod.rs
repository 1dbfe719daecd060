//! Service output: pipes read in chunks of whole lines, fanned out by the
//! log hub to the console, rotating files, in-memory rings and followers.

mod console;
mod console_file;
mod file;
pub mod follow;
mod hub;
mod pipe;
mod ring;

pub use console::{render, Format, Style};
pub use console_file::ConsoleFile;
pub use file::FileSpec;
pub use hub::{ConsoleOptions, HubHandle, Line, LogHub, LogQuery, ServiceLog};
pub use pipe::{LogWatch, PipeReader};
