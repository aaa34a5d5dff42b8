//! The workspace: what is mounted at [`WORKSPACE`] in the container. On an engine that shares
//! this host's filesystem, a host directory; on one that does not
//! ([`Engine::host_filesystem_shared`](crate::Engine::host_filesystem_shared)), a tmpfs volume
//! that lives on the engine's side only ([`Workspace::in_container`]), and nothing of this
//! host is mounted.
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
use crate::spec::WorkspaceMount;

pub use crate::spec::WORKSPACE;
/// dockexec's own directory inside the workspace, for the runners that keep state there.
pub(crate) const STATE_DIR: &str = ".dockexec";

/// The host side of `/workspace`, or the options of the engine-side tmpfs that is
/// `/workspace` when there is no host side.
#[derive(Debug)]
pub(crate) struct Workspace {
    /// Canonical, so that "inside the workspace" can be checked by prefix. `None`: the
    /// workspace lives in the container (see [`Workspace::in_container`]).
    path: Option<PathBuf>,
    /// With no host side, the tmpfs mount options of the engine-side volume.
    tmpfs: Option<String>,
    /// Created by dockexec (and removed at teardown), not given by the user.
    temp: bool,
    /// A temporary directory's own fd, holding an exclusive `flock` on it for the workspace's
    /// whole life: the sign that its owner lives (see [`sweep_temp_dirs`]). Released when the
    /// workspace drops, after [`teardown`](Self::teardown) removed the directory, or when the
    /// process dies, however it dies.
    _alive: Option<fs::File>,
}

/// The temporary directories dockexec creates: `dockexec-<16 hex digits>` under the host's
/// temp dir, and, while one is being created, `dockexec-<id>.new`.
const TEMP_PREFIX: &str = "dockexec-";
const STAGING_SUFFIX: &str = ".new";
/// How old an unlocked staging dir must be before a sweep takes it: its creator locks it
/// microseconds after making it, so only a creator killed in that gap leaves one.
pub(crate) const STAGING_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

