//! Layered configuration: built-in defaults → `config/bursar.toml` (or the
//! file given with `--config`) → `BURSAR_*` environment variables → flags.
//!
//! Environment variables name a key with its section and an underscore:
//! `BURSAR_LISTEN`, `BURSAR_DATABASE_URL`, `BURSAR_API_MAX_BODY_BYTES`.
//! Unknown keys are errors, so a typo fails at start instead of being
//! silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::lifecycle::runner::RunnerConfig;
use crate::payments::PaymentsConfig;
use crate::plugins::instances::{PluginConfig, PluginHostConfig};
use crate::store::{StoreOptions, backend_of};

/// The file read when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "config/bursar.toml";

/// Sections whose keys environment variables may reach
/// (`BURSAR_<SECTION>_<KEY>`).
const SECTIONS: &[&str] = &[
    "database",
    "api",
    "log",
    "operations",
    "plugin_host",
    "payments",
    "invoices",
    "automation",
    "billing",
    "secrets",
    "email_smtp",
    "email",
    "company",
];

/// Environment variables with the `BURSAR_` prefix that are not
/// configuration keys.
const NOT_CONFIG: &[&str] = &["admin_key", "test_database_url", "config", "staff_password"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    pub database: DatabaseConfig,
    pub api: ApiConfig,
    pub log: LogConfig,
    /// The provisioning operation runner.
    pub operations: RunnerConfig,
    /// The plugin host as a whole.
    pub plugin_host: PluginHostConfig,
    /// Payment limits and reconciliation.
    #[serde(default)]
    pub payments: PaymentsConfig,
    /// Document number prefixes.
    #[serde(default)]
    pub invoices: crate::invoices::InvoiceConfig,
    /// Renewals, suspensions, deletions.
    #[serde(default)]
    pub automation: crate::automation::AutomationConfig,
    /// The billing time zone.
    #[serde(default)]
    pub billing: crate::calendar::BillingConfig,
    /// The key secrets (service credentials) are encrypted with.
    #[serde(default)]
    pub secrets: crate::secrets::SecretsConfig,
    /// Plugin instances: `[[plugin]]` entries.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
    /// E-mail to customers and staff.
    #[serde(default)]
    pub email: crate::notify::email::EmailConfig,
    /// Who the mail and the invoices are from.
    #[serde(default)]
    pub company: crate::templates::CompanyConfig,
    /// The web console: sessions, cookies, login throttling.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Endpoints told about service and payment events: `[[webhook]]`.
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<crate::notify::WebhookConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created when missing) or `postgres://…`.
    pub url: String,
    pub max_connections: u32,
    /// How long SQLite waits for a lock before giving up.
    pub busy_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Page size when a list request gives no `limit`.
    pub default_page_limit: usize,
    /// Largest `limit` a list request may ask for.
    pub max_page_limit: usize,
    /// API keys that work a customer account may hold at once.
    pub max_keys_per_account: usize,
    /// The public gateway callbacks (anyone on the network can call them).
    pub callbacks: CallbackLimits,
    /// When set, `/metrics` answers only `Authorization: Bearer {token}`
    /// (text, `{ env = "…" }` or `{ file = "…" }`); unset, it is public —
    /// fine on a loopback address, not on a public one.
    #[serde(default)]
    pub metrics_token: Option<crate::secrets::SettingValue>,
}

/// Bounds on the public gateway callback endpoint, so that nobody without
/// a key can tie up the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackLimits {
    /// Largest callback body, in bytes.
    pub max_body_bytes: usize,
    /// Largest total size of a callback's headers, in bytes.
    pub max_header_bytes: usize,
    /// Callbacks a gateway instance handles at once; more answer 503.
    pub concurrency_per_gateway: usize,
    /// Callbacks one source address may send per minute; more answer 429.
    pub per_address_per_minute: u32,
    /// Longest a callback may take (well below a plugin's own timeout).
    pub deadline_ms: u64,
}

impl Default for CallbackLimits {
    fn default() -> Self {
        CallbackLimits {
            max_body_bytes: 256 * 1024,
            max_header_bytes: 16 * 1024,
            concurrency_per_gateway: 4,
            per_address_per_minute: 600,
            deadline_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `bursar=debug,sqlx=warn`;
    /// `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: DatabaseConfig {
                url: "sqlite://data/bursar.db".into(),
                max_connections: 10,
                busy_timeout_ms: 10_000,
            },
            api: ApiConfig {
                max_body_bytes: 64 * 1024,
                default_page_limit: 50,
                max_page_limit: 500,
                max_keys_per_account: 20,
                callbacks: CallbackLimits::default(),
                metrics_token: None,
            },
            log: LogConfig {
                level: "info".into(),
                format: LogFormat::Text,
            },
            operations: RunnerConfig::default(),
            plugin_host: PluginHostConfig::default(),
            payments: PaymentsConfig::default(),
            email: Default::default(),
            company: Default::default(),
            console: Default::default(),
            webhooks: vec![],
            invoices: crate::invoices::InvoiceConfig::default(),
            automation: crate::automation::AutomationConfig::default(),
            billing: crate::calendar::BillingConfig::default(),
            secrets: crate::secrets::SecretsConfig::default(),
            plugins: vec![],
        }
    }
}

