use super::*;

fn codes_with(sql: &str, created: &[&str]) -> Vec<&'static str> {
    let mut ctx = Context {
        transactional: false,
        created_tables: created.iter().map(|t| t.to_string()).collect(),
    };
    review_mysql(sql, &mut ctx)
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
            "SELEC 1;",
            "CREATE TABLE t (id int primary key);\nALTER TABLE t ADD;",
        ],
        &["SELECT 1;", "/* only a comment */"],
    ),
    (
        "drop-schema",
        &["DROP DATABASE app;", "DROP SCHEMA app;"],
        &["DROP VIEW v;"],
    ),
    (
        "drop-table",
        &["DROP TABLE users;", "DROP TABLE IF EXISTS `app`.`users`;"],
        &[
            "CREATE TABLE tmp (id int primary key); DROP TABLE tmp;",
            "DROP INDEX i ON users;",
        ],
    ),
    (
        "drop-column",
        &[
            "ALTER TABLE users DROP COLUMN email;",
            "ALTER TABLE users DROP email;",
        ],
        &["ALTER TABLE users DROP INDEX email;"],
    ),
    (
        "truncate",
        &["TRUNCATE TABLE users;"],
        &["DELETE FROM users WHERE id = 1;"],
    ),
    (
        "dml-without-where",
        &["DELETE FROM users;", "UPDATE users SET active = 1;"],
        &[
            "DELETE FROM users WHERE id = 1;",
            "UPDATE users SET a = 1 WHERE b = 2;",
            "DELETE FROM users LIMIT 1000;",
        ],
    ),
    (
        "rename-table",
        &[
            "RENAME TABLE users TO people;",
            "ALTER TABLE users RENAME TO people;",
        ],
        &["CREATE TABLE n (id int primary key); RENAME TABLE n TO m;"],
    ),
    (
        "rename-column",
        &[
            "ALTER TABLE users RENAME COLUMN name TO full_name;",
            "ALTER TABLE users CHANGE name full_name varchar(255);",
        ],
        &["ALTER TABLE users CHANGE name name varchar(255);"],
    ),
    (
        "set-not-null",
        &["ALTER TABLE users MODIFY email varchar(255) NOT NULL;"],
        &["ALTER TABLE users MODIFY email varchar(255) NULL;"],
    ),
    (
        "change-column-type",
        &[
            "ALTER TABLE users MODIFY age bigint;",
            "ALTER TABLE users CHANGE age age bigint;",
        ],
        &["ALTER TABLE users ADD COLUMN age int;"],
    ),
    (
        "unique-on-existing",
        &[
            "CREATE UNIQUE INDEX u ON users (email);",
            "ALTER TABLE users ADD UNIQUE KEY u (email);",
        ],
        &[
            "CREATE INDEX i ON users (email);",
            "CREATE TABLE n (id int primary key, e int); CREATE UNIQUE INDEX u ON n (e);",
        ],
    ),
    (
        "not-null-column-without-default",
        &["ALTER TABLE users ADD COLUMN tier int NOT NULL;"],
        &[
            "ALTER TABLE users ADD COLUMN tier int NOT NULL DEFAULT 0;",
            "ALTER TABLE users ADD COLUMN tier int;",
        ],
    ),
    (
        "validates-existing-rows",
        &["ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id);"],
        &["ALTER TABLE orders ADD INDEX i (user_id);"],
    ),
    (
        "lock-table",
        &["LOCK TABLES users WRITE;"],
        &["SELECT * FROM users FOR UPDATE;"],
    ),
    (
        "mysql-copy-alter",
        &[
            "ALTER TABLE users MODIFY age bigint;",
            "ALTER TABLE users CHANGE a b int;",
        ],
        &[
            "ALTER TABLE users MODIFY age bigint, ALGORITHM=INPLACE, LOCK=NONE;",
            "ALTER TABLE users ADD COLUMN x int;",
            "CREATE TABLE n (id int primary key, a int); ALTER TABLE n MODIFY a bigint;",
        ],
    ),
    (
        "mysql-multiple-alters",
        &["ALTER TABLE users ADD COLUMN a int;\nALTER TABLE users ADD COLUMN b int;"],
        &[
            "ALTER TABLE users ADD COLUMN a int, ADD COLUMN b int;",
            "ALTER TABLE a ADD COLUMN x int;\nALTER TABLE b ADD COLUMN x int;",
        ],
    ),
    (
        "mysql-mixed-ddl-dml",
        &["ALTER TABLE users ADD COLUMN a int;\nUPDATE users SET a = 1 WHERE id > 0;"],
        &[
            "ALTER TABLE users ADD COLUMN a int;",
            "INSERT INTO users (id) VALUES (1);",
        ],
    ),
    (
        "table-without-primary-key",
        &["CREATE TABLE log (at datetime, line text);"],
        &[
            "CREATE TABLE t (id int PRIMARY KEY);",
            "CREATE TABLE t (id int AUTO_INCREMENT, PRIMARY KEY (id)) ENGINE=InnoDB;",
            "CREATE TEMPORARY TABLE scratch (a int);",
        ],
    ),
];

#[test]
fn review_mysql_analyzers_fire_and_stay_silent_and_every_one_has_cases() {
    crate::review::tests::check_cases("mysql", CASES, codes);
}

#[test]
fn review_mysql_not_null_without_default_is_a_warning_on_mysql() {
    let findings = review_mysql(
        "ALTER TABLE users ADD COLUMN tier int NOT NULL;",
        &mut Context::default(),
    );
    let f = findings
        .iter()
        .find(|f| f.code == "not-null-column-without-default")
        .unwrap();
    assert_eq!(f.severity, Severity::Warning);
}

#[test]
fn review_mysql_points_at_statement_and_line_across_delimiters() {
    let sql = "CREATE TABLE t (id int primary key);\nDELIMITER //\nCREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.id = 1; END//\nDELIMITER ;\n\nDROP TABLE users;\n";
    let findings = review_mysql(sql, &mut Context::default());
    let drop = findings
        .iter()
        .find(|f| f.code == "drop-table")
        .expect("drop-table");
    assert_eq!((drop.statement, drop.line), (3, 6));
}

#[test]
fn review_mysql_reviews_the_statements_around_one_that_does_not_parse() {
    let findings = review_mysql(
        "DROP TABLE a;\nSELEC 1;\nDROP TABLE b;\n",
        &mut Context::default(),
    );
    let got: Vec<(&str, usize, usize)> = findings
        .iter()
        .map(|f| (f.code, f.statement, f.line))
        .collect();
    assert_eq!(
        got,
        [("drop-table", 1, 1), ("parse", 2, 2), ("drop-table", 3, 3)]
    );
}
