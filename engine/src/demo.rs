//! `bursar serve --demo`: a throw-away SQLite database, the DCImanager 6
//! simulator in-process on a free port, the `dcimanager6` built-in plugin
//! pointed at it, a few dedicated-server plans and a customer with money.
//! Nothing of it outlives the process.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use dcimanager6_sim::{Fixture, Running};
use serde_json::json;

use crate::accounts::{ApiKeySecret, Role};
use crate::catalog::PlanSpec;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::ledger::{TransactionDraft, TransactionKind};
use crate::money::{Currency, Money};
use crate::plugins::instances::{PluginConfig, PluginKind, SettingValue};
use crate::store::Store;
use crate::store::{accounts as accounts_repo, catalog as plans_repo, ledger as ledger_repo};

/// The plugin instance the demo plans use.
pub const MODULE: &str = "dcimanager6";

/// What the demo keeps alive while Bursar runs.
pub struct Demo {
    dir: tempfile::TempDir,
    pub simulator: Running,
}

impl Demo {
    /// Where the demo's mail is written.
    pub fn mail_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("mail")
    }
}

/// What `seed` made, to print.
pub struct Seeded {
    pub customer_key: ApiKeySecret,
    pub account_id: String,
    pub plans: Vec<(String, String)>,
}

/// Points the configuration at a throw-away database and an in-process
/// simulator, and adds the `dcimanager6` instance.
pub async fn prepare(config: &mut Config, simulator: SocketAddr) -> anyhow::Result<Demo> {
    let dir = tempfile::Builder::new().prefix("bursar-demo-").tempdir()?;
    config.database.url = format!("sqlite://{}", dir.path().join("demo.db").display());
    config.secrets = crate::secrets::SecretsConfig {
        key_file: dir.path().join("secret.key"),
        ..Default::default()
    };
    config.plugin_host.cache_dir = Some(dir.path().join("plugin-cache"));
    config.email.transport = crate::notify::email::TransportKind::File;
    config.email.dir = dir.path().join("mail");
    config.email.staff_to = Some("staff@demo.invalid".into());
    let fixture = Fixture::demo();
    let admin = fixture.admin.clone();
    let simulator = dcimanager6_sim::spawn(fixture, simulator)
        .await
        .map_err(|e| anyhow::anyhow!("the simulator cannot listen on {simulator}: {e}"))?;
    let text = |v: &str| SettingValue::Text(v.to_owned());
    let settings: BTreeMap<String, SettingValue> = [
        ("url", text(&simulator.url())),
        ("email", text(&admin.email)),
        ("password", text(&admin.password)),
        ("poll_ms", text("1000")),
        ("domain_template", text("@ID@.demo.invalid")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    config.plugins.retain(|p| p.name != MODULE);
    config.plugins.push(PluginConfig {
        name: MODULE.into(),
        kind: PluginKind::Processing,
        component: "builtin:dcimanager6".into(),
        allowed_hosts: vec![simulator.addr.to_string()],
        timeout_ms: 30_000,
        memory_mb: 64,
        max_response_bytes: 4 << 20,
        payment_expire_after_secs: None,
        settings,
    });
    Ok(Demo { dir, simulator })
}

/// The demo catalog: one plan per configuration of the demo fixture.
fn plans() -> Vec<PlanSpec> {
    let plan = |name: &str, configuration: &str, location: u64, monthly: i64| {
        serde_json::from_value::<PlanSpec>(json!({
            "name": name,
            "product_type": "dedicated_server",
            "module": MODULE,
            "module_settings": {
                "configuration": configuration,
                "location": location.to_string(),
                "os_template": "1",
                "ip_count": "1",
            },
            "prices": [
                {"period": "1m", "currency": "EUR", "amount": monthly},
                {"period": "12m", "currency": "EUR", "amount": monthly * 10},
            ],
            "addons": [
                {"kind": "enum", "code": "os", "name": "Operating system",
                 "choices": [
                    {"value": "1", "name": "Ubuntu 24.04"},
                    {"value": "2", "name": "Debian 12"},
                    {"value": "3", "name": "AlmaLinux 9"}
                 ]},
                {"kind": "integer", "code": "extra_ips", "name": "Extra IPv4 addresses",
                 "min": 0, "max": 4, "included": 0,
                 "unit_prices": [{"period": "1m", "currency": "EUR", "amount": 300},
                                 {"period": "12m", "currency": "EUR", "amount": 3000}]},
                {"kind": "boolean", "code": "script-1", "name": "Docker"}
            ],
        }))
        .expect("the demo plans are valid")
    };
    vec![
        plan(
            "Dedicated E3 (Amsterdam)",
            "E3-1230v6-32GB-2x480SSD",
            1,
            4900,
        ),
        plan(
            "Dedicated i9 (Amsterdam)",
            "i9-9900K-64GB-2x1TB-NVMe",
            1,
            7900,
        ),
        plan(
            "Dedicated EPYC (Frankfurt)",
            "EPYC-7402P-128GB-2x2TB-NVMe",
            2,
            14900,
        ),
    ]
}

/// Creates the plans, a customer with €500 and a customer API key.
pub async fn seed(store: &Store, clock: &SharedClock) -> anyhow::Result<Seeded> {
    let now = clock.now();
    let mut tx = store.begin().await?;
    let mut created = vec![];
    for spec in plans() {
        spec.validate()
            .map_err(|e| anyhow::anyhow!("demo plan {}: {e:?}", spec.name))?;
        let name = spec.name.clone();
        let plan = plans_repo::create(tx.conn(), spec, now).await?;
        created.push((plan.id, name));
    }
    let currency = Currency::from_code("EUR")?;
    let account = accounts_repo::create(
        tx.conn(),
        accounts_repo::NewAccount {
            email: "demo.customer@example.com".into(),
            name: "Demo Customer".into(),
            currency,
            credit_limit: 0,
            country: None,
            time_zone: None,
            language: None,
            email_opt_out: vec![],
        },
        now,
    )
    .await?;
    let draft = TransactionDraft::adjustment(
        &account.id,
        TransactionKind::Credit,
        Money::new(50_000, currency)?,
        "demo balance",
        "demo-balance".into(),
        "demo",
    );
    ledger_repo::post(tx.conn(), &draft, now).await?;
    let customer_key = ApiKeySecret::generate(Role::Customer);
    accounts_repo::create_key(
        tx.conn(),
        &customer_key,
        Role::Customer,
        Some(&account.id),
        "demo customer",
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Seeded {
        customer_key,
        account_id: account.id,
        plans: created,
    })
}

/// The demo's console logins: the seeded customer's and a staff admin's.
pub struct Logins {
    pub customer_email: String,
    pub customer_password: String,
    pub staff: crate::console::auth::StaffCreated,
}

/// Creates the console logins of the demo (passwords generated).
pub async fn logins(
    store: &Store,
    secrets: &crate::secrets::Secrets,
    seeded: &Seeded,
    clock: &SharedClock,
) -> anyhow::Result<Logins> {
    use crate::console::auth;
    let now = clock.now();
    let customer_password = auth::random_token()[..16].to_owned();
    let hash = auth::hash_password(&customer_password).await;
    let mut tx = store.begin().await?;
    let account = accounts_repo::get(tx.conn(), &seeded.account_id).await?;
    crate::store::logins::create(
        tx.conn(),
        crate::store::logins::NewLogin {
            email: &account.email,
            role: Role::Customer,
            account_id: Some(&account.id),
            name: &account.name,
            password_hash: &hash,
            totp_secret: None,
        },
        now,
    )
    .await?;
    tx.commit().await?;
    let staff = auth::create_staff(
        store,
        secrets,
        "demo.admin@example.com",
        Role::Admin,
        None,
        true,
        now,
    )
    .await?;
    Ok(Logins {
        customer_email: account.email,
        customer_password,
        staff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_plans_are_valid_and_match_the_simulator_fixture() {
        let fixture = Fixture::demo();
        for plan in plans() {
            plan.validate().unwrap();
            assert_eq!(plan.module, MODULE);
            let configuration = &plan.module_settings["configuration"];
            let location: u64 = plan.module_settings["location"].parse().unwrap();
            assert!(
                fixture
                    .servers
                    .iter()
                    .any(|s| &s.configuration == configuration && s.location == location),
                "{} sells servers the simulator has",
                plan.name
            );
        }
    }
}
