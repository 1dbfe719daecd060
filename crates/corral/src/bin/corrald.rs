//! `corrald`: the daemon. `corral up` execs it (same pid: as PID 1 it stays
//! PID 1) with the arguments it resolved; see src/lib.rs.

use std::process::ExitCode;

fn main() -> ExitCode {
    corral::main_daemon()
}
