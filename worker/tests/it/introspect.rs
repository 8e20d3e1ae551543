//! Schema introspection against the local PostgreSQL and MariaDB: every
//! object kind appears in the rendered schema; identical schemas hash
//! equal; volatile parts (row counts, `AUTO_INCREMENT`) and the hub's own
//! history table stay out.

use common::{
    domain::schema::{self, Schema},
    targets::introspect,
    testing::{TestDatabase, TestMysqlDatabase},
};
use mysql_async::prelude::Queryable;

const PG_SCHEMA: &str = "
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE SCHEMA app;
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN app.email AS text NOT NULL CHECK (VALUE LIKE '%@%');
CREATE SEQUENCE app.invoice_no START 1000 INCREMENT 5;
CREATE TABLE app.accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email app.email,
    name text COLLATE \"C\" DEFAULT 'anon',
    mood app.mood,
    upper_name text GENERATED ALWAYS AS (upper(name)) STORED,
    CONSTRAINT accounts_email_key UNIQUE (email)
);
CREATE TABLE app.orders (
    id serial PRIMARY KEY,
    account_id bigint REFERENCES app.accounts (id) ON DELETE CASCADE,
    total numeric(10, 2) CHECK (total >= 0)
);
CREATE INDEX orders_account_idx ON app.orders (account_id);
CREATE TABLE app.events (at date NOT NULL, what text) PARTITION BY RANGE (at);
CREATE TABLE app.events_2026 PARTITION OF app.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE VIEW app.rich AS SELECT account_id, sum(total) AS total FROM app.orders GROUP BY account_id;
CREATE MATERIALIZED VIEW app.rich_now AS SELECT * FROM app.rich;
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE PROCEDURE app.tidy() LANGUAGE sql AS $$ DELETE FROM app.orders WHERE total = 0 $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE TABLE public.migrate_hub_history (version text);
";

async fn pg_schema(url: &str) -> (Schema, introspect::Introspected) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let read = introspect::postgres(&client).await.unwrap();
    (schema::render(read.objects.clone()), read)
}

#[tokio::test]
async fn postgres_every_object_kind_is_in_the_snapshot_and_equal_schemas_hash_equal() {
    let (one, two) = (
        TestDatabase::create("mh_test_introspect").await,
        TestDatabase::create("mh_test_introspect").await,
    );
    for db in [&one, &two] {
        let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client.batch_execute(PG_SCHEMA).await.unwrap();
    }
    let (first, read) = pg_schema(&one.url).await;
    let text = &first.text;
    for expected in [
        "extension pg_trgm\n",
        "schema app\n",
        "type app.mood\n  enum ('sad', 'ok', 'happy')\n",
        "domain app.email\n  as text not null\n  constraint email_check CHECK (VALUE ~~ '%@%'::text)\n",
        "sequence app.invoice_no\n  as bigint start 1000 increment 5",
        "sequence app.orders_id_seq\n",
        "owned by app.orders.id",
        "table app.accounts\n  column id bigint not null generated always as identity\n",
        "column name text default 'anon'::text collate \"C\"",
        "column upper_name text generated always as (upper(name)) stored",
        "constraint accounts_email_key UNIQUE (email)",
        "constraint orders_account_id_fkey FOREIGN KEY (account_id) REFERENCES app.accounts(id) ON DELETE CASCADE",
        "constraint orders_total_check CHECK (total >= 0::numeric)",
        "index CREATE INDEX orders_account_idx ON app.orders USING btree (account_id)",
        "partition by RANGE (at)",
        "partition of app.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
        "view app.rich\n",
        "materialized view app.rich_now\n",
        "function app.touch()\n",
        "procedure app.tidy()\n",
        "trigger app.orders.orders_touch\n  CREATE TRIGGER orders_touch BEFORE UPDATE ON app.orders",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    // Extensions' own objects, identity sequences and the hub's history stay out.
    for absent in ["similarity", "accounts_id_seq", "migrate_hub_history"] {
        assert!(!text.contains(absent), "{absent:?} in\n{text}");
    }
    assert!(read.sizes.iter().any(|s| s.table == "app.orders"));

    // The same DDL elsewhere: the same text and hash. Rows change sizes, not the hash.
    let (second, _) = pg_schema(&two.url).await;
    assert_eq!(first.hash, second.hash);
    let (client, connection) = tokio_postgres::connect(&two.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "INSERT INTO app.accounts (email) SELECT i || '@x' FROM generate_series(1, 500) i;
             SELECT nextval('app.invoice_no'); ANALYZE app.accounts;",
        )
        .await
        .unwrap();
    let (again, read) = pg_schema(&two.url).await;
    assert_eq!(again.hash, first.hash);
    assert!(
        read.sizes
            .iter()
            .any(|s| s.table == "app.accounts" && s.rows == 500),
        "{:?}",
        read.sizes
    );
    // A hand-made change is a different schema, and the diff names it.
    client
        .batch_execute("ALTER TABLE app.orders ADD COLUMN note text")
        .await
        .unwrap();
    let (changed, _) = pg_schema(&two.url).await;
    assert_ne!(changed.hash, first.hash);
    let diff = schema::diff(&first.text, &changed.text);
    assert_eq!(diff.changed, ["table app.orders"]);
    assert!(
        diff.unified.contains("+  column note text"),
        "{}",
        diff.unified
    );
}

async fn my_conn(db: &TestMysqlDatabase) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(db.host.clone())
        .tcp_port(db.port)
        .user(Some(db.user.clone()))
        .pass(Some(db.password.clone()))
        .db_name(Some(db.name.clone()));
    mysql_async::Conn::new(opts).await.unwrap()
}

