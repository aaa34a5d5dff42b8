//! The workspace: the host directory mounted at [`WORKSPACE`] in the container.
//!
//! [`Workspace`] owns the directory's creation, permissions and teardown, the safe writing of
//! code files into it, and the mapping between workspace-relative, host and container paths.
//! The container can change anything inside it (plant links, swap directories), so nothing
//! here follows a path out of it.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};

use crate::error::{Error, Result};

/// Where the workspace is mounted inside the container.
pub const WORKSPACE: &str = "/workspace";
/// dockexec's own directory inside the workspace, for the runners that keep state there.
pub(crate) const STATE_DIR: &str = ".dockexec";

/// The host side of `/workspace`.
#[derive(Debug)]
pub(crate) struct Workspace {
    /// Canonical, so that "inside the workspace" can be checked by prefix.
    path: PathBuf,
    /// Created by dockexec (and removed at teardown), not given by the user.
    temp: bool,
}

impl Workspace {
    /// Opens the user's `dir` (created if missing), or creates a fresh temporary directory
    /// named `dockexec-<id>` that the block user `block` (numeric uid and gid, when known) can
    /// write and other host users cannot read.
    ///
    /// A temporary directory is mode `0711`: its owner (the block user) has it whole, while
    /// everyone else may only pass through it, which the container's root processes need (with
    /// no capabilities they are "everyone else") to reach dockexec's state dir. Its owner is
    /// the block user when that is dockexec's own user, or when dockexec runs as root (which
    /// may hand the directory over). Otherwise (a named user such as the image's `app`, whose
    /// uid only the image knows, or another uid than ours without root) no owner can be
    /// given, and the directory is `1777` like `/tmp`: every host user can then read and
    /// write it, the price of a block user we cannot name on the host. A user-given `dir` that
    /// dockexec creates is given the same way; one that exists is left as it is, and must
    /// already suit the block user.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be created or resolved.
    pub(crate) fn create(
        dir: Option<&Path>,
        id: &str,
        block: Option<(u32, Option<u32>)>,
    ) -> Result<Workspace> {
        match dir {
            Some(dir) => {
                let existed = dir.exists();
                fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                let path = fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
                if !existed {
                    grant(&path, block)?;
                }
                Ok(Workspace { path, temp: false })
            }
            None => {
                let dir = std::env::temp_dir().join(format!("dockexec-{id}"));
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|e| Error::io(&dir, e))?;
                let ws = Workspace {
                    path: fs::canonicalize(&dir).map_err(|e| Error::io(&dir, e))?,
                    temp: true,
                };
                grant(&ws.path, block)?;
                Ok(ws)
            }
        }
    }

    /// The directory on the host.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// True when dockexec created the directory (and removes it at teardown).
    pub(crate) fn is_temp(&self) -> bool {
        self.temp
    }

    /// A workspace-relative path as the container sees it.
    pub(crate) fn container_path(rel: &Path) -> String {
        format!("{WORKSPACE}/{}", rel.to_string_lossy())
    }

    /// Writes a code file inside the workspace without ever following a symlink.
    ///
    /// The container can create links in the shared workspace, and swap a directory for one
    /// at any moment (issue 9, defect 3): a name like `x/passwd` where `x -> /etc` must never
    /// write on the host, not even for the instant between a check and a write. So no path
    /// inside the workspace is ever resolved by name: the walk opens one component at a time
    /// relative to the directory before it (`openat` with `O_NOFOLLOW | O_DIRECTORY`, creating
    /// a missing one with `mkdirat`), and a link anywhere fails the write. The file is created
    /// under a fresh temporary name in the last directory's fd (`O_CREAT | O_EXCL |
    /// O_NOFOLLOW`) and renamed into place there (a rename replaces a link, it does not follow
    /// it). A directory fd stays inside the workspace even if the container moves the
    /// directory: a rename cannot leave the bind mount. This gives what `openat2`'s
    /// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` gives, on every kernel, and the missing levels
    /// have to be made one by one anyway.
    ///
    /// Returns the file's host path, for display only: [`remove_code_file`](Self::remove_code_file)
    /// takes the relative one.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a name that is not a plain relative path; [`Error::Io`] when
    /// a directory or the file cannot be written, including when a component is a link
    /// ("too many levels of symbolic links" or "not a directory").
    pub(crate) fn write_code_file(&self, rel: &Path, code: &str) -> Result<PathBuf> {
        let final_path = self.path.join(rel);
        let (parent, name) = self
            .open_parent(rel, true)
            .map_err(|e| e.into_error(&final_path))?;
        let tmp = format!(
            ".{}.dockexec-{}",
            name.to_string_lossy(),
            crate::orphans::random_id()
        );
        let write = || -> std::io::Result<()> {
            let fd = rfs::openat(
                &parent,
                tmp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )?;
            fs::File::from(fd).write_all(code.as_bytes())?;
            rfs::renameat(&parent, tmp.as_str(), &parent, name)?;
            Ok(())
        };
        write().map_err(|e| {
            let _ = rfs::unlinkat(&parent, tmp.as_str(), rfs::AtFlags::empty());
            Error::io(&final_path, e)
        })?;
        Ok(final_path)
    }

    /// Removes a code file [`write_code_file`](Self::write_code_file) wrote, by the same
    /// link-free walk: if the container made any directory on the way a link, nothing is
    /// removed (a link in the file's own place is removed itself, never its target).
    pub(crate) fn remove_code_file(&self, rel: &Path) {
        if let Ok((parent, name)) = self.open_parent(rel, false) {
            let _ = rfs::unlinkat(&parent, name, rfs::AtFlags::empty());
        }
    }

    /// Opens the directory that holds `rel` by a walk that follows no link (see
    /// [`write_code_file`](Self::write_code_file)), creating missing levels if `create`;
    /// returns it with the file's name.
    fn open_parent<'a>(
        &self,
        rel: &'a Path,
        create: bool,
    ) -> std::result::Result<(OwnedFd, &'a OsStr), WalkError> {
        let not_plain = || WalkError::Invalid(format!("not a file name: {}", rel.display()));
        let name = match rel.components().next_back() {
            Some(Component::Normal(name)) => name,
            _ => return Err(not_plain()),
        };
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut dir = rfs::openat(rfs::CWD, &self.path, dir_flags, Mode::empty())
            .map_err(|e| WalkError::Io(e.into()))?;
        for part in rel.parent().into_iter().flat_map(Path::components) {
            let Component::Normal(part) = part else {
                return Err(not_plain());
            };
            if create {
                match rfs::mkdirat(&dir, part, Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(WalkError::Io(e.into())),
                }
            }
            dir = rfs::openat(&dir, part, dir_flags, Mode::empty()).map_err(|e| match e {
                rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => WalkError::Invalid(format!(
                    "filename is not in the workspace: {} passes through {:?}, a symbolic \
                     link or not a directory (dockexec never writes through a link there)",
                    rel.display(),
                    Path::new(part),
                )),
                e => WalkError::Io(e.into()),
            })?;
        }
        Ok((dir, name))
    }

    /// Removes what dockexec put here: a temporary workspace whole; otherwise the `.dockexec`
    /// state dir that versions before the root-only `/run/dockexec` kept markers in, if empty
    /// (`rmdir` never follows a link). No runner keeps state in the workspace any more.
    pub(crate) fn teardown(&self) {
        if self.temp {
            let _ = fs::remove_dir_all(&self.path);
        } else {
            let _ = fs::remove_dir(self.path.join(STATE_DIR));
        }
    }
}

