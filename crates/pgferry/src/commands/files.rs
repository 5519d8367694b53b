//! `pgferry files sync` and `pgferry files verify`.

use std::sync::Arc;

use clap::ArgMatches;
use indicatif::{HumanBytes, HumanCount};
use pgferry_files::{
    Destination, Filter, FilterRule, Progress, StoreOptions, SyncOptions, SyncReport,
    VerifyOptions, VerifyReport,
};

use crate::cli::{FilesSyncArgs, FilesTargetArgs, FilesVerifyArgs};
use crate::{exit, output, progress};

/// `--include` and `--exclude` in the order they were given, which decides the result.
pub fn filter_rules(matches: Option<&ArgMatches>, target: &FilesTargetArgs) -> Vec<FilterRule> {
    let indexed = |id: &str| -> Vec<usize> {
        matches
            .and_then(|m| m.indices_of(id))
            .map(|i| i.collect())
            .unwrap_or_default()
    };
    let mut rules: Vec<(usize, FilterRule)> = Vec::new();
    let (inc_idx, exc_idx) = (indexed("include"), indexed("exclude"));
    for (n, p) in target.include.iter().enumerate() {
        rules.push((
            inc_idx.get(n).copied().unwrap_or(n),
            FilterRule::Include(p.clone()),
        ));
    }
    for (n, p) in target.exclude.iter().enumerate() {
        rules.push((
            exc_idx.get(n).copied().unwrap_or(usize::MAX / 2 + n),
            FilterRule::Exclude(p.clone()),
        ));
    }
    rules.sort_by_key(|(i, _)| *i);
    rules.into_iter().map(|(_, r)| r).collect()
}

fn open(target: &FilesTargetArgs, extra: StoreOptions) -> anyhow::Result<Destination> {
    let options = StoreOptions {
        endpoint: target.endpoint.clone().filter(|e| !e.is_empty()),
        region: target.region.clone(),
        profile: target.profile.clone(),
        ..extra
    };
    Ok(Destination::open(&target.destination, &options)?)
}

pub async fn sync(args: FilesSyncArgs, matches: Option<&ArgMatches>) -> anyhow::Result<u8> {
    let target = &args.target;
    let filter = Filter::new(&filter_rules(matches, target))?;
    let dest = open(
        target,
        StoreOptions {
            storage_class: args.storage_class.clone(),
            sse: args.sse.clone(),
            sse_kms_key_id: args.sse_kms_key_id.clone(),
            ..StoreOptions::default()
        },
    )?;
    let options = SyncOptions {
        jobs: target.jobs,
        part_size: usize::try_from(args.part_size).unwrap_or(usize::MAX),
        delete: args.delete,
        filter: filter.clone(),
        metadata: pgferry_files::parse_metadata(&args.metadata)?,
        storage_class: args.storage_class.clone(),
        checksum: args.checksum,
        follow_symlinks: target.follow_symlinks,
        ..SyncOptions::new(&target.source)
    };
    let counters = Arc::new(Progress::default());
    let display = progress::FilesDisplay::start(
        counters.clone(),
        "uploaded",
        progress::interactive(target.no_progress),
    );
    let result = tokio::select! {
        r = pgferry_files::sync(&dest, &options, counters) => r,
        _ = super::shutdown_signal() => {
            display.finish().await;
            eprintln!("interrupted: run the same command again; files already uploaded are skipped");
            return Ok(exit::INTERRUPTED);
        }
    };
    display.finish().await;
    let report = result?;
    let verified = if args.verify {
        let verify_options = VerifyOptions {
            jobs: options.jobs,
            filter,
            follow_symlinks: options.follow_symlinks,
            deep: false,
            ..VerifyOptions::new(&target.source)
        };
        Some(run_verify(&dest, &verify_options, target.no_progress).await?)
    } else {
        None
    };
    if target.json {
        println!(
            "{}",
            serde_json::json!({ "sync": report, "verify": verified })
        );
    } else {
        print_sync(&report);
        if let Some(v) = &verified {
            print_verify(v);
        }
    }
    let incomplete =
        !report.problems.is_empty() || verified.as_ref().is_some_and(|v| !v.is_identical());
    Ok(if incomplete {
        exit::DIFFERENCES
    } else {
        exit::OK
    })
}

