//! `pgferry files` as a user runs it: against a real S3-compatible server (moto), with the
//! exit codes and JSON that scripts rely on, and a sync killed with SIGKILL then resumed.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgferry_testkit::s3::S3Server;

use super::text;

const BUCKET: &str = "inventory-migration";

/// The command with test credentials, and nothing of the machine's AWS setup.
fn pgferry(home: &Path) -> Command {
    let mut cmd = super::pgferry();
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-value")
        .env("AWS_REGION", "us-east-1")
        .stdin(Stdio::null());
    cmd
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

fn write(root: &Path, relative: &str, data: &[u8]) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

#[test]
fn a_killed_sync_resumes_without_uploading_finished_files_again() {
    let server = S3Server::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("images");
    let total = 2000 + 3;
    for i in 0..2000 {
        write(
            &source,
            &format!("d{}/img {i}.jpg", i % 17),
            &vec![(i % 251) as u8; 1000 + i],
        );
    }
    for i in 0..3 {
        write(
            &source,
            &format!("big/{i}.tiff"),
            &vec![i as u8 + 1; 11 << 20],
        );
    }
    let dest = format!("s3://{BUCKET}/product-images");
    let args = |cmd: &mut Command| {
        cmd.args(["files", "sync"]).arg(&source).arg(&dest).args([
            "--endpoint",
            &server.endpoint(),
            "--jobs",
            "2",
            "--part-size",
            "5MiB",
            "--json",
        ]);
    };

    // Kill it once some, but far from all, objects are there.
    let mut first = pgferry(tmp.path());
    args(&mut first);
    let mut child = first
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = server.keys(BUCKET).unwrap().len();
        if n >= 100 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sync ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "no progress: {n} objects");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    // A request sent before the kill may still complete in the server: wait until the
    // listing settles.
    let mut done_before = server.keys(BUCKET).unwrap();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = server.keys(BUCKET).unwrap();
        if now == done_before {
            break;
        }
        done_before = now;
    }
    assert!(done_before.len() < total, "killed after finishing");
    let stamps: Vec<(String, String)> = done_before
        .iter()
        .take(50)
        .map(|k| {
            (
                k.clone(),
                server.head_object(BUCKET, k).unwrap().unwrap()["last-modified"].clone(),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1100)); // a rewrite would change Last-Modified

    let mut second = pgferry(tmp.path());
    args(&mut second);
    let out = second.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["sync"]["files_found"], total);
    assert_eq!(
        report["sync"]["files_uploaded"].as_u64().unwrap(),
        (total - done_before.len()) as u64,
        "only files not yet there are uploaded: {report}"
    );
    assert_eq!(server.keys(BUCKET).unwrap().len(), total);
    for (key, stamp) in stamps {
        let now = server.head_object(BUCKET, &key).unwrap().unwrap()["last-modified"].clone();
        assert_eq!(now, stamp, "{key} was uploaded again");
    }

    let out = pgferry(tmp.path())
        .args(["files", "verify"])
        .arg(&source)
        .arg(&dest)
        .args(["--endpoint", &server.endpoint(), "--deep"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("identical"),
        "{}",
        text(&out)
    );
}

