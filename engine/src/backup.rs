//! `bursar backup` and `bursar restore`.
//!
//! SQLite: `VACUUM INTO` writes a consistent copy of the database as of
//! one read transaction while Bursar keeps serving (writers are not
//! blocked); restoring checks the copy's integrity, puts it where the
//! configuration points (which must not hold a database yet), brings its
//! schema up to date and audits it. PostgreSQL: `pg_dump --format=custom`
//! and `pg_restore` into an empty database, then the same upgrade and
//! audit. The secrets key (`[secrets]`) is not in the database: back it up
//! with it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::store::{Backend, Store, StoreOptions, audit};

/// Writes a consistent copy of the database at `url` into `to` (which must
/// not exist).
pub async fn backup(store: &Store, url: &str, to: &Path) -> anyhow::Result<()> {
    if to.exists() {
        bail!("{} exists; a backup never overwrites", to.display());
    }
    match store.backend() {
        Backend::Sqlite => {
            let mut r = store.reader().await?;
            let target = to.to_string_lossy().into_owned();
            match r.conn() {
                crate::store::Conn::Sqlite(c) => {
                    sqlx::query("VACUUM INTO ?")
                        .bind(&target)
                        .execute(&mut *c)
                        .await
                        .with_context(|| format!("writing {}", to.display()))?;
                }
                crate::store::Conn::Postgres(_) => unreachable!("a SQLite store"),
            }
            Ok(())
        }
        Backend::Postgres => {
            let status = Command::new("pg_dump")
                .args(["--format=custom", "--no-owner", "--file"])
                .arg(to)
                .arg(url)
                .status()
                .context("running pg_dump (install PostgreSQL's client tools)")?;
            if !status.success() {
                bail!("pg_dump failed ({status})");
            }
            Ok(())
        }
    }
}

/// Where a `sqlite://PATH` URL keeps its file.
fn sqlite_path(url: &str) -> anyhow::Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .context("not a sqlite:// URL")?;
    let path = rest.split('?').next().unwrap_or(rest);
    Ok(PathBuf::from(path))
}

/// Restores the backup `from` into the database at `url` (which must be
/// new: a SQLite file that does not exist, or an empty PostgreSQL
/// database), upgrades its schema and audits it.
pub async fn restore(url: &str, from: &Path, opts: &StoreOptions) -> anyhow::Result<audit::Report> {
    if !from.is_file() {
        bail!("{} is not a file", from.display());
    }
    if url.starts_with("sqlite:") {
        let path = sqlite_path(url)?;
        if path.exists() {
            bail!(
                "{} exists; restore into a new location (move the old database away first)",
                path.display()
            );
        }
        // The copy must be a sound SQLite database before it takes the place.
        let source = Store::connect(&format!("sqlite://{}", from.display()), opts).await?;
        let verdict: String = {
            let mut r = source.reader().await?;
            match r.conn() {
                crate::store::Conn::Sqlite(c) => {
                    sqlx::query_scalar("PRAGMA integrity_check")
                        .fetch_one(&mut *c)
                        .await?
                }
                crate::store::Conn::Postgres(_) => unreachable!("a SQLite store"),
            }
        };
        source.close().await;
        if verdict != "ok" {
            bail!("{} is damaged: {verdict}", from.display());
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let partial = path.with_extension("restoring");
        std::fs::copy(from, &partial)
            .with_context(|| format!("copying to {}", partial.display()))?;
        std::fs::rename(&partial, &path)?;
    } else {
        let store = Store::connect(url, opts).await?;
        let tables: i64 = {
            let mut r = store.reader().await?;
            match r.conn() {
                crate::store::Conn::Postgres(c) => sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
                )
                .fetch_one(&mut *c)
                .await?,
                crate::store::Conn::Sqlite(_) => unreachable!("a PostgreSQL store"),
            }
        };
        store.close().await;
        if tables > 0 {
            bail!("the database already has tables; restore into an empty one");
        }
        let status = Command::new("pg_restore")
            .args(["--no-owner", "--exit-on-error", "--dbname"])
            .arg(url)
            .arg(from)
            .status()
            .context("running pg_restore (install PostgreSQL's client tools)")?;
        if !status.success() {
            bail!("pg_restore failed ({status})");
        }
    }
    let store = Store::connect(url, opts).await?;
    store.migrate().await?;
    let report = {
        let mut r = store.reader().await?;
        audit::run(r.conn()).await?
    };
    store.close().await;
    Ok(report)
}
