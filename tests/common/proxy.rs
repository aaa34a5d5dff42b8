//! A Unix-socket proxy in front of the real daemon that can stop forwarding: a daemon that
//! hangs, without touching the real one.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Which way bytes travel through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toward {
    /// Requests: from dockexec to the daemon.
    Daemon,
    /// Answers: from the daemon to dockexec.
    Client,
}

/// Freeze once a chunk holding these bytes has been forwarded this way.
type Trigger = (Toward, Vec<u8>);

/// The proxy; it stops when dropped. While frozen, every connection (open or new) holds what
/// it has not forwarded yet, in both directions, as a daemon that hangs would.
#[derive(Debug)]
pub struct Proxy {
    pub path: PathBuf,
    frozen: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    /// Freezes the proxy right after it forwards a chunk holding these bytes, that way.
    trigger: Arc<Mutex<Option<Trigger>>>,
}

/// The real daemon's socket: `DOCKER_HOST` when it is `unix://…`, else the default path.
pub fn real_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

impl Proxy {
    /// A proxy to the real daemon (see [`real_socket`]).
    pub fn start() -> Proxy {
        Proxy::to(&real_socket())
    }

    /// A proxy to the daemon at `real`.
    pub fn to(real: &Path) -> Proxy {
        let dir =
            std::env::temp_dir().join(format!("dockexec-test-{}", super::unique_name("proxy")));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let trigger = Arc::new(Mutex::new(None));
        let (f, d, t, real) = (
            frozen.clone(),
            done.clone(),
            trigger.clone(),
            real.to_path_buf(),
        );
        thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = UnixStream::connect(&real) else {
                            continue;
                        };
                        let pumps = Pumps {
                            frozen: f.clone(),
                            done: d.clone(),
                            trigger: t.clone(),
                        };
                        pumps.pump(
                            client.try_clone().unwrap(),
                            server.try_clone().unwrap(),
                            Toward::Daemon,
                        );
                        pumps.pump(server, client, Toward::Client);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            path,
            frozen,
            done,
            trigger,
        }
    }

    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }

    /// Freezes right after forwarding a chunk that contains `needle`, going `toward`.
    pub fn freeze_after(&self, toward: Toward, needle: &[u8]) {
        *self.trigger.lock().unwrap() = Some((toward, needle.to_vec()));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        let _ = std::fs::remove_dir_all(self.path.parent().unwrap());
    }
}

struct Pumps {
    frozen: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    trigger: Arc<Mutex<Option<Trigger>>>,
}

impl Pumps {
    /// Copies `from` to `to` until EOF; while frozen, holds what it read instead of sending it.
    fn pump(&self, mut from: UnixStream, mut to: UnixStream, toward: Toward) {
        let (frozen, done, trigger) =
            (self.frozen.clone(), self.done.clone(), self.trigger.clone());
        thread::spawn(move || {
            from.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let mut buf = [0u8; 65536];
            loop {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                if frozen.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        // The freeze is set before the triggering chunk goes out, so the
                        // daemon's answer to it can never slip through ahead of the freeze.
                        let hit = {
                            let mut t = trigger.lock().unwrap();
                            let hit = matches!(&*t, Some((dir, needle))
                                if *dir == toward
                                    && buf[..n].windows(needle.len()).any(|w| w == &needle[..]));
                            if hit {
                                *t = None;
                                frozen.store(true, Ordering::SeqCst);
                            }
                            hit
                        };
                        // A read that began before the freeze must not slip through it.
                        while !hit && frozen.load(Ordering::SeqCst) && !done.load(Ordering::SeqCst)
                        {
                            thread::sleep(Duration::from_millis(20));
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
}
