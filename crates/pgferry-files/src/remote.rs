//! What the destination holds: one listing up front (a map from relative path to size and
//! time, about 100 bytes per object), and the stored checksum of one object on demand.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{Attribute, GetOptions};

use crate::{Destination, FilesError, SHA256_METADATA_KEY};

#[derive(Debug, Clone)]
pub(crate) struct RemoteObject {
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// Lists every object under the destination's prefix.
pub(crate) async fn list(dest: &Destination) -> Result<HashMap<String, RemoteObject>, FilesError> {
    let mut objects = HashMap::new();
    let mut stream = dest.store.list(Some(&dest.prefix));
    while let Some(meta) = stream
        .try_next()
        .await
        .map_err(|e| dest.store_error("cannot list", &e))?
    {
        if let Some(relative) = dest.relative(&meta.location) {
            objects.insert(
                relative.to_string(),
                RemoteObject {
                    size: meta.size,
                    last_modified: meta.last_modified,
                },
            );
        }
    }
    Ok(objects)
}

/// The SHA-256 stored with an object at upload, if any.
pub(crate) async fn stored_sha256(
    dest: &Destination,
    location: &Path,
) -> Result<Option<String>, FilesError> {
    let options = GetOptions {
        head: true,
        ..Default::default()
    };
    let result =
        dest.store.get_opts(location, options).await.map_err(|e| {
            dest.store_error(&format!("cannot read the metadata of {location} in"), &e)
        })?;
    Ok(result
        .attributes
        .get(&Attribute::Metadata(SHA256_METADATA_KEY.into()))
        .map(|v| v.as_ref().to_ascii_lowercase()))
}
