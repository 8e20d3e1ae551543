use super::*;

/// The codes the review of `sql` reports, run as the executor would run it
/// (in a transaction unless the script needs none), with `created` made
/// earlier in the run.
fn codes_with(sql: &str, created: &[&str]) -> Vec<&'static str> {
    let mut ctx = Context::for_script(crate::domain::Engine::Postgres, sql);
    ctx.created_tables = created.iter().map(|t| t.to_string()).collect();
    review_postgres(sql, &mut ctx)
        .into_iter()
        .map(|f| f.code)
        .collect()
}

fn codes(sql: &str) -> Vec<&'static str> {
    codes_with(sql, &[])
}

/// Each analyzer: scripts on which it must fire, and scripts on which it
/// must stay silent.
const CASES: &[(&str, &[&str], &[&str])] = &[
    (
        "parse",
        &[
            "CREATE TABLE t (id int primary key);\nSELEC 1;",
            "ALTER TABLE;",
        ],
        &["SELECT 1;", "-- nothing but a comment\n"],
    ),
    (
        "drop-schema",
        &["DROP SCHEMA app CASCADE;", "DROP DATABASE app;"],
        &["DROP VIEW v;"],
    ),
    (
        "drop-table",
        &["DROP TABLE users;", "DROP TABLE IF EXISTS public.users;"],
        &[
            "CREATE TABLE tmp (id int primary key); DROP TABLE tmp;",
            "DROP VIEW users;",
        ],
    ),
    (
        "drop-column",
        &["ALTER TABLE users DROP COLUMN email;"],
        &[
            "ALTER TABLE users DROP CONSTRAINT c;",
            "CREATE TABLE n (id int primary key, x int); ALTER TABLE n DROP COLUMN x;",
        ],
    ),
    (
        "truncate",
        &["TRUNCATE users;", "TRUNCATE TABLE a, b;"],
        &["DELETE FROM users WHERE id = 1;"],
    ),
    (
        "dml-without-where",
        &["DELETE FROM users;", "UPDATE users SET active = true;"],
        &[
            "DELETE FROM users WHERE id = 1;",
            "UPDATE users SET a = 1 WHERE b;",
            "CREATE TABLE n (id int primary key, a int); UPDATE n SET a = 1;",
        ],
    ),
    (
        "rename-table",
        &["ALTER TABLE users RENAME TO people;"],
        &[
            "ALTER TABLE users RENAME COLUMN a TO b;",
            "CREATE TABLE n (id int primary key); ALTER TABLE n RENAME TO m;",
        ],
    ),
    (
        "rename-column",
        &["ALTER TABLE users RENAME COLUMN name TO full_name;"],
        &["ALTER TABLE users RENAME TO people;"],
    ),
    (
        "set-not-null",
        &["ALTER TABLE users ALTER COLUMN email SET NOT NULL;"],
        &["ALTER TABLE users ALTER COLUMN email DROP NOT NULL;"],
    ),
    (
        "change-column-type",
        &["ALTER TABLE users ALTER COLUMN age TYPE bigint;"],
        &["ALTER TABLE users ALTER COLUMN age SET DEFAULT 0;"],
    ),
    (
        "unique-on-existing",
        &[
            "CREATE UNIQUE INDEX CONCURRENTLY u ON users (email);",
            "ALTER TABLE users ADD CONSTRAINT u UNIQUE (email);",
            "ALTER TABLE users ADD PRIMARY KEY (id);",
        ],
        &[
            "CREATE INDEX CONCURRENTLY i ON users (email);",
            "ALTER TABLE users ADD CONSTRAINT u UNIQUE USING INDEX u_idx;",
            "CREATE TABLE n (id int primary key, e text); CREATE UNIQUE INDEX u ON n (e);",
        ],
    ),
    (
        "not-null-column-without-default",
        &["ALTER TABLE users ADD COLUMN tier int NOT NULL;"],
        &[
            "ALTER TABLE users ADD COLUMN tier int NOT NULL DEFAULT 0;",
            "ALTER TABLE users ADD COLUMN tier int;",
            "ALTER TABLE users ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY NOT NULL;",
        ],
    ),
    (
        "validates-existing-rows",
        &[
            "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id);",
            "ALTER TABLE orders ADD CONSTRAINT c CHECK (total >= 0);",
        ],
        &[
            "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;",
            "ALTER TABLE orders VALIDATE CONSTRAINT fk;",
        ],
    ),
    (
        "index-not-concurrent",
        &[
            "CREATE INDEX i ON users (email);",
            "CREATE UNIQUE INDEX i ON users (email);",
        ],
        &[
            "CREATE INDEX CONCURRENTLY i ON users (email);",
            "CREATE TABLE n (id int primary key, e text);\nCREATE INDEX i ON n (e);",
        ],
    ),
    (
        "drop-index-not-concurrent",
        &["DROP INDEX users_email_idx;"],
        &[
            "DROP INDEX CONCURRENTLY users_email_idx;",
            "CREATE INDEX CONCURRENTLY i ON t (a);\nDROP INDEX i;",
        ],
    ),
    (
        "concurrently-in-transaction",
        &["BEGIN;\nCREATE INDEX CONCURRENTLY i ON users (email);\nCOMMIT;"],
        &[
            "CREATE INDEX CONCURRENTLY i ON users (email);",
            "DROP INDEX CONCURRENTLY i;",
        ],
    ),
    (
        "type-change-rewrites",
        &[
            "ALTER TABLE users ALTER COLUMN id TYPE bigint;",
            "ALTER TABLE users ALTER id SET DATA TYPE bigint USING id::bigint;",
        ],
        &[
            "ALTER TABLE users ALTER COLUMN id SET STATISTICS 100;",
            "CREATE TABLE n (id int primary key); ALTER TABLE n ALTER id TYPE bigint;",
        ],
    ),
    (
        "volatile-default",
        &[
            "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();",
            "ALTER TABLE users ADD COLUMN r int DEFAULT (random() * 10)::int;",
            "ALTER TABLE users ADD COLUMN seen timestamptz DEFAULT clock_timestamp();",
            "ALTER TABLE users ADD COLUMN n bigserial;",
        ],
        &[
            "ALTER TABLE users ADD COLUMN created timestamptz NOT NULL DEFAULT now();",
            "ALTER TABLE users ADD COLUMN created timestamptz DEFAULT CURRENT_TIMESTAMP;",
            "ALTER TABLE users ADD COLUMN n int DEFAULT 0;",
            "CREATE TABLE n (id uuid primary key DEFAULT gen_random_uuid());",
        ],
    ),
    (
        "constraint-without-not-valid",
        &["ALTER TABLE orders ADD FOREIGN KEY (user_id) REFERENCES users (id);"],
        &["ALTER TABLE orders ADD CONSTRAINT c CHECK (total >= 0) NOT VALID;"],
    ),
    (
        "constraint-without-index",
        &[
            "ALTER TABLE users ADD PRIMARY KEY (id);",
            "ALTER TABLE users ADD CONSTRAINT u UNIQUE (email);",
        ],
        &["ALTER TABLE users ADD CONSTRAINT users_pkey PRIMARY KEY USING INDEX users_id_idx;"],
    ),
    (
        "vacuum-full",
        &["VACUUM FULL users;"],
        &["VACUUM ANALYZE users;"],
    ),
    (
        "cluster",
        &["CLUSTER users USING users_pkey;"],
        &["ANALYZE users;"],
    ),
    (
        "lock-table",
        &["LOCK TABLE users IN ACCESS EXCLUSIVE MODE;"],
        &["SELECT * FROM users FOR UPDATE;"],
    ),
    (
        "transaction-control",
        &[
            "BEGIN;\nUPDATE t SET a = 1 WHERE b;\nCOMMIT;",
            "UPDATE t SET a = 1 WHERE b; COMMIT;",
        ],
        &[
            "-- migrate-hub:no-transaction\nBEGIN;\nUPDATE t SET a = 1 WHERE b;\nCOMMIT;",
            "SAVEPOINT s; RELEASE SAVEPOINT s;",
        ],
    ),
    (
        "table-without-primary-key",
        &["CREATE TABLE log (at timestamptz, line text);"],
        &[
            "CREATE TABLE t (id int PRIMARY KEY);",
            "CREATE TABLE t (a int, b int, PRIMARY KEY (a, b));",
            "CREATE TABLE t_2024 PARTITION OF t FOR VALUES FROM (1) TO (2);",
            "CREATE TEMPORARY TABLE scratch (a int);",
        ],
    ),
];

