//! Templates for what Bursar writes to people: the e-mail messages
//! (subject, plain text, HTML) and the invoice (one template for the HTML
//! view and the PDF). Shipped in English and Russian, compiled into the
//! binary; a hosting company overrides any of them by dropping a file of
//! the same name into `[email] templates_dir` (and adds a language by
//! adding a directory). Every template is rendered with sample data when
//! loaded, so a broken one stops `bursar serve` at start, naming the file
//! and line.
//!
//! Names: `email/{lang}/{kind}.txt` with blocks `subject` and `body`;
//! `email/{lang}/{kind}.html` (optional: without it the body is set in
//! `email/{lang}/layout.html`); `invoice/{lang}/invoice.html`.

pub mod pdf;

use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior, Value};

use crate::messages::{Kind, sample_context};

macro_rules! builtin {
    ($path:literal) => {
        ($path, include_str!(concat!("../../templates/", $path)))
    };
}

/// The templates shipped in the binary.
pub static BUILTIN: &[(&str, &str)] = &[
    builtin!("email/en/balance_low.txt"),
    builtin!("email/en/deletion_warning.txt"),
    builtin!("email/en/footer.txt"),
    builtin!("email/en/invoice_issued.txt"),
    builtin!("email/en/layout.html"),
    builtin!("email/en/order_received.txt"),
    builtin!("email/en/password_reset.txt"),
    builtin!("email/en/payment_received.txt"),
    builtin!("email/en/refund_issued.txt"),
    builtin!("email/en/renewal_due.txt"),
    builtin!("email/en/service_active.txt"),
    builtin!("email/en/service_closed.txt"),
    builtin!("email/en/service_resumed.txt"),
    builtin!("email/en/service_suspended.txt"),
    builtin!("email/en/staff_manual_queue.txt"),
    builtin!("email/en/staff_plugin_failing.txt"),
    builtin!("email/en/staff_refund_failed.txt"),
    builtin!("email/en/welcome.txt"),
    builtin!("email/ru/balance_low.txt"),
    builtin!("email/ru/deletion_warning.txt"),
    builtin!("email/ru/footer.txt"),
    builtin!("email/ru/invoice_issued.txt"),
    builtin!("email/ru/layout.html"),
    builtin!("email/ru/order_received.txt"),
    builtin!("email/ru/password_reset.txt"),
    builtin!("email/ru/payment_received.txt"),
    builtin!("email/ru/refund_issued.txt"),
    builtin!("email/ru/renewal_due.txt"),
    builtin!("email/ru/service_active.txt"),
    builtin!("email/ru/service_closed.txt"),
    builtin!("email/ru/service_resumed.txt"),
    builtin!("email/ru/service_suspended.txt"),
    builtin!("email/ru/staff_manual_queue.txt"),
    builtin!("email/ru/staff_plugin_failing.txt"),
    builtin!("email/ru/staff_refund_failed.txt"),
    builtin!("email/ru/welcome.txt"),
    builtin!("invoice/en/invoice.html"),
    builtin!("invoice/ru/invoice.html"),
];

/// The languages shipped.
pub const BUILTIN_LANGUAGES: [&str; 2] = ["en", "ru"];

/// A message ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The loaded templates.
pub struct Templates {
    env: Environment<'static>,
    dir: Option<PathBuf>,
    default_language: String,
    languages: Vec<String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("dir", &self.dir)
            .field("languages", &self.languages)
            .finish()
    }
}

fn builtin_source(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Safe to join to the override directory: relative, no `..`.
fn plain_name(name: &str) -> bool {
    !name.starts_with('/')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != ".." && part != ".")
}

impl Templates {
    /// The shipped templates only, English by default.
    pub fn builtin() -> Templates {
        Templates::load(None, "en").expect("the shipped templates render")
    }

    /// The shipped templates, loaded once per process.
    pub fn shared_builtin() -> std::sync::Arc<Templates> {
        static BUILTIN: std::sync::OnceLock<std::sync::Arc<Templates>> = std::sync::OnceLock::new();
        BUILTIN
            .get_or_init(|| std::sync::Arc::new(Templates::builtin()))
            .clone()
    }

