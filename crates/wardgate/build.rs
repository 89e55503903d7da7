//! Sets `WARDGATE_REVISION`, the release a binary is told apart by (canary against stable):
//! the operator's `WARDGATE_RELEASE` label when set (container builds, which see no `.git`),
//! else the git revision of the checkout's HEAD commit, else `unknown`.
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=WARDGATE_RELEASE");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git_dir = root.join(".git");
    // A new commit moves HEAD or the branch it names; those files are watched.
    for f in ["HEAD", "packed-refs"] {
        println!("cargo:rerun-if-changed={}", git_dir.join(f).display());
    }
    if let Some(r) = git(&root, &["symbolic-ref", "-q", "HEAD"]) {
        println!("cargo:rerun-if-changed={}", git_dir.join(r).display());
    }
    let revision = std::env::var("WARDGATE_RELEASE")
        .ok()
        .filter(|r| is_label(r))
        .or_else(|| git(&root, &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WARDGATE_REVISION={revision}");
}

/// A label that fits a header value and a Prometheus label: `[A-Za-z0-9._-]`, 1..64.
fn is_label(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
