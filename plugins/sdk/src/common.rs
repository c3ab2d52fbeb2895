//! Types every plugin uses: settings and params, errors, info, logging.

use crate::bindings::bursar::plugin::host;
pub use crate::bindings::bursar::plugin::types::{PluginError, PluginInfo, Unavailable};

/// Key/value pairs as the host sends them (settings, service params,
/// add-ons), with typed look-ups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an `invalid-config` error naming it.
    pub fn require(&self, key: &str) -> Result<&str, PluginError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| PluginError::invalid_config(format!("setting `{key}` is missing")))
    }

    /// The value of `key` parsed as `T`, or an `invalid-config` error.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, PluginError> {
        self.get(key)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|_| PluginError::invalid_config(format!("setting `{key}` has a bad value `{v}`")))
            })
            .transpose()
    }

    pub fn into_inner(self) -> Vec<(String, String)> {
        self.0
    }
}

impl From<Vec<(String, String)>> for Params {
    fn from(v: Vec<(String, String)>) -> Self {
        Params(v)
    }
}

impl<K: Into<String>, V: Into<String>, const N: usize> From<[(K, V); N]> for Params {
    fn from(pairs: [(K, V); N]) -> Self {
        Params(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

/// Constructors for each error case; each maps to one retry rule in the
/// host (see `wit/plugin.wit`).
impl PluginError {
    /// Wrong settings: not retried, staff must fix the configuration.
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        PluginError::InvalidConfig(msg.into())
    }

    /// Try again later (with backoff).
    pub fn unavailable(msg: impl Into<String>) -> Self {
        PluginError::Unavailable(Unavailable { message: msg.into(), retry_after_ms: None })
    }

    /// Try again, not before `ms` milliseconds.
    pub fn unavailable_for(msg: impl Into<String>, ms: u64) -> Self {
        PluginError::Unavailable(Unavailable { message: msg.into(), retry_after_ms: Some(ms) })
    }

    /// Refused for good.
    pub fn rejected(msg: impl Into<String>) -> Self {
        PluginError::Rejected(msg.into())
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        PluginError::NotFound(msg.into())
    }

    pub fn unsupported(msg: impl Into<String>) -> Self {
        PluginError::Unsupported(msg.into())
    }

    /// A bug or an unexpected answer: retried like `unavailable`.
    pub fn internal(msg: impl Into<String>) -> Self {
        PluginError::Internal(msg.into())
    }
}

impl PluginInfo {
    pub fn new(name: &str, version: &str, features: &[&str]) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            features: features.iter().map(|f| (*f).to_owned()).collect(),
        }
    }
}

/// Logging into Bursar's log, tagged with the instance's name.
pub mod log {
    use super::host::{Level, log};

    pub fn debug(msg: &str) {
        log(Level::Debug, msg)
    }
    pub fn info(msg: &str) {
        log(Level::Info, msg)
    }
    pub fn warn(msg: &str) {
        log(Level::Warn, msg)
    }
    pub fn error(msg: &str) {
        log(Level::Error, msg)
    }
}