    /// The shipped templates with the files under `dir` (if any) taking
    /// their place, checked by rendering each with sample data. The error
    /// names the file and line.
    pub fn load(dir: Option<&Path>, default_language: &str) -> Result<Templates, String> {
        let mut env = Environment::new();
        env.add_filter("linkify", linkify);
        let root = dir.map(Path::to_path_buf);
        let loader_root = root.clone();
        env.set_loader(move |name: &str| {
            if !plain_name(name) {
                return Ok(None);
            }
            if let Some(root) = &loader_root {
                let path = root.join(name);
                if path.is_file() {
                    return std::fs::read_to_string(&path).map(Some).map_err(|e| {
                        minijinja::Error::new(
                            minijinja::ErrorKind::TemplateNotFound,
                            format!("{}: {e}", path.display()),
                        )
                    });
                }
            }
            Ok(builtin_source(name).map(str::to_owned))
        });
        let mut languages: Vec<String> = BUILTIN_LANGUAGES.map(str::to_owned).to_vec();
        if let Some(root) = &root {
            if !root.is_dir() {
                return Err(format!(
                    "templates directory {} does not exist",
                    root.display()
                ));
            }
            if let Ok(entries) = std::fs::read_dir(root.join("email")) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if entry.path().is_dir()
                        && crate::accounts::check_language(&name).is_ok()
                        && !languages.contains(&name)
                    {
                        languages.push(name);
                    }
                }
            }
        }
        languages.sort();
        if !languages.iter().any(|l| l == default_language) {
            return Err(format!(
                "default language `{default_language}` has no templates (there are: {})",
                languages.join(", ")
            ));
        }
        let mut templates = Templates {
            env,
            dir: root,
            default_language: default_language.to_owned(),
            languages,
        };
        templates.check()?;
        Ok(templates)
    }

    /// The languages messages can be written in.
    pub fn languages(&self) -> &[String] {
        &self.languages
    }

    /// Renders every template of every language with sample data; a
    /// field no message has, printed, fails too.
    fn check(&mut self) -> Result<(), String> {
        self.env
            .set_undefined_behavior(UndefinedBehavior::SemiStrict);
        let result = (|| {
            for lang in self.languages.clone() {
                for kind in Kind::ALL {
                    self.message(kind, &lang, &sample_context(kind))?;
                }
                self.invoice_html(&lang, &sample_invoice_context())?;
            }
            Ok(())
        })();
        self.env.set_undefined_behavior(UndefinedBehavior::Lenient);
        result
    }

    fn exists(&self, name: &str) -> bool {
        builtin_source(name).is_some()
            || self
                .dir
                .as_ref()
                .is_some_and(|d| plain_name(name) && d.join(name).is_file())
    }

    /// Where a template comes from, for messages.
    fn origin(&self, name: &str) -> String {
        match &self.dir {
            Some(d) if plain_name(name) && d.join(name).is_file() => {
                d.join(name).display().to_string()
            }
            _ => format!("{name} (built in)"),
        }
    }

    fn describe(&self, name: &str, e: &minijinja::Error) -> String {
        let at = e.name().unwrap_or(name);
        let mut text = format!("template {}", self.origin(at));
        if let Some(line) = e.line() {
            text.push_str(&format!(", line {line}"));
        }
        text.push_str(&format!(": {}", e.kind()));
        if let Some(detail) = e.detail() {
            text.push_str(&format!(": {detail}"));
        }
        text
    }

    /// The first of `lang`, the default language and English that has
    /// `file` under `{area}/{lang}/`.
    fn pick(&self, area: &str, lang: &str, file: &str) -> String {
        [lang, self.default_language.as_str(), "en"]
            .into_iter()
            .map(|l| format!("{area}/{l}/{file}"))
            .find(|name| self.exists(name))
            .unwrap_or_else(|| format!("{area}/en/{file}"))
    }

    fn render(&self, name: &str, ctx: &Value) -> Result<String, String> {
        let t = self
            .env
            .get_template(name)
            .map_err(|e| self.describe(name, &e))?;
        t.render(ctx).map_err(|e| self.describe(name, &e))
    }

    /// A message of `kind` in `lang` (or the fallback), from `ctx`.
    pub fn message(
        &self,
        kind: Kind,
        lang: &str,
        ctx: &serde_json::Value,
    ) -> Result<Rendered, String> {
        let name = self.pick("email", lang, &format!("{}.txt", kind.as_str()));
        let lang = name.split('/').nth(1).unwrap_or("en").to_owned();
        let value = Value::from_serialize(ctx);
        let t = self
            .env
            .get_template(&name)
            .map_err(|e| self.describe(&name, &e))?;
        let mut captured = t
            .render_captured(value.clone())
            .map_err(|e| self.describe(&name, &e))?;
        let (subject, body) = captured
            .with_state_mut(|state| {
                Ok::<_, minijinja::Error>((
                    state.render_block("subject")?,
                    state.render_block("body")?,
                ))
            })
            .map_err(|e| self.describe(&name, &e))?;
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        if subject.is_empty() {
            return Err(format!(
                "template {}: the subject is empty",
                self.origin(&name)
            ));
        }
        let text = tidy(&body);
        let paragraphs: Vec<&str> = text
            .split("\n\n")
            .filter(|p| !p.trim().is_empty())
            .collect();
        let extra = Value::from_iter([
            ("subject", Value::from(subject.as_str())),
            ("body", Value::from(text.as_str())),
            ("paragraphs", Value::from_serialize(&paragraphs)),
            ("lang", Value::from(lang.as_str())),
        ]);
        let merged = merge(&value, &extra);
        let html_name = format!("email/{lang}/{}.html", kind.as_str());
        let html = match self.exists(&html_name) {
            true => self.render(&html_name, &merged)?,
            false => self.render(&self.pick("email", &lang, "layout.html"), &merged)?,
        };
        Ok(Rendered {
            subject,
            text,
            html,
        })
    }

    /// The invoice (receipt, credit note) as HTML, from `ctx`.
    pub fn invoice_html(&self, lang: &str, ctx: &serde_json::Value) -> Result<String, String> {
        let name = self.pick("invoice", lang, "invoice.html");
        self.render(&name, &Value::from_serialize(ctx))
    }
}