#[test]
fn filters_apply_in_order_and_exit_codes_tell_scripts_what_happened() {
    let server = S3Server::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("src");
    for name in ["a.jpg", "b.png", "sub/c.jpg", "sub/d.txt"] {
        write(&source, name, name.as_bytes());
    }
    let endpoint = server.endpoint();
    let files = |verb: &str, dest: &str, extra: &[&str]| {
        pgferry(tmp.path())
            .args(["files", verb])
            .arg(&source)
            .arg(dest)
            .args(["--endpoint", &endpoint])
            .args(extra)
            .output()
            .unwrap()
    };

    // The last matching rule decides: everything out, then JPEGs back in.
    let out = files(
        "sync",
        &format!("s3://{BUCKET}/f"),
        &["--exclude", "*", "--include", "*.jpg", "--verify", "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(server.keys(BUCKET).unwrap(), ["f/a.jpg", "f/sub/c.jpg"]);
    let report = json(&out);
    assert_eq!(report["verify"]["matched"], 2, "{report}");
    // In the other order the exclude wins.
    files(
        "sync",
        &format!("s3://{BUCKET}/g"),
        &["--include", "*.jpg", "--exclude", "*"],
    );
    assert_eq!(server.keys(BUCKET).unwrap().len(), 2);

    // verify: 1 and a list of differences; JSON for scripts.
    let out = files("verify", &format!("s3://{BUCKET}/f"), &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    let missing: Vec<&str> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(missing, ["b.png", "sub/d.txt"]);
    assert_eq!(report["differences"][0]["kind"], "missing_in_destination");

    // Bad usage: 2, with what to write instead.
    let out = files(
        "sync",
        &format!("s3://{BUCKET}/f"),
        &["--part-size", "1MiB"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at least 5 MiB"),
        "{}",
        text(&out)
    );
    let out = files(
        "sync",
        &format!("s3://{BUCKET}/f"),
        &["--metadata", "novalue"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // The environment is wrong: 3, one message and a hint, no secret.
    let out = files("sync", "s3://no-such-bucket/x", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not exist") && stderr.contains("hint:"),
        "{stderr}"
    );
    assert!(!stderr.contains("test-secret-value"), "{stderr}");
    let out = pgferry(tmp.path())
        .args([
            "files",
            "sync",
            "/no/such/dir",
            &format!("s3://{BUCKET}/x"),
            "--endpoint",
            &endpoint,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

#[test]
fn no_credentials_anywhere_says_where_it_looked_without_asking_the_metadata_endpoint() {
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "a.txt", b"a");
    let started = Instant::now();
    let out = pgferry(home.path())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args([
            "files",
            "sync",
            src.path().to_str().unwrap(),
            "s3://bucket/prefix",
        ])
        .args(["--endpoint", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no credentials")
            && stderr.contains("AWS_ACCESS_KEY_ID")
            && stderr.contains("~/.aws/credentials")
            && stderr.contains("AWS_EC2_METADATA_DISABLED")
            && !stderr.contains("denied"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no endpoint was waited for"
    );
}

#[test]
fn a_name_with_a_newline_is_one_line_of_problem_not_a_raw_error() {
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    write(src.path(), "bad\nname.txt", b"x");
    write(src.path(), "good.txt", b"y");
    let out = pgferry(home.path())
        .args(["files", "sync", src.path().to_str().unwrap()])
        .arg(format!("file://{}", dst.path().display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("problem:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("bad\\nname.txt") && line.contains("control character"),
        "{stdout}"
    );
    assert!(!stdout.contains("whilst parsing"), "{stdout}");
}

/// Root reads every directory, so the unreadable one is read by `postgres` (as CI runs as
/// root); as anyone else, by the user running the test.
#[test]
fn verify_says_a_directory_could_not_be_read_instead_of_calling_its_objects_extra() {
    let home = tempfile::tempdir().unwrap();
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    let dst = base.path().join("dst");
    write(&src, "open/a.txt", b"a");
    write(&src, "locked/b.txt", b"b");
    write(&src, "locked/c.txt", b"c");
    std::fs::create_dir_all(&dst).unwrap();
    let dst_url = format!("file://{}", dst.display());
    let out = pgferry(home.path())
        .args(["files", "sync", src.to_str().unwrap(), &dst_url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let open = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    for p in [base.path(), src.as_path(), dst.as_path(), home.path()] {
        open(p, 0o755);
    }
    open(&src.join("locked"), 0o000);
    let root = nix::unistd::geteuid().is_root();
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", env!("CARGO_BIN_EXE_pgferry")]);
        c.env("HOME", home.path());
        c
    } else {
        pgferry(home.path())
    };
    let out = cmd
        .args(["files", "verify", src.to_str().unwrap(), &dst_url, "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    open(&src.join("locked"), 0o755);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    assert_eq!(
        report["differences"].as_array().unwrap().len(),
        0,
        "objects under the unreadable directory are not 'not in the source': {report}"
    );
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| {
            let reason = p["reason"].as_str().unwrap_or("");
            reason.contains("permission denied") && reason.contains("2 object(s) under it")
        }),
        "{report}"
    );
}