impl Workspace {
    /// Opens the user's `dir` (created if missing), or creates a fresh temporary directory
    /// named `dockexec-<id>` that the block user `block` (numeric uid and gid, when known) can
    /// write and other host users cannot read.
    ///
    /// A temporary directory is mode `0711`: its owner (the block user) has it whole, while
    /// everyone else may only pass through it, which the container's root processes need (with
    /// no capabilities they are "everyone else") to enter it: it is their working dir (the
    /// keeper's, the kill script's, the agent's). Its owner is
    /// the block user when that is dockexec's own user, or when dockexec runs as root (which
    /// may hand the directory over). Otherwise (a named user such as the image's `app`, whose
    /// uid only the image knows, or another uid than ours without root) no owner can be
    /// given, and the directory is `1777` like `/tmp`: every host user can then read and
    /// write it, the price of a block user we cannot name on the host. A user-given `dir` that
    /// dockexec creates is given the same way; one that exists is left as it is, and must
    /// already suit the block user.
    ///
    /// A temporary directory stays locked (an exclusive `flock` on the directory itself) until
    /// the workspace drops, so that [`sweep_temp_dirs`] can tell a dead owner's from a live
    /// one's: see there.
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
                Ok(Workspace {
                    path: Some(path),
                    tmpfs: None,
                    temp: false,
                    _alive: None,
                })
            }
            None => create_temp(id, block),
        }
    }

    /// A workspace with no host side, for an engine that does not see this host's files: a
    /// tmpfs of `size` bytes (`None`: the kernel's default, half the engine host's memory)
    /// that the engine mounts as an anonymous volume, `nosuid`, `nodev`, executables allowed
    /// as in a host work dir. Nothing is created on this host.
    ///
    /// It is the block user's, mode `0711`, as a temporary host work dir is (see
    /// [`create`](Self::create)), when that user is numeric (`block`); a named user (the
    /// image's `app`), whose uid only the image knows, gets `1777`, like `/tmp`. Its pages
    /// count against the memory limit of the process that writes them: the blocks'
    /// container.
    pub(crate) fn in_container(size: Option<u64>, block: Option<(u32, Option<u32>)>) -> Workspace {
        let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
        match block {
            Some((uid, gid)) => {
                options.push(format!("uid={uid}"));
                options.extend(gid.map(|g| format!("gid={g}")));
                options.push("mode=0711".into());
            }
            None => options.push("mode=1777".into()),
        }
        options.extend(size.map(|s| format!("size={s}")));
        Workspace {
            path: None,
            tmpfs: Some(options.join(",")),
            temp: false,
            _alive: None,
        }
    }

    /// The directory on the host; `None` when the workspace lives in the container.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What the container mounts at [`WORKSPACE`]; `bind_dir` is the host directory's path as
    /// the daemon sees it, when that differs.
    pub(crate) fn mount(&self, bind_dir: Option<&Path>) -> WorkspaceMount {
        match (&self.path, &self.tmpfs) {
            (Some(path), _) => WorkspaceMount::Host(bind_dir.unwrap_or(path).to_path_buf()),
            (None, options) => WorkspaceMount::Engine(options.clone().unwrap_or_default()),
        }
    }

    /// The code file `rel` as shown to the caller ([`Output::code_file`](crate::Output)): its
    /// host path, or its path in the container when the workspace lives there.
    pub(crate) fn shown_path(&self, rel: &Path) -> PathBuf {
        match &self.path {
            Some(path) => path.join(rel),
            None => PathBuf::from(Self::container_path(rel)),
        }
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
        let final_path = self.shown_path(rel);
        let (parent, name) = self
            .open_parent(rel, true)
            .map_err(|e| e.into_error(&final_path))?;
        let tmp = format!(
            ".{}.dockexec-{}",
            name.to_string_lossy(),
            crate::host::random_id()
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
        let Some(root) = &self.path else {
            return Err(WalkError::Invalid(
                "the workspace lives in the container: no host file to walk to".into(),
            ));
        };
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut dir = rfs::openat(rfs::CWD, root, dir_flags, Mode::empty())
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

    /// Removes what dockexec put here: nothing when the workspace lives in the container (it
    /// goes with the container); a temporary workspace whole; otherwise the `.dockexec`
    /// state dir that versions before the root-only `/run/dockexec` kept markers in, if empty
    /// (`rmdir` never follows a link). No runner keeps state in the workspace any more.
    ///
    /// The temporary directory's lock is still held here (it goes when the workspace drops),
    /// so no sweep can take the directory while it is being removed. `remove_dir_all` does
    /// not follow the links a block may have planted in it.
    pub(crate) fn teardown(&self) {
        let Some(path) = &self.path else {
            return;
        };
        if self.temp {
            let _ = remove_tree(path);
        } else {
            let _ = fs::remove_dir(path.join(STATE_DIR));
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
    let (uid, gid) = crate::host::ids();
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

/// Creates a temporary workspace `dockexec-<id>` under the host's temp dir, already locked:
/// see [`Workspace::create`].
///
/// A directory under the final name is locked from the moment it exists: it is made as
/// `dockexec-<id>.new`, locked, given to the block user, and only then renamed (the lock is on
/// the inode, so it follows). A sweep thus never sees an unlocked `dockexec-<id>` of a live
/// owner; an unlocked `.new` one is left alone for [`STAGING_GRACE`].
fn create_temp(id: &str, block: Option<(u32, Option<u32>)>) -> Result<Workspace> {
    let root = std::env::temp_dir();
    let root = fs::canonicalize(&root).map_err(|e| Error::io(&root, e))?;
    let staging = root.join(format!("{TEMP_PREFIX}{id}{STAGING_SUFFIX}"));
    let dir = root.join(format!("{TEMP_PREFIX}{id}"));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|e| Error::io(&staging, e))?;
    let made = || -> Result<fs::File> {
        let lock = open_dir(&staging).map_err(|e| Error::io(&staging, e))?;
        // Nobody else can hold it yet (the directory is ours and 0700); a refusal is an
        // error, never a wait.
        lock_now(&lock).map_err(|e| {
            Error::io(
                &staging,
                std::io::Error::other(format!("cannot lock the new work dir: {e}")),
            )
        })?;
        grant(&staging, block)?;
        fs::rename(&staging, &dir).map_err(|e| Error::io(&dir, e))?;
        Ok(lock)
    };
    match made() {
        Ok(lock) => Ok(Workspace {
            path: Some(dir),
            tmpfs: None,
            temp: true,
            _alive: Some(lock),
        }),
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Opens a directory for locking, never through a symlink and never anything else (a FIFO
/// planted under the name would block a plain open).
fn open_dir(path: &Path) -> std::io::Result<fs::File> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rfs::openat(rfs::CWD, path, flags, Mode::empty())?.into())
}

/// Takes the exclusive `flock` on `dir` without waiting: `WouldBlock` when another open file
/// (in this process or any other) holds it.
fn lock_now(dir: &fs::File) -> std::io::Result<()> {
    Ok(rfs::flock(
        dir,
        rfs::FlockOperation::NonBlockingLockExclusive,
    )?)
}

/// Removes the temporary workspaces whose owners are gone; returns their paths.
///
/// A candidate is a real directory (not a link) directly under the host's temp dir, named as
/// [`create_temp`] names them, and owned by this process's user (any owner when that is root,
/// which hands them to the block user). It is taken only when its `flock` can be had at once,
/// which means no live process holds it: the owner holds it for its executor's whole life,
/// and the kernel drops it when the owner dies, however it dies. A lock is on the inode, so
/// this holds across PID namespaces and needs no process table. The container, which could
/// take the lock through `/workspace`, cannot while the owner holds it, and dies with the
/// owner (its keeper), its fds with it. A staging dir (`.new`) is taken only after
/// [`STAGING_GRACE`]; one that `keep` names (the temporary work dir of a container that still
/// exists) is left for its container's sweep.
///
/// Removal is `remove_dir_all` on the path after checking that it is still the inode locked,
/// which removes links and does not follow them. Best effort: errors skip the directory.
pub(crate) fn sweep_temp_dirs(keep: &std::collections::HashSet<PathBuf>) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = fs::canonicalize(std::env::temp_dir()) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(&root) else {
        return Vec::new();
    };
    let (uid, _) = crate::host::ids();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(staging) = name.to_str().and_then(temp_dir_kind) else {
            continue;
        };
        let path = root.join(&name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || (uid != 0 && meta.uid() != uid) || keep.contains(&path) {
            continue;
        }
        if staging
            && meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_none_or(|age| age < STAGING_GRACE)
        {
            continue;
        }
        // A block may have closed the dir (`chmod 0 /workspace`): ours, it is opened up, or
        // its lock could never be tried and it would stay for ever. Its container is dead.
        let dir = match open_dir(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                // 0711, its mode at creation, should its owner still live.
                let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o711));
                open_dir(&path)
            }
            other => other,
        };
        let Ok(dir) = dir else {
            continue;
        };
        // Held until the removal is done: a second sweep then skips this directory.
        if lock_now(&dir).is_err() {
            continue; // Its owner lives.
        }
        // Still the directory locked, not one put in its place since the lstat.
        let same = |m: &fs::Metadata| m.dev() == meta.dev() && m.ino() == meta.ino();
        let still = dir.metadata().is_ok_and(|m| same(&m))
            && fs::symlink_metadata(&path).is_ok_and(|m| same(&m));
        if still && remove_tree(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Removes a temporary work dir and all in it, links included and never followed
/// (`remove_dir_all` removes a link, it does not follow it). A block may have closed
/// directories (`chmod 0`), which stops the removal for all but root: then those owned by this
/// user are opened up and the removal tried again. Call it only once the container's
/// processes are gone (it was removed, or its owner died), as modes are set by path.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            open_up(path, crate::host::ids().0, 0);
            fs::remove_dir_all(path)
        }
        _ => Ok(()),
    }
}