const MY_SCHEMA: [&str; 8] = [
    "CREATE TABLE accounts (id bigint AUTO_INCREMENT PRIMARY KEY, email varchar(200) NOT NULL,
       name varchar(50) DEFAULT 'anon', UNIQUE KEY accounts_email (email(100))) ENGINE=InnoDB",
    "CREATE TABLE orders (id int AUTO_INCREMENT PRIMARY KEY, account_id bigint,
       total decimal(10,2), CONSTRAINT total_positive CHECK (total >= 0),
       CONSTRAINT orders_account FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE,
       KEY orders_account_idx (account_id)) ENGINE=InnoDB",
    "CREATE VIEW rich AS SELECT account_id, sum(total) AS total FROM orders GROUP BY account_id",
    "CREATE FUNCTION twice(x int) RETURNS int DETERMINISTIC RETURN x * 2",
    "CREATE PROCEDURE tidy() DELETE FROM orders WHERE total = 0",
    "CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW SET NEW.total = NEW.total",
    "CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM orders WHERE total = 0",
    "CREATE TABLE migrate_hub_history (version varchar(100))",
];

async fn my_schema(db: &TestMysqlDatabase) -> Schema {
    let mut conn = my_conn(db).await;
    let read = introspect::mysql(&mut conn, &db.name).await.unwrap();
    schema::render(read.objects)
}

#[tokio::test]
async fn mariadb_every_object_kind_is_in_the_snapshot_and_counters_stay_out() {
    let (one, two) = (
        TestMysqlDatabase::create("mh_test_introspect").await,
        TestMysqlDatabase::create("mh_test_introspect").await,
    );
    for db in [&one, &two] {
        let mut conn = my_conn(db).await;
        for sql in MY_SCHEMA {
            conn.query_drop(sql).await.unwrap();
        }
    }
    let first = my_schema(&one).await;
    let text = &first.text;
    for expected in [
        "table `accounts`\n  engine InnoDB collate ",
        "column `id` bigint(20) not null auto_increment",
        "column `name` varchar(50) default 'anon'",
        "index unique `accounts_email` (`email`(100)) using BTREE",
        "index unique `PRIMARY` (`id`) using BTREE",
        "constraint `orders_account` foreign key (account_id) references accounts (id) on update RESTRICT on delete CASCADE",
        "constraint `total_positive` check (",
        "view `rich`\n",
        "function `twice`\n  (IN x int(11)) returns int(11) deterministic",
        "procedure `tidy`\n",
        "trigger `orders_touch`\n  BEFORE UPDATE on `orders`",
        "event `nightly`\n  every 1 DAY enabled",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(!text.contains("migrate_hub_history"), "{text}");
    let other = my_schema(&two).await;
    assert_eq!(
        other.hash,
        first.hash,
        "{}",
        schema::diff(&first.text, &other.text).unified
    );

    let mut conn = my_conn(&two).await;
    conn.query_drop("INSERT INTO accounts (email) VALUES ('a@x'), ('b@x'), ('c@x')")
        .await
        .unwrap();
    assert_eq!(
        my_schema(&two).await.hash,
        first.hash,
        "AUTO_INCREMENT counters are not the schema"
    );
    conn.query_drop("ALTER TABLE orders ADD COLUMN note text")
        .await
        .unwrap();
    let changed = my_schema(&two).await;
    let diff = schema::diff(&first.text, &changed.text);
    assert_eq!(diff.changed, ["table `orders`"]);
}

#[tokio::test]
async fn an_empty_database_reads_the_same_through_the_short_path() {
    // Empty: the short path. Only the hub's history table: the full path,
    // which leaves that table out. Both must read the same schema.
    let (empty, history_only) = (
        TestDatabase::create("mh_test_introspect").await,
        TestDatabase::create("mh_test_introspect").await,
    );
    let (client, connection) = tokio_postgres::connect(&history_only.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE public.migrate_hub_history (version text)")
        .await
        .unwrap();
    let (short, _) = pg_schema(&empty.url).await;
    let (full, _) = pg_schema(&history_only.url).await;
    assert_eq!(short.text, "schema public\n");
    assert_eq!(short.hash, full.hash);

    let (empty, history_only) = (
        TestMysqlDatabase::create("mh_test_introspect").await,
        TestMysqlDatabase::create("mh_test_introspect").await,
    );
    my_conn(&history_only)
        .await
        .query_drop(MY_SCHEMA[7])
        .await
        .unwrap();
    assert_eq!(
        my_schema(&empty).await.hash,
        my_schema(&history_only).await.hash
    );
}