/// Why a walk beneath the workspace failed.
enum WalkError {
    /// The name is not a plain relative path.
    Invalid(String),
    /// A component could not be made or opened (a link among them).
    Io(std::io::Error),
}

impl WalkError {
    fn into_error(self, path: &Path) -> Error {
        match self {
            WalkError::Invalid(msg) => Error::invalid(msg),
            WalkError::Io(e) => Error::io(path, e),
        }
    }
}

/// Gives a directory dockexec created to the block user: see [`Workspace::create`].
fn grant(path: &Path, block: Option<(u32, Option<u32>)>) -> Result<()> {
    let (uid, gid) = crate::executor::host_ids();
    let owned = match block {
        Some((u, _)) if u == uid => true,
        Some((u, g)) if uid == 0 => {
            std::os::unix::fs::chown(path, Some(u), g.or(Some(gid))).is_ok()
        }
        _ => false,
    };
    let mode = if owned { 0o711 } else { 0o1777 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| Error::io(path, e))
}

/// Normalises a block's requested file name to a relative path that stays inside the
/// workspace, and out of dockexec's own state dir.
///
/// # Errors
/// [`Error::InvalidInput`] "filename is not in the workspace" for an absolute path or one whose
/// `..` climbs out; likewise for a path inside the state dir.
pub(crate) fn workspace_relative(name: &str) -> Result<PathBuf> {
    let refuse = || Error::invalid(format!("filename is not in the workspace: {name:?}"));
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(refuse());
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(refuse()),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(refuse());
    }
    let first = out
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy());
    if first.is_some_and(|f| f.eq_ignore_ascii_case(STATE_DIR)) {
        return Err(Error::invalid(format!(
            "filename {name:?} is inside dockexec's own {STATE_DIR} directory"
        )));
    }
    Ok(out)
}

