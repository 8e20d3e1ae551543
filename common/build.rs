//! `sqlx::migrate!` embeds the tool database's migrations at compile time;
//! a new or changed file under `migrations/` must rebuild this crate.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
