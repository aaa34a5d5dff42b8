//! [`DeviceRequest`]: devices such as GPUs handed to the container (Docker's
//! `HostConfig.DeviceRequests`, what `docker run --gpus` sends).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A request for host devices, such as GPUs, for the container: one entry of Docker's
/// `HostConfig.DeviceRequests`, as AutoGen's `device_requests` takes them. Added with
/// [`ExecutorBuilder::device_request`](crate::ExecutorBuilder::device_request).
///
/// The daemon meets it when the container starts, through the driver's plugin (for NVIDIA
/// GPUs, the NVIDIA container toolkit); on a host without the devices or the driver,
/// [`start`](crate::ExecutorBuilder::start) fails with an [`Error::Docker`](crate::Error::Docker)
/// that names the request.
///
/// ```
/// use dockexec::DeviceRequest;
///
/// // `docker run --gpus all`
/// let all = DeviceRequest::gpus_all();
/// // `docker run --gpus '"device=0,2"'`
/// let two = DeviceRequest::gpus_by_id(["0", "2"]);
/// // Anything else, field by field.
/// let mut custom = DeviceRequest::new();
/// custom.driver("nvidia").count(1).capabilities(["gpu", "compute"]);
/// # let _ = (all, two, custom);
/// ```
///
/// It is `serde` Serialize and Deserialize (for [`ExecutorConfig`](crate::ExecutorConfig)),
/// as `{"driver": "nvidia", "count": -1, "device_ids": [], "capabilities": [["gpu"]],
/// "options": {}}`; a missing field is its default, an unknown one an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceRequest {
    driver: String,
    count: i64,
    device_ids: Vec<String>,
    capabilities: Vec<Vec<String>>,
    options: BTreeMap<String, String>,
}

impl DeviceRequest {
    /// An empty request: no driver, count 0, no ids, no capabilities, no options. Set at least
    /// a count or ids, and capabilities, for the daemon to pick a driver.
    pub fn new() -> DeviceRequest {
        DeviceRequest::default()
    }

    /// Every GPU: capability `gpu`, count -1 (all), the driver the daemon picks (`--gpus all`).
    pub fn gpus_all() -> DeviceRequest {
        let mut r = DeviceRequest::new();
        r.count(-1).capabilities(["gpu"]);
        r
    }

    /// `n` GPUs: capability `gpu`, count `n` (`--gpus n`).
    pub fn gpus(n: i64) -> DeviceRequest {
        let mut r = DeviceRequest::new();
        r.count(n).capabilities(["gpu"]);
        r
    }

    /// The GPUs with these ids or UUIDs: capability `gpu` (`--gpus '"device=0,2"'`).
    pub fn gpus_by_id<I, S>(ids: I) -> DeviceRequest
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut r = DeviceRequest::new();
        r.device_ids(ids).capabilities(["gpu"]);
        r
    }

    /// The device driver (`"nvidia"`). Defaults to empty: the daemon picks one by the
    /// capabilities.
    pub fn driver(&mut self, driver: impl Into<String>) -> &mut Self {
        self.driver = driver.into();
        self
    }

    /// How many devices; -1 for all. Defaults to 0 (then [`device_ids`](Self::device_ids)
    /// choose).
    pub fn count(&mut self, count: i64) -> &mut Self {
        self.count = count;
        self
    }

    /// The devices' ids or UUIDs, instead of a count. Defaults to none.
    pub fn device_ids<I, S>(&mut self, ids: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.device_ids = ids.into_iter().map(Into::into).collect();
        self
    }

    /// Adds one set of capabilities the driver must all provide (`["gpu"]`, `["gpu",
    /// "utility"]`); the request is met by a driver that provides any one set. Defaults to
    /// none.
    pub fn capabilities<I, S>(&mut self, all_of: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capabilities
            .push(all_of.into_iter().map(Into::into).collect());
        self
    }

    /// Sets a driver-specific option. Defaults to none.
    pub fn option(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.options.insert(key.into(), value.into());
        self
    }

    /// The request as the Engine API's `DeviceRequest` object.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "Driver": self.driver,
            "Count": self.count,
            "DeviceIDs": self.device_ids,
            "Capabilities": self.capabilities,
            "Options": self.options,
        })
    }
}

/// Shown as `docker run --gpus` would take it, for error messages:
/// `driver "", count -1, capabilities [["gpu"]]`.
impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "driver {:?}", self.driver)?;
        if self.device_ids.is_empty() {
            write!(f, ", count {}", self.count)?;
        } else {
            write!(f, ", device ids {:?}", self.device_ids)?;
        }
        write!(f, ", capabilities {:?}", self.capabilities)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_all_is_what_docker_run_gpus_all_sends() {
        assert_eq!(
            DeviceRequest::gpus_all().to_json(),
            json!({"Driver": "", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]],
                   "Options": {}})
        );
        let mut r = DeviceRequest::gpus_by_id(["0", "GPU-abc"]);
        r.driver("nvidia").option("k", "v");
        assert_eq!(
            r.to_json(),
            json!({"Driver": "nvidia", "Count": 0, "DeviceIDs": ["0", "GPU-abc"],
                   "Capabilities": [["gpu"]], "Options": {"k": "v"}})
        );
        assert_eq!(
            DeviceRequest::gpus(2).to_string(),
            r#"driver "", count 2, capabilities [["gpu"]]"#
        );
    }
}
