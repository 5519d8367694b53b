//! `files sync` and `files verify` against a real S3-compatible server (moto) and a local
//! directory: awkward names, empty and multipart files, headers as the server received
//! them, --delete, checksum mode, bad input, and verification catching damage.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pgferry_files::{
    Destination, DifferenceKind, FilesError, Filter, FilterRule, Progress, StoreOptions,
    SyncOptions, SyncReport, VerifyOptions, VerifyReport, sync, verify,
};
use pgferry_testkit::s3::S3Server;
use rand::RngCore;

const BUCKET: &str = "inventory-migration";
const MIB: usize = 1 << 20;

/// moto's endpoint, with credentials given explicitly (tests never read the machine's).
fn store(server: &S3Server) -> StoreOptions {
    StoreOptions {
        endpoint: Some(server.endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test-secret".to_string().into()),
        ..StoreOptions::default()
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

fn write(root: &Path, relative: &str, data: &[u8]) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// A tree with the names and sizes that break naive tools. Returns relative path → content.
fn awkward_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let deep = (0..12)
        .map(|i| format!("level {i}"))
        .collect::<Vec<_>>()
        .join("/");
    for (name, data) in [
        ("plain.txt".to_string(), b"plain".to_vec()),
        (
            "with space/and more spaces.jpg".to_string(),
            random_bytes(3000),
        ),
        (
            "ünïcödé/日本語/ファイル.png".to_string(),
            random_bytes(10_000),
        ),
        ("plus+sign/a+b=c.txt".to_string(), b"+".to_vec()),
        ("percent%/100%25.txt".to_string(), b"%".to_vec()),
        ("hash#/#1 item.txt".to_string(), b"#".to_vec()),
        (
            "quotes/it's \"quoted\" & <x>.txt".to_string(),
            b"q".to_vec(),
        ),
        (format!("{deep}/bottom.txt"), b"deep".to_vec()),
        ("empty".to_string(), Vec::new()),
        ("empty dir neighbour/zero.bin".to_string(), Vec::new()),
        (
            "big/multipart.bin".to_string(),
            random_bytes(12 * MIB + 12345),
        ),
        (
            "big/exactly-one-part.bin".to_string(),
            random_bytes(5 * MIB),
        ),
    ] {
        write(root, &name, &data);
        files.insert(name, data);
    }
    files
}

fn small_parts(root: &Path) -> SyncOptions {
    SyncOptions {
        part_size: 5 * MIB,
        jobs: 4,
        ..SyncOptions::new(root)
    }
}

async fn run_sync(dest: &Destination, options: &SyncOptions) -> SyncReport {
    sync(dest, options, Arc::new(Progress::default()))
        .await
        .expect("sync")
}

async fn run_verify(dest: &Destination, root: &Path, deep: bool) -> VerifyReport {
    let options = VerifyOptions {
        deep,
        jobs: 4,
        ..VerifyOptions::new(root)
    };
    verify(dest, &options, Arc::new(Progress::default()))
        .await
        .expect("verify")
}

#[tokio::test]
async fn awkward_names_empty_and_multipart_files_sync_and_verify() {
    let server = S3Server::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let files = awkward_tree(tmp.path());
    let dest =
        Destination::open(&format!("s3://{BUCKET}/product-images"), &store(&server)).unwrap();

    let report = run_sync(&dest, &small_parts(tmp.path())).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.files_uploaded, files.len() as u64);
    assert_eq!(
        report.bytes_uploaded,
        files.values().map(|d| d.len() as u64).sum::<u64>()
    );

    // Every object holds exactly the file's bytes, under exactly the file's name.
    let keys = server.keys(BUCKET).unwrap();
    let expected: Vec<String> = files
        .keys()
        .map(|k| format!("product-images/{k}"))
        .collect();
    assert_eq!(keys, expected);
    for (name, data) in &files {
        let body = server
            .get_object(BUCKET, &format!("product-images/{name}"))
            .unwrap()
            .unwrap();
        assert!(
            body == *data,
            "{name}: content differs ({} vs {} bytes)",
            body.len(),
            data.len()
        );
    }
    // Above the part size the upload was multipart (the ETag counts the parts).
    let head = server
        .head_object(BUCKET, "product-images/big/multipart.bin")
        .unwrap()
        .unwrap();
    assert!(head["etag"].ends_with("-3\""), "{:?}", head["etag"]);
    let head = server
        .head_object(BUCKET, "product-images/big/exactly-one-part.bin")
        .unwrap()
        .unwrap();
    assert!(!head["etag"].contains('-'), "{:?}", head["etag"]);

    let verified = run_verify(&dest, tmp.path(), false).await;
    assert!(verified.is_identical(), "{:?}", verified.differences);
    assert_eq!(verified.matched, files.len() as u64);
    assert_eq!(verified.downloaded, 0, "stored checksums suffice");
    let deep = run_verify(&dest, tmp.path(), true).await;
    assert!(deep.is_identical(), "{:?}", deep.differences);
    assert_eq!(deep.downloaded, files.len() as u64);

    // A second sync finds nothing to do.
    let again = run_sync(&dest, &small_parts(tmp.path())).await;
    assert_eq!(
        (again.files_uploaded, again.files_unchanged),
        (0, files.len() as u64)
    );
}

#[tokio::test]
async fn metadata_storage_class_and_encryption_reach_the_server() {
    let server = S3Server::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "photo.jpg", &random_bytes(2000));
    write(tmp.path(), "large.tiff", &random_bytes(6 * MIB));
    let kms = StoreOptions {
        storage_class: Some("STANDARD_IA".into()),
        sse: Some("aws:kms".into()),
        sse_kms_key_id: Some("arn:aws:kms:us-east-1:123456789012:key/test-key".into()),
        ..store(&server)
    };
    let dest = Destination::open(&format!("s3://{BUCKET}/kms"), &kms).unwrap();
    let options = SyncOptions {
        metadata: vec![("migration-date".into(), "2026-11-21".into())],
        storage_class: Some("STANDARD_IA".into()),
        ..small_parts(tmp.path())
    };
    run_sync(&dest, &options).await;
    for (key, content_type, data) in [
        (
            "kms/photo.jpg",
            "image/jpeg",
            std::fs::read(tmp.path().join("photo.jpg")).unwrap(),
        ),
        (
            "kms/large.tiff",
            "image/tiff",
            std::fs::read(tmp.path().join("large.tiff")).unwrap(),
        ),
    ] {
        let h = server.head_object(BUCKET, key).unwrap().unwrap();
        assert_eq!(h["content-type"], content_type, "{key}");
        assert_eq!(h["x-amz-meta-migration-date"], "2026-11-21", "{key}");
        assert_eq!(h["x-amz-storage-class"], "STANDARD_IA", "{key}");
        assert_eq!(h["x-amz-server-side-encryption"], "aws:kms", "{key}");
        assert_eq!(
            h["x-amz-server-side-encryption-aws-kms-key-id"],
            "arn:aws:kms:us-east-1:123456789012:key/test-key",
            "{key}"
        );
        let sha = pgferry_files_test_sha(&data);
        assert_eq!(h["x-amz-meta-sha256"], sha, "{key}");
    }

    let s3 = StoreOptions {
        sse: Some("AES256".into()),
        ..store(&server)
    };
    let dest = Destination::open(&format!("s3://{BUCKET}/sse-s3"), &s3).unwrap();
    run_sync(&dest, &small_parts(tmp.path())).await;
    let h = server
        .head_object(BUCKET, "sse-s3/photo.jpg")
        .unwrap()
        .unwrap();
    assert_eq!(h["x-amz-server-side-encryption"], "AES256");
}

