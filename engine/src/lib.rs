//! Bursar: a billing engine for hosting companies.
//!
//! The domain (`money`, `ledger`, `accounts`) is pure and free of I/O;
//! `store` is the one place that talks SQL; `api` is the HTTP edge;
//! `server` wires them together for `bursar serve`.

pub mod accounts;
pub mod api;
pub mod automation;
pub mod backup;
pub mod billing;
pub mod calendar;
pub mod catalog;
pub mod charges;
pub mod clock;
pub mod config;
pub mod console;
pub mod demo;
pub mod directory;
pub mod error;
pub mod files;
pub mod ids;
pub mod invoices;
pub mod ledger;
pub mod lifecycle;
pub mod messages;
pub mod metrics;
pub mod money;
pub mod notify;
pub mod payments;
pub mod plans;
pub mod plugins;
pub mod secrets;
pub mod seed;
pub mod server;
pub mod services;
pub mod store;
pub mod templates;
