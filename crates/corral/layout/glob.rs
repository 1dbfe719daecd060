//! Symbol names as globs that still match after a rebuild: used by
//! build.rs to lay out the functions listed in corrald.hot (and tested from
//! the library, src/lib.rs).

/// A section's symbol name with the parts that a rebuild changes as `*`:
/// the hash of legacy mangling (`17h<16 hex digits>E`), the crate
/// disambiguators of v0 mangling (`Cs<base 62>_`) and LTO's numbered local
/// copies (`.123`, `.llvm.123`).
pub fn glob(name: &str) -> String {
    let lto_copy = lto_base(name);
    let base = lto_copy.unwrap_or(name);
    let b = base.as_bytes();
    let mut out = String::with_capacity(base.len() + 1);
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if base.starts_with("_ZN")
            && rest.len() == 20
            && rest.starts_with(b"17h")
            && rest[3..19].iter().all(u8::is_ascii_hexdigit)
            && rest[19] == b'E'
        {
            out.push_str("17h*");
            return out;
        }
        if base.starts_with("_R") && rest.starts_with(b"Cs") {
            let len = rest[2..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric())
                .count();
            if len > 0 && rest.get(2 + len) == Some(&b'_') {
                out.push_str("Cs*_");
                i += 3 + len;
                continue;
            }
        }
        out.push(char::from(b[i]));
        i += 1;
    }
    if lto_copy.is_some() {
        out.push('*');
    }
    out
}

/// The name without LTO's `.123` or `.llvm.123` suffix, if it has one.
fn lto_base(name: &str) -> Option<&str> {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() == name.len() {
        return None;
    }
    let stem = stem.strip_suffix('.')?;
    Some(stem.strip_suffix(".llvm").unwrap_or(stem))
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn what_a_rebuild_changes_becomes_a_glob() {
        // Legacy mangling: the hash, and an LTO copy's suffix after it.
        assert_eq!(
            glob("_ZN6corral7runtime3run17h0123456789abcdefE"),
            "_ZN6corral7runtime3run17h*"
        );
        assert_eq!(
            glob("_ZN5bytes9bytes_mut8BytesMut6freeze17h9ccf9692737cde3dE.504"),
            "_ZN5bytes9bytes_mut8BytesMut6freeze17h*"
        );
        // v0 mangling: every crate disambiguator, and an LTO suffix.
        assert_eq!(
            glob("_RNvMNtCslNYArtu3iFV_5alloc6stringNtB2_6String4push.272"),
            "_RNvMNtCs*_5alloc6stringNtB2_6String4push*"
        );
        assert_eq!(
            glob("_RNvNtCs4X4t9plMPHF_9addr2line4line9path_push"),
            "_RNvNtCs*_9addr2line4line9path_push"
        );
        assert_eq!(glob("_RNvXs_NtCs1_3std.llvm.12345"), "_RNvXs_NtCs*_3std*");
    }

    #[test]
    fn names_without_those_parts_are_kept() {
        assert_eq!(glob("main"), "main");
        // A legacy name whose path only looks like a hash or a crate id.
        assert_eq!(glob("_ZN4core3fmt5write17h12E"), "_ZN4core3fmt5write17h12E");
        assert_eq!(glob("_ZN3Cs1_3foo"), "_ZN3Cs1_3foo");
        // Dots inside a legacy name are not an LTO suffix.
        assert_eq!(
            glob("_ZN4core3ptr42drop_in_place$LT$a..B$GT$17h0000000000000000E"),
            "_ZN4core3ptr42drop_in_place$LT$a..B$GT$17h*"
        );
    }
}
