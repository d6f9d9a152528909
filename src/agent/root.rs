//! Reading the machine's files under a root directory (`/` on a real machine,
//! a captured tree in tests), with optional capture of everything read.
//!
//! Symlinks are resolved one component at a time, so a captured tree keeps the
//! links the collectors followed (`/sys/block/vda` -> `../devices/...`) and the
//! collectors see the same paths on the machine and on its capture.

use std::path::{Component, Path, PathBuf};

/// The file system the collectors read.
#[derive(Debug, Clone)]
pub struct Root {
    base: PathBuf,
    capture: Option<PathBuf>,
}

/// How many symlinks one resolution may follow.
const MAX_LINKS: usize = 40;

impl Root {
    /// Reads the machine under `base` (`/` for the running machine).
    pub fn new(base: impl Into<PathBuf>) -> Root {
        Root {
            base: base.into(),
            capture: None,
        }
    }

    /// Also copies every file and link read into `dir` (a fixture in the making).
    pub fn capturing(mut self, dir: impl Into<PathBuf>) -> Root {
        self.capture = Some(dir.into());
        self
    }

    /// Where `p` is on this machine's file system.
    pub fn host(&self, p: &str) -> PathBuf {
        self.base.join(p.trim_start_matches('/'))
    }

    /// Copies what was read at `p` into the capture, at its resolved place,
    /// together with every link on the way there.
    fn keep(&self, p: &str, what: Keep<'_>) {
        let Some(dir) = &self.capture else { return };
        let path = Path::new(p);
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return;
        };
        let Some(real_parent) = self.walk(&parent.to_string_lossy(), Some(dir)) else {
            return;
        };
        let dest = dir.join(real_parent.trim_start_matches('/')).join(name);
        let _ = std::fs::create_dir_all(dest.parent().unwrap_or(dir));
        let _ = match what {
            Keep::Bytes(b) => std::fs::write(&dest, b),
            Keep::Link(target) => {
                let _ = std::fs::remove_file(&dest);
                std::os::unix::fs::symlink(target, &dest)
            }
            Keep::Dir => std::fs::create_dir_all(&dest),
        };
    }

    /// A file's bytes.
    pub fn bytes(&self, p: &str) -> Option<Vec<u8>> {
        let b = std::fs::read(self.host(p)).ok()?;
        self.keep(p, Keep::Bytes(&b));
        Some(b)
    }

    /// A text file, trimmed; None when absent, unreadable or empty.
    pub fn text(&self, p: &str) -> Option<String> {
        let b = self.bytes(p)?;
        let s = String::from_utf8_lossy(&b).trim().to_string();
        (!s.is_empty()).then_some(s)
    }

    /// Whether a path exists (a link is not followed out of the root).
    pub fn exists(&self, p: &str) -> bool {
        let found = std::fs::symlink_metadata(self.host(p)).is_ok();
        if found && self.capture.is_some() {
            match std::fs::read_link(self.host(p)) {
                Ok(t) => self.keep(p, Keep::Link(&t)),
                Err(_) if self.host(p).is_dir() => self.keep(p, Keep::Dir),
                Err(_) => {}
            }
        }
        found
    }

    /// The names in a directory, sorted; empty when absent.
    pub fn list(&self, p: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.host(p))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// A symlink's target, as written.
    pub fn link(&self, p: &str) -> Option<String> {
        let t = std::fs::read_link(self.host(p)).ok()?;
        self.keep(p, Keep::Link(&t));
        Some(t.to_string_lossy().into_owned())
    }

    /// The last component of a symlink's target (`driver` -> `virtio_net`).
    pub fn link_name(&self, p: &str) -> Option<String> {
        let t = self.link(p)?;
        t.rsplit('/').next().map(str::to_string)
    }

    /// The path with every symlink resolved inside the root (absolute, `/`-based).
    pub fn resolve(&self, p: &str) -> Option<String> {
        self.walk(p, self.capture.as_deref())
    }

    /// Resolves `p` one component at a time, copying each link met into `capture`.
    fn walk(&self, p: &str, capture: Option<&Path>) -> Option<String> {
        let mut done: Vec<String> = Vec::new();
        let mut todo: Vec<String> = split(p).into_iter().rev().collect();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            done.push(c);
            let here = format!("/{}", done.join("/"));
            let meta = std::fs::symlink_metadata(self.host(&here)).ok()?;
            if meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return None;
                }
                let target = std::fs::read_link(self.host(&here)).ok()?;
                if let Some(dir) = capture {
                    // `done` holds no links: its parent is a real directory.
                    let dest = dir.join(here.trim_start_matches('/'));
                    if let Some(d) = dest.parent() {
                        let _ = std::fs::create_dir_all(d);
                    }
                    let _ = std::fs::remove_file(&dest);
                    let _ = std::os::unix::fs::symlink(&target, &dest);
                }
                let target = target.to_string_lossy().into_owned();
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                todo.extend(split(&target).into_iter().rev());
            }
        }
        Some(format!("/{}", done.join("/")))
    }
}

enum Keep<'a> {
    Bytes(&'a [u8]),
    Link(&'a Path),
    Dir,
}

fn split(p: &str) -> Vec<String> {
    Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            Component::CurDir => Some(".".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_links_inside_the_root_and_captures_them() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("m");
        std::fs::create_dir_all(r.join("sys/devices/pci0000:00/0000:00:04.0/block/vda")).unwrap();
        std::fs::create_dir_all(r.join("sys/block")).unwrap();
        std::os::unix::fs::symlink(
            "../devices/pci0000:00/0000:00:04.0/block/vda",
            r.join("sys/block/vda"),
        )
        .unwrap();
        std::fs::write(
            r.join("sys/devices/pci0000:00/0000:00:04.0/block/vda/size"),
            "8\n",
        )
        .unwrap();
        let cap = t.path().join("cap");
        let root = Root::new(&r).capturing(&cap);
        assert_eq!(
            root.resolve("/sys/block/vda/size").as_deref(),
            Some("/sys/devices/pci0000:00/0000:00:04.0/block/vda/size")
        );
        assert_eq!(root.text("/sys/block/vda/size").as_deref(), Some("8"));
        let again = Root::new(&cap);
        assert_eq!(again.text("/sys/block/vda/size").as_deref(), Some("8"));
        assert_eq!(root.resolve("/nothing/here"), None);
    }
}
