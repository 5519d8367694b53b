//! A small disk for fault tests: a size-limited tmpfs that a cluster can keep a tablespace
//! on, filled by the test's own writes and grown again to free it. Mounting needs root (as
//! CI runs); elsewhere [`SmallDisk::mount`] says so and the test that needs it skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cluster::{ClusterError, give_to_postgres, is_root};

/// A mounted tmpfs, unmounted when dropped.
pub struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mb` MiB at `path` (created), owned by the server's user.
    pub fn mount(path: &Path, mb: u32) -> Result<SmallDisk, ClusterError> {
        if !is_root() {
            return Err(ClusterError::Command {
                what: "mounting a small disk".to_owned(),
                detail: "it needs root".to_owned(),
            });
        }
        std::fs::create_dir_all(path).map_err(|source| ClusterError::Io {
            context: format!("creating {}", path.display()),
            source,
        })?;
        mount(
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mb}m,mode=0700"),
                "tmpfs",
            ],
            path,
        )?;
        let disk = SmallDisk {
            path: path.to_owned(),
        };
        give_to_postgres(path)?;
        Ok(disk)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Grows (or shrinks) the disk in place; the files on it stay.
    pub fn resize(&self, mb: u32) -> Result<(), ClusterError> {
        mount(&["-o", &format!("remount,size={mb}m")], &self.path)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn mount(args: &[&str], path: &Path) -> Result<(), ClusterError> {
    let out = Command::new("mount")
        .args(args)
        .arg(path)
        .output()
        .map_err(|source| ClusterError::Io {
            context: "running mount".to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(ClusterError::Command {
            what: format!("mount {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}
