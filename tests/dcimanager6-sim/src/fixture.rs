//! What the simulator starts with: a data centre described in TOML (or
//! JSON). `fixtures/demo.toml` is a complete example.

use serde::{Deserialize, Serialize};

/// A whole data centre.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    #[serde(default)]
    pub settings: Settings,
    pub admin: Admin,
    #[serde(default)]
    pub locations: Vec<Location>,
    #[serde(default)]
    pub racks: Vec<Rack>,
    #[serde(default)]
    pub pools: Vec<Pool>,
    #[serde(default)]
    pub servers: Vec<Server>,
    #[serde(default)]
    pub os: Vec<OsTemplate>,
    #[serde(default)]
    pub scripts: Vec<Script>,
}

/// Timing of the simulated installation.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Tokens expire this long after login.
    pub token_ttl_secs: u64,
    /// How long an OS install takes.
    pub install_delay_ms: u64,
    /// The `progress_info` texts an install walks through.
    pub install_steps: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            token_ttl_secs: 3600,
            install_delay_ms: 300,
            install_steps: vec![
                "Preparing the server".into(),
                "Installing the operating system".into(),
                "Running scripts".into(),
                "Rebooting".into(),
            ],
        }
    }
}

/// The user the billing system logs in as.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rack {
    pub id: u64,
    pub name: String,
    pub location: u64,
}

/// Whether a pool hands out addresses to customers' servers or holds the
/// technical addresses released servers get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Allocation,
    Deallocation,
}

/// An IP pool (IPmanager "ipnet"): one or more CIDRs, optionally bound to
/// a rack or a location.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub id: u64,
    pub name: String,
    pub cidrs: Vec<String>,
    #[serde(default)]
    pub location: Option<u64>,
    #[serde(default)]
    pub rack: Option<u64>,
    #[serde(default)]
    pub role: Role,
}

fn default_ports() -> u32 {
    1
}

fn default_power() -> String {
    "on".into()
}

fn default_state() -> String {
    "ok".into()
}

fn yes() -> bool {
    true
}

/// Where a server's diagnostics are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Diagnostics {
    #[default]
    Finished,
    /// Still running: the server is `is_new` and not to be given out.
    Running,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub id: u64,
    pub configuration: String,
    pub location: u64,
    pub rack: u64,
    /// How many switch connections the customer's traffic uses.
    #[serde(default = "default_ports")]
    pub switch_ports: u32,
    /// Whether the server's BMC has a switch connection of its own
    /// (`is_ipmi_connection`), which is never switched off.
    #[serde(default = "yes")]
    pub ipmi: bool,
    #[serde(default = "default_power")]
    pub power: String,
    /// The server's `state`.
    #[serde(default = "default_state")]
    pub state: String,
    /// A status or diagnostic error (`state_info`).
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub diagnostics: Diagnostics,
    #[serde(default)]
    pub maintenance: bool,
    /// The status its last operation ended in before the simulator
    /// started (`failed`, `running`, `canceled`…), if it had one.
    #[serde(default)]
    pub last_operation: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OsTemplate {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    pub id: u64,
    pub name: String,
    /// `all` (customers may order it) or `admin`.
    pub access: String,
}

/// The fixture `bursar serve --demo` runs on.
pub const DEMO: &str = include_str!("../fixtures/demo.toml");

impl Fixture {
    /// Reads TOML, or JSON when the text starts with `{`.
    pub fn parse(text: &str) -> anyhow::Result<Fixture> {
        let fixture: Fixture = if text.trim_start().starts_with('{') {
            serde_json::from_str(text)?
        } else {
            toml::from_str(text)?
        };
        fixture.check()?;
        Ok(fixture)
    }

    pub fn demo() -> Fixture {
        Fixture::parse(DEMO).expect("the demo fixture is valid")
    }

    fn check(&self) -> anyhow::Result<()> {
        for r in &self.racks {
            anyhow::ensure!(
                self.locations.iter().any(|l| l.id == r.location),
                "rack {} is in unknown location {}",
                r.id,
                r.location
            );
        }
        for s in &self.servers {
            anyhow::ensure!(
                self.racks
                    .iter()
                    .any(|r| r.id == s.rack && r.location == s.location),
                "server {} is in rack {} which is not in location {}",
                s.id,
                s.rack,
                s.location
            );
        }
        for p in &self.pools {
            for c in &p.cidrs {
                crate::state::Cidr::parse(c).map_err(|e| anyhow::anyhow!("pool {}: {e}", p.id))?;
            }
        }
        Ok(())
    }
}