/// SHA-256 hex, computed independently of the crate's own code.
fn pgferry_files_test_sha(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn delete_removes_objects_whose_files_are_gone_but_not_excluded_ones() {
    let server = S3Server::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for name in ["keep.txt", "gone.txt", "logs/gone.log", "logs/keep.log"] {
        write(tmp.path(), name, name.as_bytes());
    }
    let dest = Destination::open(&format!("s3://{BUCKET}/d"), &store(&server)).unwrap();
    run_sync(&dest, &small_parts(tmp.path())).await;
    std::fs::remove_file(tmp.path().join("gone.txt")).unwrap();
    std::fs::remove_file(tmp.path().join("logs/gone.log")).unwrap();

    // Without --delete nothing goes; with it, only what the filters include.
    run_sync(&dest, &small_parts(tmp.path())).await;
    assert_eq!(server.keys(BUCKET).unwrap().len(), 4);
    let with_delete = SyncOptions {
        delete: true,
        filter: Filter::new(&[FilterRule::Exclude("logs/*".into())]).unwrap(),
        ..small_parts(tmp.path())
    };
    let report = run_sync(&dest, &with_delete).await;
    assert_eq!(report.objects_deleted, 1);
    assert_eq!(
        server.keys(BUCKET).unwrap(),
        ["d/keep.txt", "d/logs/gone.log", "d/logs/keep.log"]
    );
}

#[tokio::test]
async fn changed_files_are_found_by_size_time_or_checksum() {
    let server = S3Server::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "a.txt", b"version 1");
    write(tmp.path(), "b.txt", b"version 1");
    write(tmp.path(), "c.txt", b"version 1");
    let dest = Destination::open(&format!("s3://{BUCKET}/c"), &store(&server)).unwrap();
    run_sync(&dest, &small_parts(tmp.path())).await;

    // a: another size. b: same size, newer time. c: same size, time set back (only
    // --checksum sees it, as with aws s3 sync).
    std::thread::sleep(Duration::from_millis(1100));
    write(tmp.path(), "a.txt", b"version 2, longer");
    write(tmp.path(), "b.txt", b"version 2");
    let future = SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(tmp.path().join("b.txt"))
        .unwrap()
        .set_modified(future)
        .unwrap();
    write(tmp.path(), "c.txt", b"version 2");
    let past = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(tmp.path().join("c.txt"))
        .unwrap()
        .set_modified(past)
        .unwrap();

    let report = run_sync(&dest, &small_parts(tmp.path())).await;
    assert_eq!((report.files_uploaded, report.files_unchanged), (2, 1));
    assert_eq!(
        server.get_object(BUCKET, "c/c.txt").unwrap().unwrap(),
        b"version 1"
    );
    let verified = run_verify(&dest, tmp.path(), false).await;
    assert_eq!(verified.differences.len(), 1, "{:?}", verified.differences);
    assert!(matches!(
        verified.differences[0].kind,
        DifferenceKind::ChecksumDiffers { .. }
    ));

    let checksum = SyncOptions {
        checksum: true,
        ..small_parts(tmp.path())
    };
    let report = run_sync(&dest, &checksum).await;
    assert_eq!((report.files_uploaded, report.files_unchanged), (1, 2));
    assert_eq!(
        server.get_object(BUCKET, "c/c.txt").unwrap().unwrap(),
        b"version 2"
    );
    assert!(run_verify(&dest, tmp.path(), false).await.is_identical());
}

