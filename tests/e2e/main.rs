//! Bursar's end-to-end tests: the HTTP API in-process and the real binary,
//! against SQLite by default or PostgreSQL when `BURSAR_TEST_DATABASE_URL`
//! is set. One test binary with modules keeps link times down.

mod accounts;
mod auth;
mod automation;
mod bad_input;
mod cli;
mod concurrency;
mod console;
mod crash;
mod customer_props;
mod dcimanager6;
mod dcimanager6_contract;
mod idempotency;
mod invoices;
mod ledger_props;
mod lifecycle;
mod module_graph;
mod notifications;
mod operations;
mod operator;
mod order_batch;
mod payments;
mod plugins;
mod policy;
mod python_plugin;
mod simulation;
mod stripe;
mod trust;
mod webhooks;
