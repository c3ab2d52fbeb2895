//! Misbehaves as its `mode` setting says, so the host's limits can be
//! tested against a real component. Never configure it in production.

use bursar_plugin_sdk::prelude::*;

struct Hostile;

fn mode(ctx: &Context) -> &str {
    ctx.settings.get("mode").unwrap_or("ok")
}

impl ProcessingModule for Hostile {
    fn info() -> PluginInfo {
        PluginInfo::new("hostile", env!("CARGO_PKG_VERSION"), &["catalog", "suspend", "resume", "close"])
    }

    fn check_connection(settings: Params) -> Result<(), PluginError> {
        match settings.get("url") {
            Some(url) => {
                let r = Client.get(url).send()?;
                if r.is_success() { Ok(()) } else { Err(PluginError::unavailable(format!("HTTP {}", r.status))) }
            }
            None => Ok(()),
        }
    }

    fn catalog(settings: Params) -> Result<Vec<CatalogItem>, PluginError> {
        let kind = if settings.get("mode") == Some("garbage-catalog") { "spaceship" } else { "configuration" };
        Ok(vec![CatalogItem { kind: kind.into(), id: "c1".into(), name: "Config 1".into(), details: vec![] }])
    }

    fn open(ctx: Context) -> Result<Outcome, PluginError> {
        match mode(&ctx) {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![7u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("hostile plugin panics on purpose"),
            "http" => {
                let url = ctx.settings.require("url")?;
                let r = Client.get(url).timeout_ms(60_000).send()?;
                Ok(Outcome::done([("status", r.status.to_string()), ("body", r.text())]))
            }
            "post" => {
                let url = ctx.settings.require("url")?;
                let r = Client.post(url).header("content-type", "application/json").body(r#"{"hello":"world"}"#).send()?;
                Ok(Outcome::done([("status", r.status.to_string()), ("body", r.text())]))
            }
            "garbage-key" => Ok(Outcome::done([("not a key!", "x")])),
            "garbage-huge" => Ok(Outcome::done([("blob", "x".repeat(3 << 20))])),
            "garbage-many" => Ok(Outcome::Done {
                params: Params((0..1000).map(|i| (format!("k{i}"), "v".to_owned())).collect()),
                secret_params: Params::default(),
            }),
            "garbage-progress" => Ok(Outcome::in_progress("", u64::MAX, None)),
            "print" => {
                println!("hello from the guest's stdout");
                eprintln!("and from its stderr");
                log::warn("and through host.log");
                Ok(Outcome::nothing())
            }
            "env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                let files = std::fs::read_dir("/").map(|d| d.count()).unwrap_or(0);
                let etc = std::fs::read_to_string("/etc/passwd").is_ok();
                Ok(Outcome::done([
                    ("env_vars", vars.len().to_string()),
                    ("root_entries", files.to_string()),
                    ("read_etc_passwd", etc.to_string()),
                ]))
            }
            _ => Ok(Outcome::done([("opened_by", "hostile"), ("operation", ctx.operation_id.as_str())])),
        }
    }

    fn suspend(_ctx: Context) -> Result<Outcome, PluginError> {
        Ok(Outcome::nothing())
    }

    fn resume(_ctx: Context) -> Result<Outcome, PluginError> {
        Ok(Outcome::nothing())
    }

    fn close(_ctx: Context) -> Result<Outcome, PluginError> {
        Ok(Outcome::done([("closed", "yes")]))
    }
}

bursar_plugin_sdk::processing_module!(Hostile);