/// A configuration problem, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    #[error("invalid configuration: `{key}` {message}")]
    Value { key: &'static str, message: String },
}

impl Config {
    /// Loads the configuration. `file` is `--config`; without it the
    /// default file is read when it exists.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE))
            }
            None => {}
        }
        figment = figment.merge(
            Env::prefixed("BURSAR_")
                .ignore(NOT_CONFIG)
                .map(|key| section_key(&key.as_str().to_ascii_lowercase()).into()),
        );
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        backend_of(&self.database.url).map_err(|message| ConfigError::Value {
            key: "database.url",
            message,
        })?;
        let positive = |key, v: usize| {
            if v == 0 {
                Err(ConfigError::Value {
                    key,
                    message: "must be greater than zero".into(),
                })
            } else {
                Ok(())
            }
        };
        positive(
            "database.max_connections",
            self.database.max_connections as usize,
        )?;
        positive("api.max_body_bytes", self.api.max_body_bytes)?;
        positive("api.default_page_limit", self.api.default_page_limit)?;
        positive("api.max_page_limit", self.api.max_page_limit)?;
        positive("api.max_keys_per_account", self.api.max_keys_per_account)?;
        positive("email.per_minute", self.email.per_minute as usize)?;
        let mailbox = |key, v: &str| {
            v.parse::<lettre::message::Mailbox>()
                .map(drop)
                .map_err(|e| ConfigError::Value {
                    key,
                    message: format!("`{v}` is not an e-mail address ({e})"),
                })
        };
        mailbox("email.from", &self.email.from)?;
        if let Some(to) = &self.email.staff_to {
            mailbox("email.staff_to", to)?;
        }
        crate::accounts::check_language(&self.email.default_language).map_err(|e| {
            ConfigError::Value {
                key: "email.default_language",
                message: e.message,
            }
        })?;
        let cb = &self.api.callbacks;
        positive("api.callbacks.max_body_bytes", cb.max_body_bytes)?;
        positive("api.callbacks.max_header_bytes", cb.max_header_bytes)?;
        positive(
            "api.callbacks.concurrency_per_gateway",
            cb.concurrency_per_gateway,
        )?;
        positive(
            "api.callbacks.per_address_per_minute",
            cb.per_address_per_minute as usize,
        )?;
        positive("api.callbacks.deadline_ms", cb.deadline_ms as usize)?;
        if self.api.default_page_limit > self.api.max_page_limit {
            return Err(ConfigError::Value {
                key: "api.default_page_limit",
                message: "must not exceed api.max_page_limit".into(),
            });
        }
        positive("operations.batch", self.operations.batch)?;
        positive("automation.batch", self.automation.batch)?;
        if self.payments.max_amount <= 0 || self.payments.max_amount > crate::money::MAX_AMOUNT {
            return Err(ConfigError::Value {
                key: "payments.max_amount",
                message: format!("must be 1 to {}", crate::money::MAX_AMOUNT),
            });
        }
        positive(
            "operations.max_attempts",
            self.operations.max_attempts as usize,
        )?;
        if self.operations.lease_ms <= self.operations.call_timeout_ms {
            return Err(ConfigError::Value {
                key: "operations.lease_ms",
                message:
                    "must exceed operations.call_timeout_ms, or a slow call would be run twice"
                        .into(),
            });
        }
        for plugin in &self.plugins {
            plugin
                .resolve(self.plugin_host.max_memory_mb)
                .map_err(|e| ConfigError::Value {
                    key: "plugin",
                    message: e.to_string(),
                })?;
        }
        for hook in &self.webhooks {
            if !(hook.url.starts_with("https://") || hook.url.starts_with("http://")) {
                return Err(ConfigError::Value {
                    key: "webhook.url",
                    message: format!("`{}` is not an http(s) URL", hook.url),
                });
            }
            hook.secret.resolve().map_err(|m| ConfigError::Value {
                key: "webhook.secret",
                message: m,
            })?;
        }
        for (key, prefix) in [
            ("invoices.prefix", &self.invoices.prefix),
            ("invoices.receipt_prefix", &self.invoices.receipt_prefix),
            (
                "invoices.credit_note_prefix",
                &self.invoices.credit_note_prefix,
            ),
        ] {
            if prefix.is_empty()
                || prefix.len() > 16
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(ConfigError::Value {
                    key,
                    message: "must be 1 to 16 letters, digits or dashes".into(),
                });
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            ConfigError::Value {
                key: "log.level",
                message: format!("is not a valid filter: {e}"),
            }
        })?;
        Ok(())
    }

    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            max_connections: self.database.max_connections,
            busy_timeout: std::time::Duration::from_millis(self.database.busy_timeout_ms),
        }
    }
}

