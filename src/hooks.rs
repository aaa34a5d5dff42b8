//! Not part of the API: the private hooks this crate's own benches and fuzz targets drive,
//! each behind its feature (`bench`, `fuzz`) and re-exported at the crate root as
//! `__bench` and `__fuzz`. They may change at any time.

/// Not part of the API: hooks for this crate's own benches, behind the `bench` feature. May
/// change at any time.
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod __bench {
    use std::path::Path;

    /// The wrapper every block runs under, so a baseline can run the floor the same way.
    pub const RUN_SCRIPT: &str = crate::runner::exec::RUN_SCRIPT;

    /// The kill script the exec path runs in a second exec (args: marker prefix, tag), so the
    /// async rival in `benches/rival` kills a block exactly the same way.
    pub const KILL_SCRIPT: &str = crate::runner::exec::KILL_SCRIPT;

    /// The marker prefix of an execution tagged `tag`, as the exec runner makes it.
    pub fn marker_prefix(tag: &str) -> String {
        crate::runner::exec::marker_prefix(tag)
    }

    /// A block's exec command, as the exec runner builds it (see `runner::exec`).
    pub fn run_command(marker: &str, language: &str, path: &str) -> Vec<String> {
        crate::runner::exec::run_command(marker, language, path)
    }

    /// A block's kill command, as the exec runner builds it (run it as the block's user).
    pub fn kill_command(marker: &str, tag: &str) -> Vec<String> {
        crate::runner::exec::kill_command(marker, tag, &[])
    }

    /// The environment of the kill's exec.
    pub const KILL_ENV: &[&str] = &crate::runner::ROOT_EXEC_ENV;

    /// The container-create body `builder.start()` would send for a workspace at `workspace`
    /// (labels carry `id`), so the async rival creates the very same container.
    pub fn create_body(
        builder: &crate::ExecutorBuilder,
        id: &str,
        workspace: &Path,
    ) -> serde_json::Value {
        let dir = builder.bind_dir.as_deref().unwrap_or(workspace);
        let mut spec = builder.spec(id, crate::spec::WorkspaceMount::Host(dir.to_path_buf()));
        crate::runner::prepare(builder.strategy, &mut spec);
        spec.to_create_body()
    }

    /// The newest Engine API version dockexec asks for, so a baseline client asks for the same.
    pub const MAX_API: (u32, u32) = crate::docker::api::MAX_API;

    /// The private Engine client, for measuring it against a hand-written one.
    #[derive(Debug, Clone)]
    pub struct BenchClient(crate::docker::api::Client);

    impl BenchClient {
        /// Connects (ping + version negotiation).
        pub fn connect(socket: &Path) -> crate::Result<BenchClient> {
            crate::docker::api::Client::connect(&crate::Engine::unix(socket)).map(BenchClient)
        }

        /// `GET /_ping` over a pooled connection.
        pub fn ping(&self) -> crate::Result<()> {
            self.0.ping()
        }

        /// The negotiated API version, e.g. "1.41".
        pub fn api_version(&self) -> String {
            self.0.api_version().to_string()
        }

        /// One exec round trip: create, start (reading the stream to its end), inspect.
        /// Returns the exit code.
        pub fn exec_round_trip(&self, container: &str, cmd: &[&str]) -> crate::Result<Option<i64>> {
            let body = serde_json::json!({
                "Cmd": cmd,
                "AttachStdout": true,
                "AttachStderr": true,
            });
            self.0
                .exec_collect(container, &body, None)
                .map(|(code, _, _)| code)
        }
    }

    /// Demultiplexes a whole framed buffer; returns (stdout bytes, stderr bytes).
    pub fn demux(input: &[u8], piece: usize) -> (usize, usize) {
        let mut d = crate::docker::frames::Demuxer::new(false);
        let (mut o, mut e) = (0, 0);
        for chunk in input.chunks(piece.max(1)) {
            d.feed(chunk, |s, b| match s {
                crate::Stream::Stdout => o += b.len(),
                crate::Stream::Stderr => e += b.len(),
            })
            .expect("well-formed frames");
        }
        (o, e)
    }
}

