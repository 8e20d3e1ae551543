//! The migrate-hub control plane: web app, JSON API, approvals and audit.
//! It decides; workers execute.

pub mod api;
pub mod app;
pub mod auth;
pub mod bare_errors;
pub mod changes;
pub mod ci;
pub mod cli;
pub mod dead_workers;
pub mod error;
pub mod http_trace;
pub mod human;
pub mod input;
pub mod lint;
pub mod listener;
pub mod live;
pub mod metrics;
pub mod notify;
pub mod paging;
pub mod routes;
pub mod run_view;
pub mod security_headers;
pub mod service;
pub mod shared_reads;
pub mod state;
pub mod templates;
pub mod timeline;
pub mod web;