/// `base` with the keys of `extra` added (objects both).
fn merge(base: &Value, extra: &Value) -> Value {
    let mut map = std::collections::BTreeMap::new();
    for v in [base, extra] {
        if let Ok(keys) = v.try_iter() {
            for k in keys {
                let val = v.get_item(&k).unwrap_or_default();
                map.insert(k.to_string(), val);
            }
        }
    }
    Value::from_iter(map)
}

/// Trailing spaces off every line, at most one blank line in a row.
fn tidy(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut blank = 0;
    for line in body.trim().lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A paragraph of plain text as HTML: escaped, lines broken with `<br>`,
/// `http(s)://` addresses made links — only those under `prefix` when it
/// is given (the portal's: a customer's own text, such as a name, never
/// becomes a link in a mail from the company).
fn linkify(text: &str, prefix: Option<&str>) -> Value {
    let mut out = String::with_capacity(text.len() + 32);
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push_str("<br>\n");
        }
        for (j, word) in line.split(' ').enumerate() {
            if j > 0 {
                out.push(' ');
            }
            let is_url = word.starts_with("https://") || word.starts_with("http://");
            if is_url && prefix.is_none_or(|p| word.starts_with(p)) {
                let url = escape_html(word);
                out.push_str(&format!("<a href=\"{url}\">{url}</a>"));
            } else {
                out.push_str(&escape_html(word));
            }
        }
    }
    Value::from_safe_string(out)
}

