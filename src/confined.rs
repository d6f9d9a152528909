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

/// The real path of a boot-file directory, resolved once by whoever serves
/// it (a directory that does not exist yet is kept as written and resolved
/// again when a name under it seems outside).
pub fn real_root(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Whether `real` (a resolved path) lies under `root` (from [`real_root`]).
fn under(root: &Path, real: &Path) -> bool {
    real.starts_with(root) || std::fs::canonicalize(root).is_ok_and(|r| real.starts_with(r))
}

/// Opens `path` (a name under `root`, from [`real_root`]) if it is a
/// regular file whose real path lies under `root`. Never blocks on a FIFO.
pub fn open_under(root: &Path, path: &Path) -> Result<(File, Metadata), OpenError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(not_found_or)?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .or_else(|_| std::fs::canonicalize(path))
        .map_err(not_found_or)?;
    if !under(root, &real) {
        return Err(OpenError::Outside(real));
    }
    let meta = file.metadata().map_err(OpenError::Io)?;
    if !meta.is_file() {
        return Err(OpenError::NotFound);
    }
    Ok((file, meta))
}

/// Where `path` leads if it exists and resolves outside `root` (from
/// [`real_root`]); `None` for a name inside, or a missing one (whoever
/// serves it answers 404).
pub fn escapes(root: &Path, path: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(path).ok()?;
    (!under(root, &real)).then_some(real)
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
    let root = real_root(root);
    names
        .iter()
        .filter_map(|name| Some((name.to_string(), escapes(&root, &root.join(name))?)))
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
            assert!(escapes(&root, &root.join(name)).is_some(), "{name}");
        }
        assert!(matches!(
            open_under(&root, &root.join("sub")),
            Err(OpenError::NotFound)
        ));
        assert!(matches!(
            open_under(&root, &root.join("missing")),
            Err(OpenError::NotFound)
        ));
        assert!(escapes(&root, &root.join("missing")).is_none());
        let out = links_out(&root, &["filelink", "inlink", "missing"]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "filelink");
        assert!(check_mounts(&root.join("sub"), &[("boot.assets_dir", &root)]).is_err());
        assert!(check_mounts(top.path(), &[("boot.assets_dir", &root)]).is_ok());
    }
}
