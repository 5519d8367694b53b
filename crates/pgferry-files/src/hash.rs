//! SHA-256 of files and objects, streamed in fixed-size blocks so memory stays flat
//! whatever the size.

use std::io::Read;
use std::path::Path as FsPath;

use futures_util::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use sha2::{Digest, Sha256};

const BLOCK: usize = 1 << 20;

/// Lower-case hex, as stored in the `sha256` metadata.
pub fn hex(digest: &[u8]) -> String {
    use std::fmt::Write;
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub fn of_bytes(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Hashes a file on a blocking thread. Returns the hash and the number of bytes read.
pub async fn of_file(path: &FsPath) -> std::io::Result<(String, u64)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; BLOCK];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            total += n as u64;
        }
        Ok((hex(&hasher.finalize()), total))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Downloads an object as a stream and hashes it, holding one network chunk at a time.
pub async fn of_object(store: &dyn ObjectStore, location: &Path) -> object_store::Result<String> {
    let mut stream = store
        .get_opts(location, Default::default())
        .await?
        .into_stream();
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.next().await {
        hasher.update(&chunk?);
    }
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_matches_the_well_known_empty_digest() {
        assert_eq!(
            super::of_bytes(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
