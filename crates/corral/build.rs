//! Link options for the corral binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    // Pack relative relocations (DT_RELR, glibc 2.36+, binutils 2.38+): a PIE
    // has about 2,900 of them, 24 bytes each in .rela.dyn, which the loader
    // reads at start and which then stay resident; packed they take under
    // 1 KB. Measured with bench/supervise.py at N=100: about -40 kB PSS.
    if target.ends_with("-linux-gnu") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        static_unwinder();
    }
}

/// Links GCC's unwinder into the binary (libgcc_eh.a) rather than loading
/// libgcc_s.so.1 at run time. std asks for libgcc_s for its `_Unwind_*`
/// symbols; the archive comes first on the link line (a crate's native
/// libraries precede std's), so the linker takes those symbols from it and,
/// with `--as-needed`, never records libgcc_s. The shared library cost a
/// mapping of its own (84 kB of PSS, none of it shared with the services);
/// the few objects taken from the archive are counted with corral's code.
fn static_unwinder() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let Ok(out) = std::process::Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let path = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if let Some(dir) = path
        .parent()
        .filter(|_| path.is_absolute() && path.exists())
    {
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-lib=static=gcc_eh");
    }
}
