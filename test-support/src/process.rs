//! Signals to a spawned `orstream` process (the binary's path is known only to the root
//! crate's tests: `env!("CARGO_BIN_EXE_orstream")`).

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::wait::wait_for;

/// Sends `kill -NAME` (`TERM`, `STOP`, `CONT`, ...) to `pid`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Whether the process has installed its SIGTERM handler, from `/proc`: a SIGTERM sent
/// before that, while the binary is still loading, kills it instead of draining it.
pub fn catches_sigterm(pid: u32) -> bool {
    const SIGTERM: u32 = 15;
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (SIGTERM - 1)) != 0)
}

/// Stops `child` the way an operator does: waits for its SIGTERM handler (failing if it exits
/// first), sends SIGTERM and waits for it to exit, each within `patience`. A child that has
/// already exited is only reaped. The caller judges the exit status.
pub fn terminate(child: &mut Child, name: &str, patience: Duration) -> ExitStatus {
    if child.try_wait().unwrap().is_none() {
        let pid = child.id();
        wait_for(&format!("{name}'s SIGTERM handler"), patience, || {
            assert!(child.try_wait().unwrap().is_none(), "{name} exited early");
            catches_sigterm(pid).then_some(())
        });
        signal(pid, "TERM");
    }
    wait_for(&format!("{name} to exit after SIGTERM"), patience, || {
        child.try_wait().unwrap()
    })
}

/// `program args` run in `dir`, stdin and stdout closed, stderr to the file `log`, and none of
/// the caller's `ORSTREAM_*` variables (the configuration files the test writes say it all).
pub fn command(program: &str, args: &[&str], dir: &str, log: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    without_orstream_variables(&mut command);
    command
}

/// Takes every `ORSTREAM_*` variable of the caller out of `command`'s environment, so only
/// what the test gives it configures the service.
pub fn without_orstream_variables(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars() {
        if key.starts_with("ORSTREAM_") {
            command.env_remove(key);
        }
    }
    command
}

/// User + system CPU seconds of this process so far (`/proc/self/stat`, in clock ticks of
/// 1/100 s on Linux; 0 where it cannot be read), for benches that print CPU per frame.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
