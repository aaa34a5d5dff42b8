//! The integration tests that can share one process: one module per concept, all linked into
//! one test binary (`it`), instead of one binary each.
//!
//! Where a new test goes: into the module of its concept here (or a new module, listed
//! below). A test gets a binary of its own in `tests/` only when it observes or changes
//! process-wide state that other tests running beside it would disturb: this process's
//! thread or descriptor counts, `stop_all`, or the Ctrl-C handler (`bounded`, `ctrlc`,
//! `daemon_faults`, `races`, `soak`, `stop`), or loads the whole machine (the memory hogs of
//! `oom` and `escape`, beside which the timing of other tests slips), or when it needs a cargo
//! feature of its own (`cli`).

#[path = "../common/mod.rs"]
mod common;

mod agent;
mod agent_protocol;
mod agent_root;
mod autogen_parity;
mod blocks;
mod cancel;
mod config;
mod engines_env;
mod executor_lifecycle;
mod files;
mod gvisor;
mod hostile;
mod images;
mod layout;
mod limits;
mod no_shared_fs;
mod orphans;
mod output_bytes;
mod output_cap;
mod outside_interference;
mod podman;
mod pool;
mod remote_engines;
mod restart;
mod rich_results;
mod sandbox;
mod secrets;
mod smoke;
mod streaming;
mod temp_workdir;