#[test]
fn review_postgres_analyzers_fire_and_stay_silent_and_every_one_has_cases() {
    crate::review::tests::check_cases("postgres", CASES, codes);
}

#[test]
fn review_postgres_tables_created_earlier_in_the_run_are_new() {
    assert!(codes("CREATE INDEX i ON users (email);").contains(&"index-not-concurrent"));
    assert!(codes_with("CREATE INDEX i ON users (email);", &["users"]).is_empty());
    assert!(codes_with("DROP TABLE public.Users;", &["users"]).is_empty());
}

#[test]
fn review_postgres_points_at_statement_and_line() {
    let sql = "-- header\nCREATE TABLE t (id int primary key);\n\n/* why */\nDROP TABLE users;\n";
    let findings = review_postgres(
        sql,
        &mut Context::for_script(crate::domain::Engine::Postgres, sql),
    );
    assert_eq!(findings.len(), 1, "{findings:?}");
    let f = &findings[0];
    assert_eq!(
        (f.code, f.statement, f.line, f.severity),
        ("drop-table", 2, 5, super::super::Severity::Error)
    );
    assert!(!f.hint.is_empty());
}

#[test]
fn review_postgres_reviews_the_statements_around_one_that_does_not_parse() {
    let sql = "DROP TABLE a;\nSELEC 1;\nDROP TABLE b;\n";
    let findings = review_postgres(sql, &mut Context::default());
    let got: Vec<(&str, usize, usize)> = findings
        .iter()
        .map(|f| (f.code, f.statement, f.line))
        .collect();
    assert_eq!(
        got,
        [("drop-table", 1, 1), ("parse", 2, 2), ("drop-table", 3, 3)]
    );
}

#[test]
fn review_postgres_an_unterminated_script_is_one_parse_finding() {
    let findings = review_postgres("SELECT 'never closed;\n", &mut Context::default());
    assert_eq!(
        findings.iter().map(|f| f.code).collect::<Vec<_>>(),
        ["parse"]
    );
}

#[test]
fn review_postgres_the_context_learns_the_tables_the_script_creates() {
    let mut ctx = Context::default();
    review_postgres("CREATE TABLE Orders (id int primary key);", &mut ctx);
    assert!(ctx.created_tables.contains("orders"));
    assert!(review_postgres("CREATE INDEX i ON orders (id);", &mut ctx).is_empty());
}
