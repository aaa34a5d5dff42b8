//! `rival-cli run FILE [--image IMAGE]`: runs a Python or sh file in a fresh, hardened,
//! network-less container, streams its output, removes the container, and exits with the
//! block's code. The bollard + tokio equivalent of `dockexec run FILE`, as small as it gets,
//! for the build-cost comparison in BENCHMARKS.md (no dockexec dependency).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, StartContainerOptions,
};
use futures_util::StreamExt;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() {
    match run().await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("rival-cli: {e}");
            std::process::exit(125);
        }
    }
}

async fn run() -> Result<i32> {
    let mut args = std::env::args().skip(1);
    let (mut file, mut image) = (None, "python:3-slim".to_string());
    match args.next().as_deref() {
        Some("run") => {}
        _ => return Err("usage: rival-cli run FILE [--image IMAGE]".into()),
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "--image" => image = args.next().ok_or("--image needs a value")?,
            _ => file = Some(a),
        }
    }
    let file = file.ok_or("usage: rival-cli run FILE [--image IMAGE]")?;
    let lang = if file.ends_with(".py") {
        "python3"
    } else {
        "sh"
    };
    let code = tokio::fs::read_to_string(&file).await?;

    let ws = std::env::temp_dir().join(format!("rival-cli-{}", std::process::id()));
    tokio::fs::create_dir(&ws).await?;
    tokio::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o777)).await?;
    tokio::fs::write(ws.join("code"), code).await?;

    let docker = Docker::connect_with_unix_defaults()?
        .negotiate_version()
        .await?;
    let body: ContainerCreateBody = serde_json::from_value(serde_json::json!({
        "Image": image,
        "Entrypoint": ["sh", "-c", "while :; do sleep 3600; done"],
        "WorkingDir": "/workspace",
        "Env": ["PYTHONUNBUFFERED=1", "HOME=/tmp"],
        "User": "0",
        "HostConfig": {
            "Init": true,
            "Mounts": [{ "Type": "bind", "Source": ws, "Target": "/workspace" }],
            "NetworkMode": "none",
            "CapDrop": ["ALL"],
            "CapAdd": ["SETUID", "SETGID", "KILL"],
            "SecurityOpt": ["no-new-privileges"],
            "ReadonlyRootfs": true,
            "Tmpfs": { "/tmp": "rw,nosuid,nodev,mode=1777" },
            "PidsLimit": 1024,
        },
    }))?;
    let id = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await?
        .id;
    let result = async {
        docker
            .start_container(&id, None::<StartContainerOptions>)
            .await?;
        let exec = docker
            .create_exec(
                &id,
                CreateExecOptions {
                    cmd: Some(vec![lang, "/workspace/code"]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    user: Some("65534:65534"),
                    working_dir: Some("/workspace"),
                    ..Default::default()
                },
            )
            .await?
            .id;
        if let StartExecResults::Attached { mut output, .. } =
            docker.start_exec(&exec, None).await?
        {
            while let Some(item) = output.next().await {
                match item? {
                    LogOutput::StdErr { message } => std::io::stderr().write_all(&message)?,
                    other => std::io::stdout().write_all(&other.into_bytes())?,
                }
            }
        }
        let code = docker.inspect_exec(&exec).await?.exit_code.unwrap_or(125);
        Ok::<i32, Box<dyn std::error::Error + Send + Sync>>(code as i32)
    }
    .await;
    let _ = docker
        .remove_container(
            &id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    let _ = tokio::fs::remove_dir_all(&ws).await;
    result
}
