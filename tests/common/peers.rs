//! Real third-party programs the tests run: finding them, and the rule that a
//! missing prerequisite skips a test with a printed reason locally but fails it
//! when `CI` is set.
#![allow(dead_code)]

/// Whether the tests run in CI (where nothing may be skipped).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Whether `program` is an executable on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Skips (false, with the reason printed) or fails in CI when `why` is Some.
pub fn check(why: Option<String>) -> bool {
    match why {
        None => true,
        Some(why) if in_ci() => panic!("{why}"),
        Some(why) => {
            eprintln!("SKIP: {why}");
            false
        }
    }
}

/// Whether every program is installed; `hint` names the packages.
pub fn require(programs: &[&str], hint: &str) -> bool {
    let missing: Vec<&str> = programs.iter().copied().filter(|p| !on_path(p)).collect();
    check((!missing.is_empty()).then(|| {
        format!(
            "{} not installed ({hint}; see scripts/setup-test-env.sh)",
            missing.join(" and ")
        )
    }))
}

/// A peer process that is killed and reaped when the test is done with it
/// (also when the test fails).
pub struct Peer(pub std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to its end: whether it succeeded, and its stdout then stderr.
pub fn run(cmd: &mut std::process::Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} cannot run: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
