//! Boot files confined to their directory: the one rule every way of
//! serving a file (TFTP, the HTTP front's `sendfile`, the router's
//! `ServeDir`) applies before a byte leaves.
//!
//! A name is served only if the file it resolves to, symbolic links
//! followed, lies under the real path of its directory. A link inside a
//! boot-file directory that points elsewhere (`assets/dirlink ->
//! /var/lib/racklift`) serves nothing, so the data directory, which never
//! lies under a boot-file directory ([`check_mounts`]), is never served.
//! Where a descriptor is opened, the check is made on the open descriptor
//! (its `/proc/self/fd` link), so a link swapped between the check and the
//! open cannot slip through.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a file was not opened.
#[derive(Debug)]
pub enum OpenError {
    /// No such file, or not a regular file.
    NotFound,
    /// It resolves outside its directory.
    Outside(PathBuf),
    Io(io::Error),
}

fn not_found_or(e: io::Error) -> OpenError {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => OpenError::NotFound,
        _ => OpenError::Io(e),
    }
}

/// Opens `path` (a name under `root`) if it is a regular file whose real
/// path lies under `root`'s real path. Never blocks on a FIFO.
pub fn open_under(root: &Path, path: &Path) -> Result<(File, Metadata), OpenError> {
    let root = std::fs::canonicalize(root).map_err(not_found_or)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(not_found_or)?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .or_else(|_| std::fs::canonicalize(path))
        .map_err(not_found_or)?;
    if !real.starts_with(&root) {
        return Err(OpenError::Outside(real));
    }
    let meta = file.metadata().map_err(OpenError::Io)?;
    if !meta.is_file() {
        return Err(OpenError::NotFound);
    }
    Ok((file, meta))
}

/// Whether `path` exists and resolves outside `root` (a missing name is not
/// outside: whoever serves it answers 404).
pub fn escapes(root: &Path, path: &Path) -> bool {
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    match std::fs::canonicalize(root) {
        Ok(root) => !real.starts_with(root),
        Err(_) => true,
    }
}

/// Refuses a configuration under which the data directory would lie inside
/// a boot-file directory (and so be served): `(key, dir)` per mount.
pub fn check_mounts(data_dir: &Path, mounts: &[(&str, &Path)]) -> Result<(), String> {
    let Ok(data) = std::fs::canonicalize(data_dir) else {
        return Ok(());
    };
    for (key, dir) in mounts {
        if let Ok(dir) = std::fs::canonicalize(dir)
            && data.starts_with(&dir)
        {
            return Err(format!(
                "{key} ({}) contains the data directory ({}): its key and database would be served; \
                 point {key} at a directory of its own",
                dir.display(),
                data.display()
            ));
        }
    }
    Ok(())
}

/// The names of `names` under `root` that are links resolving outside it
/// (with where they lead): files that will not be served.
pub fn links_out(root: &Path, names: &[&str]) -> Vec<(String, PathBuf)> {
    names
        .iter()
        .filter_map(|name| {
            let path = root.join(name);
            if !escapes(root, &path) {
                return None;
            }
            Some((name.to_string(), std::fs::canonicalize(&path).ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_out_of_the_root_are_refused() {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("assets");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/in.img"), b"in").unwrap();
        std::fs::write(top.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(top.path(), root.join("dirlink")).unwrap();
        std::os::unix::fs::symlink(top.path().join("secret"), root.join("filelink")).unwrap();
        std::os::unix::fs::symlink("sub/in.img", root.join("inlink")).unwrap();
        assert!(open_under(&root, &root.join("sub/in.img")).is_ok());
        assert!(open_under(&root, &root.join("inlink")).is_ok());
        for name in ["dirlink/secret", "filelink"] {
            assert!(
                matches!(
                    open_under(&root, &root.join(name)),
                    Err(OpenError::Outside(_))
                ),
                "{name}"
            );
            assert!(escapes(&root, &root.join(name)), "{name}");
        }
        assert!(matches!(
            open_under(&root, &root.join("sub")),
            Err(OpenError::NotFound)
        ));
        assert!(matches!(
            open_under(&root, &root.join("missing")),
            Err(OpenError::NotFound)
        ));
        assert!(!escapes(&root, &root.join("missing")));
        let out = links_out(&root, &["filelink", "inlink", "missing"]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "filelink");
        assert!(check_mounts(&root.join("sub"), &[("boot.assets_dir", &root)]).is_err());
        assert!(check_mounts(top.path(), &[("boot.assets_dir", &root)]).is_ok());
    }
}