#[tokio::test]
async fn verify_lists_corrupted_missing_and_extra_objects() {
    let server = S3Server::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        "ok.bin",
        "replaced.bin",
        "tampered.bin",
        "missing.bin",
        "resized.bin",
    ] {
        write(tmp.path(), name, &random_bytes(1000));
    }
    let dest = Destination::open(&format!("s3://{BUCKET}/v"), &store(&server)).unwrap();
    run_sync(&dest, &small_parts(tmp.path())).await;

    // replaced: same size, other bytes, written by another tool (no stored checksum).
    server
        .put_object(BUCKET, "v/replaced.bin", &random_bytes(1000), &[])
        .unwrap();
    // tampered: same size, other bytes, with the original checksum copied along; only a
    // deep verify (which reads the content) can see it.
    let original = server
        .head_object(BUCKET, "v/tampered.bin")
        .unwrap()
        .unwrap();
    let sha = original["x-amz-meta-sha256"].clone();
    server
        .put_object(
            BUCKET,
            "v/tampered.bin",
            &random_bytes(1000),
            &[("x-amz-meta-sha256", &sha)],
        )
        .unwrap();
    server.delete_object(BUCKET, "v/missing.bin").unwrap();
    server
        .put_object(BUCKET, "v/resized.bin", &random_bytes(999), &[])
        .unwrap();
    server
        .put_object(BUCKET, "v/extra.bin", b"not in the source", &[])
        .unwrap();

    let report = run_verify(&dest, tmp.path(), false).await;
    let kinds: BTreeMap<&str, &DifferenceKind> = report
        .differences
        .iter()
        .map(|d| (d.path.as_str(), &d.kind))
        .collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(matches!(
        kinds["replaced.bin"],
        DifferenceKind::ChecksumDiffers { .. }
    ));
    assert_eq!(kinds["missing.bin"], &DifferenceKind::MissingInDestination);
    assert_eq!(kinds["extra.bin"], &DifferenceKind::NotInSource);
    assert_eq!(
        kinds["resized.bin"],
        &DifferenceKind::SizeDiffers {
            source: 1000,
            destination: 999
        }
    );
    assert!(!report.is_identical());

    let deep = run_verify(&dest, tmp.path(), true).await;
    let tampered = deep
        .differences
        .iter()
        .find(|d| d.path == "tampered.bin")
        .expect("deep verify sees it");
    assert!(
        matches!(tampered.kind, DifferenceKind::StoredChecksumWrong { .. }),
        "{tampered:?}"
    );
    assert_eq!(deep.differences.len(), 5);

    // A plain sync repairs what differs in size or is missing. The replaced object is
    // newer than its file with the same size, so (as with aws s3 sync) only --checksum
    // re-sends it: it has no stored checksum to match. --delete removes the extra object.
    let differing = |r: &VerifyReport| {
        r.differences
            .iter()
            .map(|d| d.path.clone())
            .collect::<Vec<_>>()
    };
    run_sync(&dest, &small_parts(tmp.path())).await;
    assert_eq!(
        differing(&run_verify(&dest, tmp.path(), false).await),
        ["extra.bin", "replaced.bin"]
    );
    let repair = SyncOptions {
        checksum: true,
        delete: true,
        ..small_parts(tmp.path())
    };
    let report = run_sync(&dest, &repair).await;
    assert_eq!((report.files_uploaded, report.objects_deleted), (1, 1));
    assert!(run_verify(&dest, tmp.path(), false).await.is_identical());
    // The tampered object carries the right checksum for the wrong bytes: only --deep
    // sees it.
    assert_eq!(
        differing(&run_verify(&dest, tmp.path(), true).await),
        ["tampered.bin"]
    );
}