/// `database_url` → `database.url`: the first underscore after a known
/// section name separates section and key.
/// A database URL fit to print: the password, if any, as `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

fn section_key(key: &str) -> String {
    for section in SECTIONS {
        if let Some(rest) = key.strip_prefix(section).and_then(|r| r.strip_prefix('_')) {
            // `[email.smtp]` is a table inside `[email]`.
            let path = match *section {
                "email_smtp" => "email.smtp",
                s => s,
            };
            return format!("{path}.{rest}");
        }
    }
    key.to_owned()
}

/// `[console]`: sessions and login throttling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Mark cookies `Secure` (sent over HTTPS only). Turn on whenever the
    /// console is reached over TLS (behind a proxy too).
    pub secure_cookies: bool,
    /// How long a session lasts after logging in.
    pub session_hours: u32,
    /// Failed logins for one e-mail address within the window before
    /// further attempts are refused without checking the password.
    pub max_failures_per_email: u32,
    /// The same for one client address.
    pub max_failures_per_address: u32,
    pub failure_window_minutes: u32,
    /// Customers may sign up themselves.
    pub signup: bool,
    /// Sign-ups from one client address within the window.
    pub max_signups_per_address: u32,
    /// The currency a new account signed up in the portal is billed in.
    pub currency: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            secure_cookies: false,
            session_hours: 12,
            max_failures_per_email: 5,
            max_failures_per_address: 30,
            failure_window_minutes: 15,
            signup: true,
            max_signups_per_address: 10,
            currency: "EUR".into(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configuration_files_are_valid() {
        // Inside a jail: the other tests set `BURSAR_` variables in theirs,
        // and the jails take turns.
        figment::Jail::expect_with(|_| {
            shipped_files_load();
            Ok(())
        });
    }

    fn shipped_files_load() {
        for file in ["bursar.toml", "postgres.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../config")
                .join(file);
            let config = Config::load(Some(&path)).unwrap_or_else(|e| panic!("{file}: {e}"));
            if file == "bursar.toml" {
                let names: Vec<&str> = config.plugins.iter().map(|p| p.name.as_str()).collect();
                assert_eq!(names, ["example", "bank"]);
                assert_eq!(
                    config.automation,
                    crate::automation::AutomationConfig::default()
                );
                assert_eq!(config.payments, PaymentsConfig::default());
                assert_eq!(config.billing.time_zone, crate::calendar::Zone::UTC);
                assert_eq!(config.email, crate::notify::email::EmailConfig::default());
                assert_eq!(config.company, crate::templates::CompanyConfig::default());
            }
        }
    }

    #[test]
    fn printed_urls_hide_the_password() {
        assert_eq!(
            redact_url("postgres://bursar:s3cret@db:5432/bursar"),
            "postgres://bursar:***@db:5432/bursar"
        );
        assert_eq!(
            redact_url("sqlite://data/bursar.db"),
            "sqlite://data/bursar.db"
        );
    }

    #[test]
    fn environment_names_map_to_sections() {
        assert_eq!(section_key("database_url"), "database.url");
        assert_eq!(section_key("email_smtp_host"), "email.smtp.host");
        assert_eq!(section_key("email_staff_to"), "email.staff_to");
        assert_eq!(section_key("company_portal_url"), "company.portal_url");
        assert_eq!(
            section_key("database_max_connections"),
            "database.max_connections"
        );
        assert_eq!(section_key("api_max_body_bytes"), "api.max_body_bytes");
        assert_eq!(section_key("listen"), "listen");
        assert_eq!(section_key("billing_time_zone"), "billing.time_zone");
    }

    #[test]
    fn errors_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "listen = \"not an address\"")?;
            let err = Config::load(Some(Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("listen"), "{err}");

            jail.create_file("typo.toml", "[database]\nulr = \"sqlite://x.db\"")?;
            let err = Config::load(Some(Path::new("typo.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("ulr"), "{err}");

            jail.create_file("scheme.toml", "[database]\nurl = \"mysql://x\"")?;
            let err = Config::load(Some(Path::new("scheme.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("database.url"), "{err}");

            let err = Config::load(Some(Path::new("nope.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("nope.toml"), "{err}");

            jail.set_env("BURSAR_DATABASE_MAX_CONNECTIONS", "lots");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("max_connections"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "listen = \"127.0.0.1:9000\"\n[database]\nurl = \"sqlite://a.db\"",
            )?;
            jail.set_env("BURSAR_DATABASE_URL", "postgres://db/bursar");
            jail.set_env("BURSAR_ADMIN_KEY", "not-a-config-key-but-allowed");
            let config = Config::load(Some(Path::new("c.toml"))).unwrap();
            assert_eq!(config.listen.port(), 9000);
            assert_eq!(config.database.url, "postgres://db/bursar");
            Ok(())
        });
    }
}
