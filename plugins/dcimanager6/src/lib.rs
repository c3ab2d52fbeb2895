//! Bursar's reference processing module: dedicated servers from ISPsystem
//! DCImanager 6.
//!
//! Settings (instance, with the plan's module settings laid over them):
//!
//! | key | meaning |
//! | --- | --- |
//! | `url` | DCImanager's base URL, e.g. `https://dci.example.com` |
//! | `email`, `password` | the account Bursar logs in as (keep the password in a secret) |
//! | `configuration` | plan: the server configuration to sell |
//! | `location` | plan: the location id (any location when absent) |
//! | `os_template` | plan: the default OS template id (add-on `os` overrides it) |
//! | `ip_count` | plan: IPv4 addresses included (default 1; add-on `extra_ips` adds) |
//! | `ipv6` | `address` (default: one IPv6 address when the server's pool holds IPv6 too) or `none` |
//! | `adopt_existing_users` | `true`: a DCImanager user with the customer's e-mail that this module did not create is taken over (moving customers from another billing system) |
//! | `domain_template` | the server's domain name; `@ID@` is the service id (default `@ID@.dedicated.invalid`) |
//! | `retry_budget_ms` | how long one call keeps retrying 503s (default 20000) |
//! | `poll_ms` | how often the install is polled (default 5000) |
//! | `password_secret` | key the root password is derived from (default: `password`) |
//!
//! Add-ons on the service: `os` (an OS template id), `extra_ips` (a count),
//! and `script-<id>` = `true` for each DCImanager script (recipe) ordered.

mod client;
mod types;

use bursar_plugin_sdk::prelude::*;
use client::{Dci, Server};
use hmac::{Hmac, Mac};
use sha2::Sha256;

struct Dcimanager6;

fn param_u64(p: &Params, key: &str) -> Result<Option<u64>, PluginError> {
    p.parse::<u64>(key)
}

/// The service's server domain from `domain_template`.
fn domain(ctx: &Context) -> Result<String, PluginError> {
    let template = ctx.settings.get("domain_template").unwrap_or("@ID@.dedicated.invalid");
    if !template.contains("@ID@") {
        return Err(PluginError::invalid_config(
            "`domain_template` must contain @ID@, so that every service's server has its own name",
        ));
    }
    let id: String = ctx
        .service
        .id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    Ok(template.replace("@ID@", &id))
}

/// A password derived from a secret and a purpose, so that `poll` can
/// return the root password `open` set without it being stored anywhere
/// in between.
fn derived_password(ctx: &Context, purpose: &str) -> Result<String, PluginError> {
    let key = match ctx.settings.get("password_secret").filter(|s| !s.is_empty()) {
        Some(k) => k,
        None => ctx.settings.require("password")?,
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .map_err(|_| PluginError::invalid_config("unusable password_secret"))?;
    mac.update(purpose.as_bytes());
    let bytes = mac.finalize().into_bytes();
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    Ok(bytes.iter().take(20).map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect())
}

fn root_password(ctx: &Context) -> Result<String, PluginError> {
    derived_password(ctx, &format!("root:{}:{}", ctx.service.id, ctx.operation_id))
}

/// The scripts ordered as add-ons (`script-<id>` = `true`).
fn recipes(ctx: &Context) -> Vec<u64> {
    ctx.service
        .addons
        .0
        .iter()
        .filter(|(_, v)| v == "true")
        .filter_map(|(k, _)| k.strip_prefix("script-")?.parse().ok())
        .collect()
}

fn os_template(ctx: &Context) -> Result<u64, PluginError> {
    if let Some(os) = ctx.service.addons.get("os") {
        return os
            .parse()
            .map_err(|_| PluginError::rejected(format!("add-on `os` = `{os}` is not an OS template id")));
    }
    param_u64(&ctx.settings, "os_template")?
        .ok_or_else(|| PluginError::invalid_config("setting `os_template` is missing (or order the `os` add-on)"))
}

fn wanted_ips(ctx: &Context) -> Result<u64, PluginError> {
    let base = param_u64(&ctx.settings, "ip_count")?.unwrap_or(1);
    let extra = match ctx.service.addons.get("extra_ips") {
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| PluginError::rejected(format!("add-on `extra_ips` = `{v}` is not a count")))?,
        None => 0,
    };
    Ok(base + extra)
}

