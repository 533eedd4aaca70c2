//! Who is acting: the user and host recorded with every release and rollback, and the
//! identity a guard holds its leases under.

use nix::unistd::{Uid, User, gethostname};

pub fn hostname() -> String {
    gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into())
}

pub fn user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            User::from_uid(Uid::current())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The path of this program, to start it again (a router, a re-executed guard). After an
/// upgrade replaced the file, the kernel reports the old one as "PATH (deleted)": the new
/// one is at PATH.
pub fn this_program() -> std::io::Result<std::path::PathBuf> {
    let path = std::env::current_exe()?;
    let text = path.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(original) => std::path::PathBuf::from(original),
        None => path,
    })
}

/// `user@host`, for the record.
pub fn actor() -> String {
    format!("{}@{}", user(), hostname())
}

/// This process as a lease holder: `host:pid:start`, so a guard on the same host can tell
/// a holder that died (kill -9) from one that lives.
pub fn lease_holder() -> String {
    let pid = std::process::id() as i32;
    format!(
        "{}:{pid}:{}",
        hostname(),
        start_time(pid).unwrap_or_default()
    )
}

/// Whether the holder of a lease still runs. Holders on other hosts are assumed alive
/// (their lease expires on its own).
pub fn holder_alive(holder: &str) -> bool {
    let mut parts = holder.rsplitn(3, ':');
    let (Some(start), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return true;
    };
    if host != hostname() {
        return true;
    }
    match (pid.parse::<i32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_time(pid) == Some(start),
        _ => true,
    }
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot.
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Whether `pid` still runs the process that started at `started` (not another one that
/// got the pid since, and not a zombie waiting to be reaped).
pub fn process_runs(pid: i32, started: u64) -> bool {
    stat_fields(pid).is_some_and(|fields| {
        let state = fields.first().map(String::as_str);
        fields.get(19).and_then(|s| s.parse().ok()) == Some(started)
            && !matches!(state, Some("Z" | "X"))
    })
}

/// The fields of /proc/PID/stat after the command name, from the state (field 3) on.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it start past the last ')'.
    let after_name = &stat[stat.rfind(')')? + 2..];
    Some(after_name.split_whitespace().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        assert!(holder_alive(&lease_holder()));
        assert!(!holder_alive(&format!(
            "{}:{}:1",
            hostname(),
            std::process::id()
        )));
        assert!(
            holder_alive("elsewhere:1:1"),
            "other hosts cannot be checked"
        );
    }
}
