//! The one reader of `/proc`: a process's state, parent, age and memory. Each function returns
//! `None` when the process is gone or the file unreadable; nothing here decides anything.

/// The fields of `/proc/PID/stat` the supervisor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `D`, `Z`, ...
    pub state: char,
    /// The parent's pid.
    pub ppid: u32,
    /// When it started, in clock ticks since boot.
    pub start_ticks: u64,
}

/// `/proc/PID/stat`, parsed.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let mut f = text.rsplit_once(')')?.1.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    // starttime is field 22: the 20th after the state.
    let start_ticks = f.nth(17)?.parse().ok()?;
    Some(Stat {
        state,
        ppid,
        start_ticks,
    })
}

/// Every pid in `/proc` now.
pub fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
}

/// Seconds since process `pid` started.
pub fn uptime_s(pid: u32) -> Option<f64> {
    let start_ticks = stat(pid)?.start_ticks as f64;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&h| h > 0)
        .unwrap_or(100);
    Some((uptime - start_ticks / hz as f64).max(0.0))
}

/// Resident memory of process `pid`, MiB (`VmRSS` from `/proc/PID/status`).
pub fn rss_mb(pid: u32) -> Option<u64> {
    status_mb(pid, "VmRSS")
}

/// Peak resident memory of process `pid`, MiB (`VmHWM`).
pub fn peak_rss_mb(pid: u32) -> Option<u64> {
    status_mb(pid, "VmHWM")
}

fn status_mb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kb(&text, key).map(|kb| kb / 1024)
}

fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    // The kernel writes "VmRSS:\t  123456 kB"; the unit is always kB.
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_proc() {
        assert_eq!(
            parse_status_kb("Name:\tx\nVmRSS:\t   20480 kB\n", "VmRSS"),
            Some(20480)
        );
        assert_eq!(parse_status_kb("Name:\tkthreadd\n", "VmRSS"), None);
        let ours = rss_mb(std::process::id()).unwrap();
        assert!(ours > 0 && ours < 1_000_000);
        assert_eq!(rss_mb(u32::MAX), None);
    }

    #[test]
    fn stat_fields_follow_the_command_name() {
        let line = "42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 1 2";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                ppid: 7,
                start_ticks: 12345
            })
        );
        let me = stat(std::process::id()).expect("our own stat");
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw() as u32);
        assert!(uptime_s(std::process::id()).is_some());
        assert_eq!(stat(u32::MAX), None);
    }
}
