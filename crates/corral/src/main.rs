//! `corral`: the one executable, command line and daemon (src/lib.rs).

use std::process::ExitCode;

fn main() -> ExitCode {
    corral::main()
}