#[tokio::test]
async fn unusable_files_are_reported_and_the_rest_goes_on() {
    let server = S3Server::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(root, "good/one.txt", b"1");
    write(root, "good/two.txt", b"2");
    std::os::unix::fs::symlink(root.join("good/one.txt"), root.join("link-to-one.txt")).unwrap();
    std::os::unix::fs::symlink(root.join("nowhere"), root.join("broken-link")).unwrap();
    let bad_name = std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9.txt");
    std::fs::write(root.join(bad_name), b"x").unwrap();
    nix_mkfifo(&root.join("a-fifo"));

    let dest = Destination::open(&format!("s3://{BUCKET}/p"), &store(&server)).unwrap();
    let report = run_sync(&dest, &small_parts(root)).await;
    assert_eq!(report.files_uploaded, 2);
    assert_eq!(report.symlinks_skipped, 2, "links are skipped by default");
    let reasons: Vec<String> = report.problems.iter().map(|p| p.reason.clone()).collect();
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(reasons.iter().any(|r| r.contains("UTF-8")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("not a regular file")),
        "{reasons:?}"
    );

    let follow = SyncOptions {
        follow_symlinks: true,
        ..small_parts(root)
    };
    let report = run_sync(&dest, &follow).await;
    assert_eq!(report.files_uploaded, 1, "the good link is followed");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.reason.contains("broken symbolic link")),
        "{:?}",
        report.problems
    );
    assert_eq!(
        server
            .get_object(BUCKET, "p/link-to-one.txt")
            .unwrap()
            .unwrap(),
        b"1"
    );
}

fn nix_mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_missing_bucket_bad_credentials_and_no_server_each_fail_clearly_and_fast() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "f", b"f");
    let server = S3Server::start().unwrap();

    let check = async |url: &str, options: StoreOptions| -> FilesError {
        let started = Instant::now();
        let dest = Destination::open(url, &options).unwrap();
        let error = sync(
            &dest,
            &small_parts(tmp.path()),
            Arc::new(Progress::default()),
        )
        .await
        .expect_err("must fail");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
        error
    };
    let e = check("s3://no-such-bucket/x", store(&server)).await;
    assert!(
        e.to_string()
            .contains("bucket \"no-such-bucket\" does not exist"),
        "{e}"
    );
    assert!(e.hint().unwrap().contains("aws s3 mb"), "{e:?}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let nowhere = StoreOptions {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        ..store(&server)
    };
    let e = check(&format!("s3://{BUCKET}/x"), nowhere).await;
    assert!(
        e.to_string().contains("cannot reach the storage endpoint"),
        "{e}"
    );

    // moto checks credentials once told to.
    let strict = S3Server::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).unwrap();
    let e = check(&format!("s3://{BUCKET}/x"), store(&strict)).await;
    assert!(e.to_string().contains("refused the credentials"), "{e}");
    assert!(
        !format!("{e:?}").contains("test-secret"),
        "the secret never shows"
    );

    let e = Destination::open(
        "s3://b/x",
        &StoreOptions {
            profile: Some("nope".into()),
            ..store(&server)
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("profile \"nope\""), "{e}");
}

#[tokio::test]
async fn a_local_directory_is_a_destination_too() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("src");
    let files = awkward_tree(&source);
    let target = tmp.path().join("dst");
    let dest = Destination::open(
        &format!("file://{}", target.display()),
        &StoreOptions::default(),
    )
    .unwrap();
    let report = run_sync(&dest, &small_parts(&source)).await;
    assert_eq!(report.files_uploaded, files.len() as u64);
    for (name, data) in &files {
        assert!(std::fs::read(target.join(name)).unwrap() == *data, "{name}");
    }
    assert!(run_verify(&dest, &source, false).await.is_identical());
    std::fs::write(target.join("plain.txt"), b"PLAIN").unwrap();
    let report = run_verify(&dest, &source, false).await;
    assert_eq!(report.differences.len(), 1);
    let again = run_sync(&dest, &small_parts(&source)).await;
    assert_eq!(
        again.files_uploaded, 0,
        "same size, newer object: aws s3 sync semantics"
    );
    let again = run_sync(
        &dest,
        &SyncOptions {
            checksum: true,
            ..small_parts(&source)
        },
    )
    .await;
    assert_eq!(again.files_uploaded, 1);
    assert!(run_verify(&dest, &source, false).await.is_identical());
}
