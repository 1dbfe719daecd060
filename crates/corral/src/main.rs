//! `corral`: the command line. `corral up` execs `corrald`, the daemon,
//! built beside it from the same library (see src/lib.rs for why two).

use std::process::ExitCode;

fn main() -> ExitCode {
    corral::main_cli()
}
