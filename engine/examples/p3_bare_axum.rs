//! P3's reference: a bare axum handler answering every GET with the same
//! JSON body, on the same runtime `bursar serve` uses (tokio's
//! multi-threaded scheduler, one worker per core). `.ci/bench-p3` measures
//! Bursar's reads against it in the same run.
//!
//! `cargo run --release -p bursar --example p3_bare_axum -- ADDR FILE`
//!
//! ADDR is where it listens (`127.0.0.1:18090`), FILE the JSON it answers
//! with (a balance as Bursar returned it).

use axum::Router;
use axum::http::header;
use axum::routing::get;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(file)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: p3_bare_axum ADDR FILE");
    };
    let body: &'static str = String::leak(std::fs::read_to_string(&file)?);
    let answer = move || async move { ([(header::CONTENT_TYPE, "application/json")], body) };
    let app = Router::new()
        .route("/", get(answer))
        .route("/{*path}", get(answer))
        .into_make_service();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
