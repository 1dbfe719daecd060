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
    }
}