async fn run_verify(
    dest: &Destination,
    options: &VerifyOptions,
    no_progress: bool,
) -> anyhow::Result<VerifyReport> {
    let counters = Arc::new(Progress::default());
    let display = progress::FilesDisplay::start(
        counters.clone(),
        "checked",
        progress::interactive(no_progress),
    );
    let result = pgferry_files::verify(dest, options, counters).await;
    display.finish().await;
    Ok(result?)
}

pub async fn verify(args: FilesVerifyArgs, matches: Option<&ArgMatches>) -> anyhow::Result<u8> {
    let target = &args.target;
    let filter = Filter::new(&filter_rules(matches, target))?;
    let dest = open(target, StoreOptions::default())?;
    let options = VerifyOptions {
        jobs: target.jobs,
        filter,
        follow_symlinks: target.follow_symlinks,
        deep: args.deep,
        ..VerifyOptions::new(&target.source)
    };
    let report = tokio::select! {
        r = run_verify(&dest, &options, target.no_progress) => r?,
        _ = super::shutdown_signal() => return Ok(exit::INTERRUPTED),
    };
    if target.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_verify(&report);
    }
    Ok(if report.is_identical() {
        exit::OK
    } else {
        exit::DIFFERENCES
    })
}

fn print_problems(problems: &[pgferry_files::Problem]) {
    for p in problems {
        println!(
            "  problem: {}: {}",
            printable(&p.path),
            printable(&p.reason)
        );
    }
}

fn print_sync(r: &SyncReport) {
    let rate = r.bytes_uploaded as f64 / r.seconds.max(0.001);
    println!(
        "sync {} → {}: {} files found ({}), {} uploaded ({}), {} unchanged, {} deleted, {} problems, {} ({}/s)",
        r.source,
        r.destination,
        HumanCount(r.files_found),
        HumanBytes(r.bytes_found),
        HumanCount(r.files_uploaded),
        HumanBytes(r.bytes_uploaded),
        HumanCount(r.files_unchanged),
        HumanCount(r.objects_deleted),
        r.problems.len(),
        output::duration(r.seconds),
        HumanBytes(rate as u64),
    );
    if r.symlinks_skipped > 0 {
        println!(
            "  {} symbolic links skipped (--follow-symlinks follows them)",
            r.symlinks_skipped
        );
    }
    print_problems(&r.problems);
    if !r.problems.is_empty() {
        println!(
            "  {} files were not synced; fix them and run the same command again",
            r.problems.len()
        );
    }
}

fn print_verify(r: &VerifyReport) {
    for d in &r.differences {
        use pgferry_files::DifferenceKind as K;
        let what = match &d.kind {
            K::MissingInDestination => "missing in the destination".to_string(),
            K::NotInSource => "in the destination but not in the source".to_string(),
            K::SizeDiffers {
                source,
                destination,
            } => {
                format!(
                    "size differs: {source} bytes in the source, {destination} in the destination"
                )
            }
            K::ChecksumDiffers {
                source,
                destination,
            } => {
                format!(
                    "content differs: SHA-256 {source} in the source, {destination} in the destination"
                )
            }
            K::StoredChecksumWrong { stored, content } => {
                format!("object corrupt: stored SHA-256 {stored}, content {content}")
            }
        };
        println!("  differs: {}: {what}", printable(&d.path));
    }
    print_problems(&r.problems);
    let verdict = if r.is_identical() {
        "identical"
    } else {
        "DIFFERENT"
    };
    println!(
        "verify {} → {}: {verdict}: {} files ({}) checked, {} match, {} differences, {} problems, {} objects downloaded to hash, {}",
        r.source,
        r.destination,
        HumanCount(r.files),
        HumanBytes(r.bytes),
        HumanCount(r.matched),
        r.differences.len(),
        r.problems.len(),
        HumanCount(r.downloaded),
        output::duration(r.seconds),
    );
}

/// A file name may hold any byte but `/` and NUL: newlines and other control characters
/// are shown escaped (`\n`), so one problem stays on one line.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
