//! The control plane's integration tests, one binary (`it`): each module a
//! suite, `support` the harness they share. One suite alone:
//! `cargo nextest run -p control-plane -E 'test(/^run_flow::/)'` (add
//! `binary(it) & …` where the library's unit tests have a module of the
//! same name, such as `api` or `ci`).

mod support;

mod api;
mod approvals;
mod baseline;
mod browser;
mod ci;
mod cli;
mod dead_pools;
mod deploy;
mod drift;
mod edge;
mod fleet_view;
mod histories;
mod import;
mod inventory;
mod inventory_pages;
mod keys;
mod lint;
mod live;
mod metrics;
mod openapi;
mod pages;
mod rate_limits;
mod rbac;
mod resolve;
mod review;
mod run_flow;
mod schema;
mod signin;
mod snapshots;
mod traces;
mod windows;
