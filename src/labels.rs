//! The labels dockexec puts on every container it creates.
//!
//! They identify a container as dockexec's (for [`gc`](crate::gc)) and name its owner, for
//! people reading `docker ps`. They are information, never authority: a label is only ever
//! read back to decide what dockexec itself created. In particular no owner label decides
//! whether a container may be removed: a container's life is tied to its owner's connection
//! (see [`ExecutorBuilder::auto_remove`](crate::ExecutorBuilder::auto_remove)).

/// The executor's id ([`Executor::id`](crate::Executor::id)); every container dockexec creates
/// has it.
pub const EXECUTOR: &str = "dockexec.executor";
/// The owning process's pid.
pub const OWNER_PID: &str = "dockexec.owner.pid";
/// The owning process's start time (clock ticks since boot), so a reused pid is told apart from
/// the owner.
pub const OWNER_START: &str = "dockexec.owner.start";
/// The owner's host name.
pub const OWNER_HOST: &str = "dockexec.owner.host";
/// The owner host's boot id.
pub const OWNER_BOOT: &str = "dockexec.owner.boot";
/// The temporary work dir dockexec created for the container (absent when the work dir was the
/// user's own). Information, and a guard: [`gc`](crate::gc) never removes a dir that an
/// existing container names. What frees a dir for gc is its owner's death, told by the dir's
/// own lock, since the dead-man's switch removes the container, label and all.
pub const TEMP_WORKSPACE: &str = "dockexec.workspace.temp";
