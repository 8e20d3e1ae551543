//! The worker's integration tests, one binary (`it`): each module a suite,
//! `support` the harness they share. One suite alone:
//! `cargo nextest run -p worker -E 'test(/^faults::/)'`.

mod support;

mod drift;
mod faults;
mod introspect;
mod lifecycle;
mod lock_budget;
mod mysql_targets;
mod postgres_targets;
mod snapshots;
mod traces;
mod windows;
