//! `GET /assets/ramdisk/{vmlinuz,initrd.img}`: the inventory ramdisk, served
//! from `boot.ramdisk_dir` to machines that iPXE told to fetch it.
//!
//! Both files are read once and kept in memory while their size and time stay
//! the same, so a rack booting at once costs one copy, not one per machine.

use super::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

/// The files a ramdisk has.
const FILES: [&str; 2] = ["vmlinuz", "initrd.img"];

type Cached = (SystemTime, u64, Bytes);

static CACHE: Mutex<Option<HashMap<PathBuf, Cached>>> = Mutex::new(None);

#[utoipa::path(get, path = "/assets/ramdisk/{file}", params(("file" = String, Path, description = "vmlinuz or initrd.img")),
    responses((status = 200, description = "The file", content_type = "application/octet-stream"), (status = 404, description = "No such file, or the ramdisk is not built")))]
pub(super) async fn ramdisk(
    State(app): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    if !FILES.contains(&file.as_str()) {
        return Err(ApiError::not_found(format!(
            "'{file}' is not part of the ramdisk (vmlinuz, initrd.img)"
        )));
    }
    let path = app.cfg.boot.ramdisk_dir.join(&file);
    let meta = tokio::fs::metadata(&path).await.map_err(|e| {
        ApiError::not_found(format!(
            "{}: {e}; build the ramdisk with boot-assets/build-ramdisk.sh",
            path.display()
        ))
    })?;
    let stamp = (
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        meta.len(),
    );
    let hit = CACHE
        .lock()
        .ok()
        .and_then(|c| c.as_ref()?.get(&path).cloned())
        .filter(|(t, n, _)| (*t, *n) == stamp)
        .map(|(_, _, b)| b);
    let bytes = match hit {
        Some(b) => b,
        None => {
            let b = Bytes::from(
                tokio::fs::read(&path)
                    .await
                    .map_err(|e| ApiError::not_found(format!("{}: {e}", path.display())))?,
            );
            if let Ok(mut c) = CACHE.lock() {
                c.get_or_insert_with(HashMap::new)
                    .insert(path, (stamp.0, stamp.1, b.clone()));
            }
            b
        }
    };
    app.metrics.count("ramdisk_downloads");
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
