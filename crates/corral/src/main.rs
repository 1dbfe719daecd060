mod config;
mod engine;
fn main() {}