/// `[company]`: who the mail and the invoices are from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompanyConfig {
    pub name: String,
    /// Postal address, printed on invoices.
    pub address: String,
    /// VAT or tax id, printed on invoices.
    pub tax_id: String,
    /// Where customers write to.
    pub email: String,
    /// The customer portal; links in mail point under it.
    pub portal_url: String,
}

impl Default for CompanyConfig {
    fn default() -> Self {
        CompanyConfig {
            name: "Bursar".into(),
            address: String::new(),
            tax_id: String::new(),
            email: String::new(),
            portal_url: "http://127.0.0.1:8080".into(),
        }
    }
}

impl CompanyConfig {
    /// `path` under the portal.
    pub fn link(&self, path: &str) -> String {
        format!("{}/{}", self.portal_url.trim_end_matches('/'), path)
    }
}

/// A document as the invoice template sees it: amounts formatted with the
/// currency, the date in `zone`.
pub fn invoice_context(
    invoice: &crate::invoices::Invoice,
    customer: &crate::accounts::Account,
    company: &CompanyConfig,
    zone: crate::calendar::Zone,
) -> serde_json::Value {
    let money = |v: i64| format_money(v, invoice.currency);
    let lines: Vec<_> = invoice
        .lines
        .iter()
        .map(|l| {
            serde_json::json!({"description": l.description, "net": money(l.net), "tax": money(l.tax), "total": money(l.total)})
        })
        .collect();
    let taxes: Vec<_> = invoice
        .tax_lines
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "rate": format!("{}.{:02} %", t.rate_bp / 100, t.rate_bp % 100),
                "inclusive": t.inclusive,
                "net": money(t.net),
                "tax": money(t.tax),
            })
        })
        .collect();
    serde_json::json!({
        "company": company,
        "customer": {"name": customer.name, "email": customer.email, "country": customer.country},
        "invoice": {
            "id": invoice.id, "number": invoice.number, "kind": invoice.kind.as_str(),
            "date": zone.date_of(invoice.created_at).to_string(),
            "payment_id": invoice.payment_id, "currency": invoice.currency.code(),
            "lines": lines, "tax_lines": taxes,
            "net": money(invoice.net), "tax": money(invoice.tax), "total": money(invoice.total),
        }
    })
}

/// Minor units as people read them: `49.00 EUR`.
pub fn format_money(minor: i64, currency: crate::money::Currency) -> String {
    crate::money::Money::new(minor, currency)
        .map(|m| m.to_string())
        .unwrap_or_else(|_| format!("{minor} {}", currency.code()))
}

