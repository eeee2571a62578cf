//! Test support: the example functions and the watchdog as built binaries.

use std::path::PathBuf;
use std::sync::Mutex;

static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The path of a workspace binary (`package`, `bin`), built with the test's profile if needed.
/// Tests run from `target/<profile>/deps/`, so the binary is in `target/<profile>/`.
pub fn binary(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>")
        .to_owned();
    let path = dir.join(bin);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == bin) {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--quiet", "-p", package, "--bin", bin]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "building {package}/{bin} failed");
        built.push(bin.to_owned());
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}