/// A container path (absolute, or relative to [`WORKSPACE`]) as (directory, file name).
///
/// # Errors
/// [`Error::InvalidInput`] for a path without a file name.
pub(crate) fn split_container_path(path: &str) -> Result<(String, String)> {
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{WORKSPACE}/{path}")
    };
    match full.rsplit_once('/') {
        Some((dir, name)) if !name.is_empty() && name != "." && name != ".." => {
            let dir = if dir.is_empty() { "/" } else { dir };
            Ok((dir.to_string(), name.to_string()))
        }
        _ => Err(Error::invalid(format!("not a file path: {path:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names_stay_inside() {
        assert_eq!(
            workspace_relative("./a/../b.py").unwrap(),
            Path::new("b.py")
        );
        for bad in ["/etc/passwd", "../x.py", "a/../../x.py", "", "."] {
            assert!(workspace_relative(bad).is_err(), "{bad}");
        }
        assert!(workspace_relative(".dockexec/x.pid").is_err());
        // On a case-insensitive host file system (macOS) this is the state dir too.
        assert!(workspace_relative(".DOCKEXEC/x.pid").is_err());
    }

    #[test]
    fn code_files_never_go_through_a_link() {
        let base =
            std::env::temp_dir().join(format!("dockexec-unit-{}", crate::orphans::random_id()));
        let (inside, outside) = (base.join("ws"), base.join("out"));
        fs::create_dir_all(&inside).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("x.py"), "host").unwrap();
        std::os::unix::fs::symlink(&outside, inside.join("sub")).unwrap();
        let ws = Workspace {
            path: fs::canonicalize(&inside).unwrap(),
            temp: false,
        };
        let err = ws
            .write_code_file(Path::new("sub/x.py"), "evil")
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        ws.remove_code_file(Path::new("sub/x.py"));
        assert_eq!(fs::read_to_string(outside.join("x.py")).unwrap(), "host");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
        // Through real directories it works, and the removal finds the file again.
        let file = ws.write_code_file(Path::new("a/b/x.py"), "ok").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "ok");
        ws.remove_code_file(Path::new("a/b/x.py"));
        assert!(!file.exists());
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn container_paths_split() {
        assert_eq!(
            split_container_path("a/b.txt").unwrap(),
            ("/workspace/a".into(), "b.txt".into())
        );
        assert_eq!(
            split_container_path("/x").unwrap(),
            ("/".into(), "x".into())
        );
        assert!(split_container_path("/tmp/").is_err());
        assert!(split_container_path("a/..").is_err());
    }
}
