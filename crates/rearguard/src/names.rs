//! Validation of versions and names before they reach a command, a file name or an API:
//! a closed alphabet, so no shell metacharacter, path separator or option can get through.

/// Versions: `^[A-Za-z0-9._-]{1,128}$`, not starting with `-` or `.` (no options, no
/// hidden or relative paths).
pub fn check_version(version: &str) -> Result<(), String> {
    check(version, 128, "version")
}

/// App and component names: `^[A-Za-z0-9._-]{1,64}$`, not starting with `-` or `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    check(name, 64, "name")
}

fn check(value: &str, max_len: usize, what: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if value.is_empty() || value.len() > max_len {
        return Err(format!("{value:?} must be 1 to {max_len} characters long"));
    }
    if let Some(bad) = value.chars().find(|&c| !allowed(c)) {
        return Err(format!(
            "{value:?} contains {bad:?}; a {what} may only hold letters, digits, '.', '_' and '-'"
        ));
    }
    if value.starts_with(['-', '.']) {
        return Err(format!("{value:?} must not start with '-' or '.'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordinary_versions_pass() {
        for v in [
            "v1",
            "1.2.3",
            "a1b2c3d",
            "release_2026-11-22",
            &"f".repeat(128),
        ] {
            assert!(check_version(v).is_ok(), "{v}");
        }
    }

    #[test]
    fn injection_attempts_fail() {
        for v in [
            "",
            "v1; rm -rf /",
            "$(id)",
            "`id`",
            "a b",
            "../etc",
            "-rf",
            ".hidden",
            "v1\n",
            "v1|x",
            &"f".repeat(129),
        ] {
            assert!(check_version(v).is_err(), "{v:?}");
        }
    }

    proptest! {
        #[test]
        fn accepted_versions_hold_only_safe_characters(v in "\\PC{0,140}") {
            if check_version(&v).is_ok() {
                prop_assert!(v.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
            }
        }
    }
}
