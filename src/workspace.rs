//! The workspace: the host directory mounted at [`WORKSPACE`] in the container.
//!
//! [`Workspace`] owns the directory's creation, permissions and teardown, the safe writing of
//! code files into it, and the mapping between workspace-relative, host and container paths.
//! The container can change anything inside it (plant links, swap directories), so nothing
//! here follows a path out of it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

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

    /// dockexec's state dir on the host, created (sticky and world-writable, like `/tmp`, so
    /// that blocks of any user can use it) if missing.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be created.
    pub(crate) fn state_dir(&self) -> Result<PathBuf> {
        let state = self.path.join(STATE_DIR);
        fs::create_dir_all(&state)
            .and_then(|_| fs::set_permissions(&state, fs::Permissions::from_mode(0o1777)))
            .map_err(|e| Error::io(&state, e))?;
        Ok(state)
    }

    /// The state dir's path inside the container.
    pub(crate) fn container_state_dir() -> String {
        format!("{WORKSPACE}/{STATE_DIR}")
    }

    /// A workspace-relative path as the container sees it.
    pub(crate) fn container_path(rel: &Path) -> String {
        format!("{WORKSPACE}/{}", rel.to_string_lossy())
    }

    /// Writes a code file inside the workspace without ever following a symlink out of it.
    ///
    /// The container can create symlinks in the shared workspace; a name like `x/passwd` where
    /// `x -> /etc` must not write on the host. Each parent directory is created one level at a
    /// time and resolved before the next is made, so nothing is ever created through a link
    /// that leads out; the file is written to a fresh temporary name (`create_new`, which does
    /// not follow a symlink) and renamed into place (rename replaces a link, it does not follow
    /// it).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a parent resolves outside the workspace; [`Error::Io`]
    /// when a directory or the file cannot be written.
    pub(crate) fn write_code_file(&self, rel: &Path, code: &str) -> Result<PathBuf> {
        let outside = || {
            Error::invalid(format!(
                "filename is not in the workspace: {} resolves outside it",
                rel.display()
            ))
        };
        let file_name = rel
            .file_name()
            .ok_or_else(|| Error::invalid(format!("not a file name: {}", rel.display())))?;
        let mut real_parent = self.path.clone();
        for part in rel.parent().into_iter().flat_map(Path::components) {
            let next = real_parent.join(part);
            match fs::create_dir(&next) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(&next, e)),
            }
            real_parent = fs::canonicalize(&next).map_err(|e| Error::io(&next, e))?;
            if !real_parent.starts_with(&self.path) {
                return Err(outside());
            }
        }
        let final_path = real_parent.join(file_name);
        let tmp = real_parent.join(format!(
            ".{}.dockexec-{}",
            file_name.to_string_lossy(),
            crate::orphans::random_id()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)?;
            f.write_all(code.as_bytes())?;
            fs::rename(&tmp, &final_path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(&final_path, e)
        })?;
        Ok(final_path)
    }

    /// Removes what dockexec put here: a temporary workspace whole; otherwise the state dir,
    /// if empty (another executor sharing the work dir may still use it). Runners remove their
    /// own files from the state dir first.
    pub(crate) fn teardown(&self) {
        if self.temp {
            let _ = fs::remove_dir_all(&self.path);
        } else {
            let _ = fs::remove_dir(self.path.join(STATE_DIR));
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