/// Gives this user `rwx` on `dir` and the directories under it that it owns, never through a
/// link; at most [`OPEN_UP_DEPTH`] levels (a deeper tree stays, as it would have).
fn open_up(dir: &Path, uid: u32, depth: usize) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if depth > OPEN_UP_DEPTH || !meta.is_dir() || (uid != 0 && meta.uid() != uid) {
        return;
    }
    if meta.mode() & 0o700 != 0o700 {
        let _ = fs::set_permissions(
            dir,
            fs::Permissions::from_mode((meta.mode() | 0o700) & 0o7777),
        );
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        // The entry's own type: a link to a directory is not one.
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            open_up(&e.path(), uid, depth + 1);
        }
    }
}

/// How deep [`open_up`] goes: a bound on its recursion, whatever a block built.
const OPEN_UP_DEPTH: usize = 256;

/// For a name [`create_temp`] gives: `Some(false)` for a work dir, `Some(true)` for a staging
/// dir; `None` for any other name.
fn temp_dir_kind(name: &str) -> Option<bool> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    let (id, staging) = match rest.strip_suffix(STAGING_SUFFIX) {
        Some(id) => (id, true),
        None => (rest, false),
    };
    (id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then_some(staging)
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
        let base = std::env::temp_dir().join(format!("dockexec-unit-{}", crate::host::random_id()));
        let (inside, outside) = (base.join("ws"), base.join("out"));
        fs::create_dir_all(&inside).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("x.py"), "host").unwrap();
        std::os::unix::fs::symlink(&outside, inside.join("sub")).unwrap();
        let ws = Workspace {
            path: Some(fs::canonicalize(&inside).unwrap()),
            tmpfs: None,
            temp: false,
            _alive: None,
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
    fn only_dockexec_temp_names_are_candidates() {
        assert_eq!(temp_dir_kind("dockexec-0123456789abcdef"), Some(false));
        assert_eq!(temp_dir_kind("dockexec-0123456789abcdef.new"), Some(true));
        for other in [
            "dockexec-0123456789ABCDEF",
            "dockexec-0123456789abcde",
            "dockexec-0123456789abcdef0",
            "dockexec-0123456789abcdef.old",
            "dockexec-test-1-2",
            "dockexec-",
            "x-0123456789abcdef",
        ] {
            assert_eq!(temp_dir_kind(other), None, "{other}");
        }
    }

    #[test]
    fn a_temp_workspace_is_locked_under_its_final_name() {
        let id = crate::host::random_id();
        let ws = Workspace::create(None, &id, None).unwrap();
        let path = ws.path().unwrap().to_path_buf();
        assert!(ws.is_temp() && path.is_dir());
        assert!(path.ends_with(format!("dockexec-{id}")));
        assert!(!path.with_extension("new").exists());
        let probe = fs::File::open(&path).unwrap();
        let held = lock_now(&probe).unwrap_err();
        assert_eq!(held.kind(), std::io::ErrorKind::WouldBlock, "{held}");
        ws.teardown();
        assert!(!path.exists());
        drop(ws);
        assert!(
            lock_now(&probe).is_ok(),
            "released when the workspace drops"
        );
    }

    #[test]
    fn closed_dirs_are_opened_up_without_following_links() {
        use std::os::unix::fs::symlink;
        let id = crate::host::random_id();
        let root = std::env::temp_dir().join(format!("dockexec-unit-{id}"));
        let outside = std::env::temp_dir().join(format!("dockexec-unit-{id}-outside"));
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(root.join("a/b/f"), "x").unwrap();
        symlink(&outside, root.join("a/out")).unwrap();
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o500)).unwrap();
        for d in ["a/b", "a", ""] {
            fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o000)).unwrap();
        }
        open_up(&root, crate::host::ids().0, 0);
        for d in ["", "a", "a/b"] {
            assert_eq!(mode(&root.join(d)) & 0o700, 0o700, "{d}");
        }
        assert_eq!(mode(&outside), 0o500, "followed a link");
        remove_tree(&root).unwrap();
        assert!(!root.exists() && outside.is_dir());
        fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn an_in_container_workspace_has_no_host_side() {
        let ws = Workspace::in_container(Some(1 << 20), Some((1000, Some(100))));
        assert_eq!(ws.path(), None);
        assert!(!ws.is_temp());
        assert_eq!(
            ws.mount(None),
            WorkspaceMount::Engine("nosuid,nodev,uid=1000,gid=100,mode=0711,size=1048576".into())
        );
        assert_eq!(
            ws.shown_path(Path::new("a/x.py")),
            Path::new("/workspace/a/x.py")
        );
        let err = ws.write_code_file(Path::new("x.py"), "x").unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        ws.remove_code_file(Path::new("x.py"));
        ws.teardown();
        let named = Workspace::in_container(None, None);
        assert_eq!(
            named.mount(Some(Path::new("/ignored"))),
            WorkspaceMount::Engine("nosuid,nodev,mode=1777".into())
        );
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