/// An invoice as the invoice template sees it, with sample data.
pub fn sample_invoice_context() -> serde_json::Value {
    serde_json::json!({
        "company": {"name": "Example Hosting", "address": "1 Example Street, Berlin, DE", "tax_id": "DE123456789", "email": "billing@example.com"},
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com", "country": "DE"},
        "invoice": {
            "id": "inv_sample", "number": "INV-2026-000042", "kind": "invoice", "date": "2026-12-01",
            "payment_id": null, "currency": "EUR",
            "lines": [{"description": "Dedicated E3-1230: service svc_sample for 1m", "net": "41.18 EUR", "tax": "7.82 EUR", "total": "49.00 EUR"}],
            "tax_lines": [{"name": "VAT", "rate": "19.00 %", "inclusive": true, "net": "41.18 EUR", "tax": "7.82 EUR"}],
            "net": "41.18 EUR", "tax": "7.82 EUR", "total": "49.00 EUR"
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_file_is_compiled_in() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                match e.path().is_dir() {
                    true => stack.push(e.path()),
                    false => on_disk.push(
                        e.path()
                            .strip_prefix(&root)
                            .unwrap()
                            .to_string_lossy()
                            .replace('\\', "/"),
                    ),
                }
            }
        }
        on_disk.sort();
        let mut compiled: Vec<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
        compiled.sort();
        assert_eq!(on_disk, compiled);
        for lang in BUILTIN_LANGUAGES {
            for kind in Kind::ALL {
                let name = format!("email/{lang}/{}.txt", kind.as_str());
                assert!(builtin_source(&name).is_some(), "{name} is not shipped");
            }
        }
    }

    #[test]
    fn every_message_renders_in_both_languages_with_its_subject() {
        let t = Templates::builtin();
        for kind in Kind::ALL {
            let en = t.message(kind, "en", &sample_context(kind)).unwrap();
            let ru = t.message(kind, "ru", &sample_context(kind)).unwrap();
            assert!(!en.subject.is_empty() && !en.subject.contains('\n'));
            assert_ne!(en.subject, ru.subject, "{kind:?}");
            assert!(ru.html.contains("lang=\"ru\""), "{kind:?}");
            assert!(en.text.contains("Example Hosting"), "{kind:?}: {}", en.text);
        }
        let de = t
            .message(Kind::Welcome, "de", &sample_context(Kind::Welcome))
            .unwrap();
        assert_eq!(
            de.subject, "Welcome to Example Hosting",
            "falls back to English"
        );
    }

    #[test]
    fn html_escapes_what_the_text_carries_and_links_addresses() {
        let t = Templates::builtin();
        let mut ctx = sample_context(Kind::Welcome);
        ctx["account"]["name"] = "<script>x</script>".into();
        let r = t.message(Kind::Welcome, "en", &ctx).unwrap();
        assert!(r.text.contains("<script>x</script>"), "plain text is plain");
        assert!(!r.html.contains("<script>"));
        assert!(r.html.contains("&lt;script&gt;"));
        assert!(r.html.contains("<a href=\"https://my.example.com\">"));
        // A customer's own address is text, not a link.
        ctx["account"]["name"] = "see https://evil.example/login".into();
        let r = t.message(Kind::Welcome, "en", &ctx).unwrap();
        assert!(r.html.contains("see https://evil.example/login"));
        assert!(!r.html.contains("href=\"https://evil.example"));
    }

    #[test]
    fn an_override_is_used_and_a_broken_one_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("email/en")).unwrap();
        std::fs::write(
            dir.path().join("email/en/welcome.txt"),
            "{% block subject %}Hi from {{ company.name }}{% endblock %}{% block body %}Custom{% endblock %}",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path()), "en").unwrap();
        let r = t
            .message(Kind::Welcome, "en", &sample_context(Kind::Welcome))
            .unwrap();
        assert_eq!(r.subject, "Hi from Example Hosting");
        assert_eq!(r.text, "Custom\n");

        std::fs::write(
            dir.path().join("email/en/welcome.txt"),
            "{% block subject %}Hi{% endblock %}\n{% block body %}\n{% if x %}\nunclosed\n{% endblock %}",
        )
        .unwrap();
        let e = Templates::load(Some(dir.path()), "en").unwrap_err();
        assert!(e.contains("email/en/welcome.txt"), "{e}");
        assert!(e.contains("line "), "{e}");

        std::fs::write(
            dir.path().join("email/en/welcome.txt"),
            "{% block subject %}Hi{% endblock %}{% block body %}{{ acount.name }}{% endblock %}",
        )
        .unwrap();
        let e = Templates::load(Some(dir.path()), "en").unwrap_err();
        assert!(
            e.contains("undefined"),
            "a misspelt field fails at load: {e}"
        );
    }

    #[test]
    fn a_new_language_is_a_directory_and_falls_back_per_message() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("email/de")).unwrap();
        std::fs::write(
            dir.path().join("email/de/welcome.txt"),
            "{% block subject %}Willkommen{% endblock %}{% block body %}Hallo{% endblock %}",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path()), "en").unwrap();
        assert!(t.languages().iter().any(|l| l == "de"));
        let ctx = sample_context(Kind::Welcome);
        assert_eq!(
            t.message(Kind::Welcome, "de", &ctx).unwrap().subject,
            "Willkommen"
        );
        let other = t.message(
            Kind::ServiceClosed,
            "de",
            &sample_context(Kind::ServiceClosed),
        );
        assert!(other.unwrap().subject.ends_with("is closed"));
        assert!(Templates::load(Some(dir.path()), "fr").is_err());
    }
}
