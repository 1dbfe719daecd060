//! Link options for the corral binary.

// Shared with a unit test of the library (src/lib.rs).
#[path = "layout/glob.rs"]
mod glob;
use glob::glob;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    // Pack relative relocations (DT_RELR, glibc 2.36+, binutils 2.38+): a PIE
    // has about 2,900 of them, 24 bytes each in .rela.dyn, which the loader
    // reads at start and which then stay resident; packed they take under
    // 1 KB.
    // The static build (musl, src/lib.rs) relocates itself at start
    // (static PIE): the same packing applies; musl 1.2.4+ reads it.
    if target.ends_with("-linux-gnu") || target.ends_with("-linux-musl") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        hot_text_first(&target);
    }
    if target.ends_with("-linux-gnu") {
        static_unwinder(&target);
    }
}

/// Lays out the daemon's code that runs (layout/corrald.hot, written by
/// bench/layout.py) at the start of .text, the rest after it. A read fault
/// on the binary maps the 64 or 128 KB around the page (fault-around over
/// the page cache's folios: bench/fault_window.py), so code that
/// runs scattered over every window made all of the text resident; grouped,
/// the windows of code that never runs stay unmapped (bench/RESULTS.md,
/// "Code layout"). A function the list misses still works, laid out with
/// the cold code. `CORRAL_LAYOUT=off` links the default order (which
/// bench/layout.py profiles).
fn hot_text_first(target: &str) {
    println!("cargo:rerun-if-changed=layout/corrald.hot");
    println!("cargo:rerun-if-env-changed=CORRAL_LAYOUT");
    // Optimised builds only (release and the profiles made from it).
    if std::env::var("CORRAL_LAYOUT").is_ok_and(|v| v == "off")
        || std::env::var("PROFILE").is_ok_and(|p| p != "release")
    {
        return;
    }
    let (Ok(list), Some(out)) = (
        std::fs::read_to_string("layout/corrald.hot"),
        std::env::var_os("OUT_DIR"),
    ) else {
        return;
    };
    let names: Vec<&str> = list
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    // One output section named .text, placed where the linker would put
    // it: the other .text.* input sections join it after these (orphans go
    // to the section of their name), so tools that look for one .text
    // (valgrind) still find it; GNU ld, the linker on other targets, makes
    // a second .text of it, with the same order. The C runtime's start-up
    // code runs in every process. The names as listed come first; then the
    // same names with what changes between builds (symbol hashes, crate
    // disambiguators, LTO suffixes) as globs, which still match after a
    // version bump or a new rustc but also take in other instances of a
    // generic function.
    let mut script = String::from("SECTIONS\n{\n  .text :\n  {\n    *crt*.o(.text)\n");
    // The static build's C library: one function per object, without
    // function sections, most of it run by every daemon (malloc, stdio,
    // the syscall wrappers); it goes first whole.
    if target.ends_with("-linux-musl") {
        script.push_str("    *libc.a:*(.text .text.*)\n");
    }
    let mut globs = std::collections::HashSet::new();
    let globbed: Vec<String> = names
        .iter()
        .map(|n| glob(n))
        .filter(|g| globs.insert(g.clone()))
        .collect();
    for name in names
        .iter()
        .copied()
        .chain(globbed.iter().map(String::as_str))
    {
        script.push_str(&format!("    *(.text.{name} .text.unlikely.{name})\n"));
    }
    script.push_str("  }\n}\nINSERT AFTER .plt;\n");
    // ring's C and assembly objects hold 180 KB of tables (TLS only, when
    // etcd has `tls`): after the read-only data every daemon reads, not
    // among it, where the fault-around windows of that data would map them.
    // GNU ld (the static build) inserts it ahead of the statement that
    // starts the read-only segment, so that statement comes along: the
    // data stays out of the executable segment.
    let segment = if target.ends_with("-linux-musl") {
        "  . = SEGMENT_START(\"rodata-segment\", ALIGN(CONSTANT (MAXPAGESIZE)) \
         + (. & (CONSTANT (MAXPAGESIZE) - 1)));\n"
    } else {
        ""
    };
    script.push_str(&format!(
        "SECTIONS\n{{\n{segment}  .rodata.common :\n  {{\n    \
         *(EXCLUDE_FILE(*libring-*) .rodata EXCLUDE_FILE(*libring-*) .rodata.*)\n  \
         }}\n}}\nINSERT BEFORE .rodata;\n",
    ));
    let path = std::path::Path::new(&out).join("corrald-layout.ld");
    if std::fs::write(&path, script).is_ok() {
        println!("cargo:rustc-link-arg-bin=corral=-Wl,-T,{}", path.display());
    }
}

/// Links GCC's unwinder into the binary (libgcc_eh.a) rather than loading
/// libgcc_s.so.1 at run time. std asks for libgcc_s for its `_Unwind_*`
/// symbols; the archive comes first on the link line (a crate's native
/// libraries precede std's), so the linker takes those symbols from it and,
/// with `--as-needed`, never records libgcc_s. The shared library would
/// cost a mapping of its own, none of it shared with the services;
/// the few objects taken from the archive are counted with corral's code.
///
/// The archive is the target's: its C compiler is asked where it is
/// (`CC_<target>` or `TARGET_CC`, the names the cc crate reads, else `CC`
/// or `cc` when building for this machine). Cross-compiling without one
/// named, nothing is added and libgcc_s stays a dependency.
fn static_unwinder(target: &str) {
    let own = format!("CC_{}", target.replace('-', "_"));
    for var in [own.as_str(), "TARGET_CC", "CC"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let native = std::env::var("HOST").is_ok_and(|host| host == target);
    let cc = match std::env::var(&own).or_else(|_| std::env::var("TARGET_CC")) {
        Ok(cc) => cc,
        Err(_) if native => std::env::var("CC").unwrap_or_else(|_| "cc".into()),
        Err(_) => {
            println!(
                "cargo:warning=cross-compiling without {own} or TARGET_CC: libgcc_s stays dynamic"
            );
            return;
        }
    };
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