/// Not part of the API: the private parsers, for this crate's cargo-fuzz targets (`fuzz/`),
/// behind the `fuzz` feature. Thin wrappers only; may change at any time.
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod __fuzz {
    use std::path::PathBuf;

    pub use crate::output::Stream;

    /// Docker's stdout/stderr frame demultiplexer (`docker::frames`).
    #[derive(Debug)]
    pub struct Demuxer(crate::docker::frames::Demuxer);

    impl Demuxer {
        /// A demuxer for a framed stream (`raw = false`) or a TTY stream (`raw = true`).
        pub fn new(raw: bool) -> Demuxer {
            Demuxer(crate::docker::frames::Demuxer::new(raw))
        }

        /// Feeds the next bytes; `emit` gets each payload piece.
        pub fn feed(
            &mut self,
            input: &[u8],
            emit: impl FnMut(Stream, &[u8]),
        ) -> Result<(), String> {
            self.0.feed(input, emit).map_err(|e| e.0)
        }

        /// Checks that the stream ended on a frame boundary.
        pub fn finish(&self) -> Result<(), String> {
            self.0.finish().map_err(|e| e.0)
        }
    }

    /// The agent protocol's largest frame length.
    pub const MAX_FRAME: u32 = crate::runner::protocol::MAX_FRAME;

    /// Encodes one agent protocol frame.
    pub fn encode(kind: u8, id: u32, payload: &[u8]) -> Vec<u8> {
        crate::runner::protocol::encode_raw(kind, id, payload)
    }

    /// The agent protocol's incremental decoder (`runner::protocol`).
    #[derive(Debug, Default)]
    pub struct Decoder(crate::runner::protocol::Decoder);

    impl Decoder {
        /// A fresh decoder.
        pub fn new() -> Decoder {
            Decoder::default()
        }

        /// Feeds the next bytes; `emit` gets each whole frame as (kind, id, payload).
        pub fn feed(
            &mut self,
            bytes: &[u8],
            mut emit: impl FnMut(u8, u32, Vec<u8>),
        ) -> Result<(), String> {
            self.0
                .feed(bytes, |f| emit(f.kind, f.id, f.payload))
                .map_err(|e| e.0)
        }

        /// An error if the stream ended inside a frame.
        pub fn finish(&self) -> Result<(), String> {
            self.0.finish().map_err(|e| e.0)
        }
    }

    /// dockexec's state directory inside the workspace.
    pub const STATE_DIR: &str = crate::workspace::STATE_DIR;

    /// A block's requested file name as a workspace-relative path.
    pub fn workspace_relative(name: &str) -> crate::Result<PathBuf> {
        crate::workspace::workspace_relative(name)
    }

    /// A container path as (directory, file name).
    pub fn split_container_path(path: &str) -> crate::Result<(String, String)> {
        crate::workspace::split_container_path(path)
    }

    /// The message of an Engine error body.
    pub fn error_message(body: &str, status: u16, what: &str) -> String {
        crate::docker::api::error_message(body, status, what)
    }

    /// An image pull failure, classified.
    pub fn pull_error(image: &str, status: u16, message: String) -> crate::Error {
        crate::docker::api::pull_error(image, status, message)
    }

    /// `repo[:tag][@digest]` as (repository, tag or digest).
    pub fn split_reference(image: &str) -> (&str, Option<&str>) {
        crate::docker::api::split_reference(image)
    }

    /// `"1.41"` as `(1, 41)`.
    pub fn parse_api(s: &str) -> Option<(u32, u32)> {
        crate::docker::api::parse_api(s)
    }

    /// Parses a `GET /version` body and negotiates the API version from it, as `connect`
    /// does: `None` when the body does not parse.
    pub fn negotiate(body: &[u8]) -> Option<crate::Result<String>> {
        let v: crate::docker::api::Version = serde_json::from_slice(body).ok()?;
        Some(crate::docker::api::negotiate(&v))
    }

    /// The oldest and newest Engine API versions dockexec speaks.
    pub const API_RANGE: ((u32, u32), (u32, u32)) =
        (crate::docker::api::MIN_API, crate::docker::api::MAX_API);

    /// Parses the JSON bodies the client reads (exec inspect, container inspect, one pull
    /// progress line), as the client does; the results' `Debug` text, so that they are used.
    pub fn parse_bodies(body: &[u8]) -> [Option<String>; 3] {
        use crate::docker::api::{ContainerInfo, ExecInfo, PullEvent};
        let exec = serde_json::from_slice::<ExecInfo>(body).ok();
        let container = serde_json::from_slice::<ContainerInfo>(body).ok();
        let pull = std::str::from_utf8(body)
            .ok()
            .and_then(|s| serde_json::from_str::<PullEvent>(s).ok());
        [
            exec.map(|v| format!("{v:?}")),
            container.map(|v| format!("{v:?}")),
            pull.map(|v| format!("{v:?}")),
        ]
    }

    /// The first regular file of a tar archive.
    pub fn untar_first_file(tar: &[u8]) -> crate::Result<(String, Vec<u8>)> {
        crate::docker::api::untar_first_file(tar)
    }

    /// What a `get_file` archive holds at its path: `Some(contents)` for a regular file,
    /// `None` for anything else.
    pub fn untar_path(tar: &[u8]) -> crate::Result<Option<Vec<u8>>> {
        use crate::docker::api::{PathEntry, untar_path};
        untar_path(tar).map(|e| match e {
            PathEntry::File(data) => Some(data),
            PathEntry::Other(_) => None,
        })
    }

    /// A tar archive holding one regular file.
    pub fn tar_one_file(name: &str, data: &[u8], mode: u32) -> crate::Result<Vec<u8>> {
        crate::docker::api::tar_one_file(name, data, mode)
    }
}