fn poll_ms(ctx: &Context) -> Result<u64, PluginError> {
    Ok(param_u64(&ctx.settings, "poll_ms")?.unwrap_or(5_000))
}

/// The service's server: by the `server_id` param, else by its domain.
fn find_server(dci: &mut Dci, ctx: &Context) -> Result<Option<Server>, PluginError> {
    if let Some(id) = param_u64(&ctx.service.params, "server_id")? {
        return match dci.server(id) {
            Ok(s) => Ok(Some(s)),
            Err(PluginError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        };
    }
    dci.server_by_domain(&domain(ctx)?)
}

/// Whether `owner_email` (a server's owner) is the customer's DCImanager
/// user: by the kept user id; for services opened before it was kept, by
/// the customer's e-mail.
fn owned_by_customer(dci: &mut Dci, ctx: &Context, owner_email: &str) -> Result<bool, PluginError> {
    match param_u64(&ctx.service.params, ACCOUNT_USER)? {
        Some(id) => Ok(dci
            .user_by_id(id)?
            .is_some_and(|u| u.email.eq_ignore_ascii_case(owner_email))),
        None => Ok(owner_email.eq_ignore_ascii_case(&ctx.service.account_email)),
    }
}

fn require_server(dci: &mut Dci, ctx: &Context) -> Result<Server, PluginError> {
    find_server(dci, ctx)?.ok_or_else(|| {
        PluginError::not_found(format!("no DCImanager server belongs to service {}", ctx.service.id))
    })
}

/// The param (kept by Bursar for the customer, passed back on every call
/// for any of the customer's services) holding the DCImanager user id the
/// module created for the customer at the first `open`.
const ACCOUNT_USER: &str = "account.dci_user_id";

/// The customer's DCImanager user: the one this module created at the
/// customer's first `open`, by the id Bursar kept — never one found by an
/// e-mail address the customer can change. Without a kept id, a new user
/// is created; an existing user with the same e-mail is taken over only
/// when `adopt_existing_users` = `true` (moving from another billing
/// system), otherwise the open waits for staff to decide.
fn user_for(dci: &mut Dci, ctx: &Context) -> Result<u64, PluginError> {
    if let Some(id) = param_u64(&ctx.service.params, ACCOUNT_USER)? {
        return Ok(id);
    }
    let email = &ctx.service.account_email;
    let password = derived_password(ctx, &format!("user:{email}"))?;
    let r = dci.create_user(email, &password)?;
    if r.is_success() {
        return Dci::created_id(&r);
    }
    match dci.user_by_email(email)? {
        Some(u) if ctx.settings.get("adopt_existing_users") == Some("true") => {
            log::info(&format!("taking over the existing DCImanager user {} for {email}", u.id));
            Ok(u.id)
        }
        // Another service of the same customer may be creating it right
        // now (its id is kept once that open finishes): try again later.
        Some(_) => Err(PluginError::unavailable_for(
            format!(
                "DCImanager has a user with e-mail {email} that this module did not create for this customer; \
                 if it is the customer's, set `adopt_existing_users = true` or store its id as the customer's \
                 `{ACCOUNT_USER}`"
            ),
            60_000,
        )),
        None => Err(client::status_error("user creation", &r)),
    }
}

/// Takes a free server of the plan's configuration and location.
fn take_server(dci: &mut Dci, ctx: &Context, owner: u64, domain: &str) -> Result<Server, PluginError> {
    let configuration = ctx.settings.require("configuration")?;
    let location = param_u64(&ctx.settings, "location")?;
    let mut skipped = vec![];
    let free: Vec<Server> = dci
        .unowned(configuration, location)?
        .into_iter()
        .filter(|s| match s.not_free() {
            None => true,
            Some(why) => {
                skipped.push(format!("{}: {why}", s.id));
                false
            }
        })
        .collect();
    if !skipped.is_empty() {
        log::info(&format!("servers not taken: {}", skipped.join("; ")));
    }
    for candidate in free {
        let r = dci.set_owner(candidate.id, Some(owner), Some(domain))?;
        if r.is_success() {
            log::info(&format!("server {} given to {} as {domain}", candidate.id, ctx.service.account_email));
            return dci.server(candidate.id);
        }
        // Taken by someone else a moment ago: try the next one.
        if r.status != 409 {
            return Err(client::status_error("server assignment", &r));
        }
    }
    let where_ = match location {
        Some(l) => format!("location {l}"),
        None => "any location".to_owned(),
    };
    Err(PluginError::unavailable_for(
        format!(
            "no free server with configuration `{configuration}` in {where_}: add servers to DCImanager or move the order to another plan"
        ),
        10 * 60 * 1000,
    ))
}

/// Turns the customer's switch ports up or down — never the BMC's
/// (`is_ipmi_connection`), which staff and DCImanager itself need. Returns
/// how many it changed.
fn ports(dci: &mut Dci, s: &Server, up: bool) -> Result<usize, PluginError> {
    let want = if up { "up" } else { "down" };
    let mut changed = 0;
    for c in s.uplinks().filter(|c| c.admin_status != want) {
        dci.switch_port(s.id, c.id, up)?;
        changed += 1;
    }
    Ok(changed)
}

/// What the IPv6 setting asks for.
fn ipv6_wanted(ctx: &Context) -> Result<bool, PluginError> {
    match ctx.settings.get("ipv6").unwrap_or("address") {
        "address" => Ok(true),
        "none" => Ok(false),
        other => Err(PluginError::invalid_config(format!(
            "setting `ipv6` is `{other}`: use `address` or `none`"
        ))),
    }
}

/// Gives the server the addresses the plan includes: the IPv4 count, and
/// (unless `ipv6 = "none"`) one IPv6 address when its pool holds IPv6 too
/// ("to allocate IPv4 and IPv6 addresses to the server, add them to the
/// same pool"). A pool without IPv6 leaves the server IPv4 only.
fn allocate(dci: &mut Dci, ctx: &Context, s: &Server) -> Result<(), PluginError> {
    let have_v4 = s.ip.iter().filter(|i| !i.is_v6()).count() as u64;
    let want = wanted_ips(ctx)?;
    if have_v4 < want {
        let r = dci.allocate_ips(s.id, want - have_v4, "ipv4")?;
        if !r.is_success() {
            return Err(client::status_error("IPv4 allocation", &r));
        }
    }
    if ipv6_wanted(ctx)? && !s.ip.iter().any(|i| i.is_v6()) {
        let r = dci.allocate_ips(s.id, 1, "ipv6")?;
        match r.status {
            200..=299 => {}
            400..=499 => log::info(&format!(
                "server {}: no IPv6 in its pool ({}); it has IPv4 only",
                s.id,
                client::message(&r)
            )),
            _ => return Err(client::status_error("IPv6 allocation", &r)),
        }
    }
    Ok(())
}

/// Starts an install and answers `in-progress` with its reference.
fn start_install(dci: &mut Dci, ctx: &Context, s: &Server, owner: Option<u64>) -> Result<Outcome, PluginError> {
    let op = dci.install(s.id, os_template(ctx)?, &root_password(ctx)?, &recipes(ctx))?;
    Ok(Outcome::in_progress(remote_ref(s.id, op, owner), poll_ms(ctx)?, Some("installation started".into())))
}

/// `SERVER/OPERATION`, and `/USER` when the customer's DCImanager user is
/// known: `poll` reports it back to be kept for the customer.
fn remote_ref(server: u64, operation: u64, owner: Option<u64>) -> String {
    match owner {
        Some(user) => format!("{server}/{operation}/{user}"),
        None => format!("{server}/{operation}"),
    }
}

fn parse_ref(remote_ref: &str) -> Result<(u64, u64, Option<u64>), PluginError> {
    let bad = || PluginError::rejected(format!("`{remote_ref}` is not a SERVER/OPERATION[/USER] reference"));
    let mut parts = remote_ref.split('/');
    let server = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let operation = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let user = match parts.next() {
        Some(p) => Some(p.parse().map_err(|_| bad())?),
        None => None,
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok((server, operation, user))
}

/// What the service learns once its server is ready (and, kept for the
/// customer, the DCImanager user it belongs to).
fn done(ctx: &Context, s: &Server, owner: Option<u64>) -> Result<Outcome, PluginError> {
    let v4: Vec<&str> = s.ip.iter().filter(|i| !i.is_v6()).map(|i| i.name.as_str()).collect();
    let v6: Vec<&str> = s.ip.iter().filter(|i| i.is_v6()).map(|i| i.name.as_str()).collect();
    let all: Vec<&str> = s.ip.iter().map(|i| i.name.as_str()).collect();
    let mut params = vec![
        ("server_id".to_owned(), s.id.to_string()),
        ("hostname".to_owned(), s.domain.clone()),
        ("configuration".to_owned(), s.configuration.clone()),
        ("location_id".to_owned(), s.location_id.to_string()),
        ("ips".to_owned(), all.join(",")),
    ];
    if let Some(ip) = v4.first() {
        params.push(("primary_ip".into(), (*ip).to_owned()));
    }
    if let Some(ip) = v6.first() {
        params.push(("ipv6".into(), (*ip).to_owned()));
    }
    if let Some(os) = &s.os_template {
        params.push(("os".into(), os.name.clone()));
    }
    if let Some(user) = owner {
        params.push((ACCOUNT_USER.into(), user.to_string()));
    }
    Ok(Outcome::Done {
        params: Params(params),
        secret_params: Params(vec![("root_password".into(), root_password(ctx)?)]),
    })
}

/// `done`, saying what had to change (`sync.changed`) when anything did.
fn repaired(changes: &[Option<String>]) -> Outcome {
    let changed: Vec<&str> = changes.iter().flatten().map(String::as_str).collect();
    if changed.is_empty() {
        return Outcome::nothing();
    }
    Outcome::done([("sync.changed", changed.join(", "))])
}

impl ProcessingModule for Dcimanager6 {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "dcimanager6",
            env!("CARGO_PKG_VERSION"),
            &[
                "catalog",
                "suspend",
                "resume",
                "close",
                "reinstall",
                "poll",
                "sync",
                // A plan names what to sell, and a server is never given
                // out without an operating system.
                "requires:configuration",
                "requires:os_template|os",
            ],
        )
    }

    fn check_connection(settings: Params) -> Result<(), PluginError> {
        let mut dci = Dci::new(&settings)?;
        dci.locations()?;
        Ok(())
    }

    fn catalog(settings: Params) -> Result<Vec<CatalogItem>, PluginError> {
        let mut dci = Dci::new(&settings)?;
        let mut items = vec![];
        for l in dci.locations()? {
            for c in dci.configurations(Some(l.id))? {
                items.push(CatalogItem {
                    kind: "configuration".into(),
                    id: format!("{}@{}", c.configuration, l.id),
                    name: format!("{} ({})", c.configuration, l.name),
                    details: vec![
                        ("configuration".into(), c.configuration),
                        ("location".into(), l.id.to_string()),
                        ("location_name".into(), l.name.clone()),
                        ("free_server_count".into(), c.free_server_count.to_string()),
                    ],
                });
            }
        }
        for os in dci.os_templates()? {
            items.push(CatalogItem {
                kind: "os-template".into(),
                id: os.id.to_string(),
                name: os.name,
                details: vec![("tags".into(), os.tags.join(","))],
            });
        }
        // Only scripts customers may run are orderable.
        for s in dci.scripts()?.into_iter().filter(|s| s.access.as_deref() == Some("all")) {
            items.push(CatalogItem {
                kind: "addon".into(),
                id: format!("script-{}", s.id),
                name: s.name,
                details: vec![("script_id".into(), s.id.to_string())],
            });
        }
        Ok(items)
    }

    fn open(ctx: Context) -> Result<Outcome, PluginError> {
        let mut dci = Dci::new(&ctx.settings)?;
        let domain = domain(&ctx)?;
        // A repeated `open` (a retry after a crash or an outage) carries on
        // with the server it already took.
        let (server, owner) = match dci.server_by_domain(&domain)? {
            Some(s) => {
                // The server named after this service is ours: its owner is
                // the user an earlier attempt gave it to.
                let owner = match param_u64(&ctx.service.params, ACCOUNT_USER)? {
                    Some(id) => Some(id),
                    None => match &s.owner_email {
                        Some(email) => dci.user_by_email(email)?.map(|u| u.id),
                        None => None,
                    },
                };
                (s, owner)
            }
            None => {
                let owner = user_for(&mut dci, &ctx)?;
                (take_server(&mut dci, &ctx, owner, &domain)?, Some(owner))
            }
        };
        ports(&mut dci, &server, true)?;
        allocate(&mut dci, &ctx, &server)?;
        if let Some(op) = server.operation.as_ref().filter(|o| o.status == "running") {
            return Ok(Outcome::in_progress(remote_ref(server.id, op.id, owner), poll_ms(&ctx)?, None));
        }
        start_install(&mut dci, &ctx, &server, owner)
    }

    fn poll(ctx: Context, remote_ref: String) -> Result<Outcome, PluginError> {
        let (server, op, owner) = parse_ref(&remote_ref)?;
        let mut dci = Dci::new(&ctx.settings)?;
        let operation = dci.operation(op)?;
        match operation.status.as_str() {
            "ok" => done(&ctx, &dci.server(server)?, owner),
            "failed" | "canceled" => Err(PluginError::rejected(format!(
                "DCImanager install on server {server} {}: {}",
                operation.status,
                operation.reason()
            ))),
            _ => Ok(Outcome::in_progress(remote_ref, poll_ms(&ctx)?, operation.progress())),
        }
    }

    /// Ports down (the server stays powered). Also what a `sync` of a
    /// suspended service runs: it reports what it had to repair.
    fn suspend(ctx: Context) -> Result<Outcome, PluginError> {
        let mut dci = Dci::new(&ctx.settings)?;
        let s = require_server(&mut dci, &ctx)?;
        let downed = ports(&mut dci, &s, false)?;
        Ok(repaired(&[(downed > 0).then(|| format!("{downed} port(s) down"))]))
    }

    /// Ports up, power on. Also what a `sync` of an active service runs.
    fn resume(ctx: Context) -> Result<Outcome, PluginError> {
        let mut dci = Dci::new(&ctx.settings)?;
        let s = require_server(&mut dci, &ctx)?;
        let upped = ports(&mut dci, &s, true)?;
        let powered = s.power_status == "off";
        if powered {
            dci.power(s.id, true)?;
        }
        Ok(repaired(&[
            (upped > 0).then(|| format!("{upped} port(s) up")),
            powered.then(|| "powered on".to_owned()),
        ]))
    }

    fn close(ctx: Context) -> Result<Outcome, PluginError> {
        let mut dci = Dci::new(&ctx.settings)?;
        // Already released (a repeated close): nothing left to do.
        let Some(s) = find_server(&mut dci, &ctx)? else {
            return Ok(Outcome::nothing());
        };
        if let Some(owner) = &s.owner_email
            && !owned_by_customer(&mut dci, &ctx, owner)?
        {
            return Err(PluginError::rejected(format!(
                "server {} now belongs to someone else; not touching it",
                s.id
            )));
        }
        // A server that has no owner any more keeps its technical
        // addresses; only the customer's go back to the pool.
        if s.owner_email.is_some() {
            for ip in &s.ip {
                dci.release_ip(s.id, ip.id)?;
            }
            let r = dci.set_owner(s.id, None, Some(""))?;
            if !r.is_success() {
                return Err(client::status_error("server release", &r));
            }
        }
        ports(&mut dci, &s, false)?;
        dci.power(s.id, false)?;
        Ok(Outcome::nothing())
    }

    fn reinstall(ctx: Context) -> Result<Outcome, PluginError> {
        let mut dci = Dci::new(&ctx.settings)?;
        let s = require_server(&mut dci, &ctx)?;
        let owner = param_u64(&ctx.service.params, ACCOUNT_USER)?;
        if let Some(op) = s.operation.as_ref().filter(|o| o.status == "running") {
            return Ok(Outcome::in_progress(remote_ref(s.id, op.id, owner), poll_ms(&ctx)?, None));
        }
        start_install(&mut dci, &ctx, &s, owner)
    }
}

bursar_plugin_sdk::processing_module!(Dcimanager6);
