//! PostgreSQL scripts, read by PostgreSQL's own parser (libpg_query).

use std::collections::BTreeSet;

use pg_query::protobuf::{
    self as pb, AlterTableType, ConstrType, ObjectType, TransactionStmtKind, node::Node as N,
};

use super::{Context, Finding, Findings, PARSE, line_at, table_key};
use crate::domain::split::split_postgres;

/// Functions whose value differs row by row: a default calling one cannot
/// be stored once in the catalogue (PostgreSQL 11's fast ADD COLUMN), so
/// every existing row is rewritten. `now()` and `CURRENT_TIMESTAMP` are
/// stable, not volatile: they do not rewrite.
const VOLATILE: &[&str] = &[
    "random",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "uuidv4",
    "uuidv7",
    "clock_timestamp",
    "timeofday",
    "nextval",
];

/// Reviews a PostgreSQL script (see the [module](super) documentation).
pub fn review_postgres(sql: &str, ctx: &mut Context) -> Vec<Finding> {
    let sql = sql.strip_prefix('\u{feff}').unwrap_or(sql);
    let mut review = Review {
        ctx,
        explicit_transaction: false,
        new_indexes: BTreeSet::new(),
        out: Vec::new(),
    };
    match pg_query::parse(sql) {
        Ok(parsed) => {
            for (i, raw) in parsed.protobuf.stmts.iter().enumerate() {
                let line = line_at(sql, usize::try_from(raw.stmt_location).unwrap_or(0));
                if let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) {
                    review.statement(Findings::new(i + 1, line), node);
                }
            }
        }
        // Some statement does not parse: find which with the executor's
        // splitter (libpg_query's scanner split drops a statement it cannot
        // place), and review the others.
        Err(whole) => match split_postgres(sql) {
            Ok(parts) => {
                for (i, part) in parts.iter().enumerate() {
                    match pg_query::parse(part.text) {
                        Ok(parsed) => {
                            for raw in &parsed.protobuf.stmts {
                                if let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref())
                                {
                                    review.statement(Findings::new(i + 1, part.line), node);
                                }
                            }
                        }
                        Err(e) => review.parse_error(Findings::new(i + 1, part.line), &e),
                    }
                }
            }
            Err(_) => review.parse_error(Findings::new(1, line_at(sql, 0)), &whole),
        },
    }
    review.out
}

struct Review<'c> {
    ctx: &'c mut Context,
    /// Inside a `BEGIN` … `COMMIT` the script itself opened.
    explicit_transaction: bool,
    /// Indexes this script created: dropping one again locks nothing in use.
    new_indexes: BTreeSet<String>,
    out: Vec<Finding>,
}

impl Review<'_> {
    fn parse_error(&mut self, mut f: Findings, e: &pg_query::Error) {
        f.add(
            PARSE,
            format!("PostgreSQL's parser does not accept this statement: {e}"),
        );
        self.out.append(&mut f.out);
    }

    fn in_transaction(&self) -> bool {
        self.ctx.transactional || self.explicit_transaction
    }

    fn statement(&mut self, mut f: Findings, node: &N) {
        match node {
            N::TransactionStmt(t) => self.transaction(&mut f, t),
            N::CreateStmt(c) => self.create_table(&mut f, c),
            N::CreateTableAsStmt(c) => {
                if let Some(rel) = c.into.as_ref().and_then(|i| i.rel.as_ref()) {
                    self.ctx.created_tables.insert(table_key(&rel.relname));
                }
            }
            N::IndexStmt(i) => self.create_index(&mut f, i),
            N::DropStmt(d) => self.drop(&mut f, d),
            N::DropdbStmt(d) => f.add("drop-schema", format!("drops database {}", d.dbname)),
            N::TruncateStmt(t) => {
                for rel in t.relations.iter().filter_map(range_var) {
                    if self.ctx.existing(&rel.relname) {
                        f.add("truncate", format!("empties table {}", rel.relname));
                    }
                }
            }
            N::DeleteStmt(d) => {
                if let Some(rel) = &d.relation
                    && d.where_clause.is_none()
                    && self.ctx.existing(&rel.relname)
                {
                    f.add(
                        "dml-without-where",
                        format!("DELETE without WHERE removes every row of {}", rel.relname),
                    );
                }
            }
            N::UpdateStmt(u) => {
                if let Some(rel) = &u.relation
                    && u.where_clause.is_none()
                    && self.ctx.existing(&rel.relname)
                {
                    f.add(
                        "dml-without-where",
                        format!("UPDATE without WHERE rewrites every row of {}", rel.relname),
                    );
                }
            }
            N::RenameStmt(r) => self.rename(&mut f, r),
            N::AlterTableStmt(a) => self.alter_table(&mut f, a),
            N::VacuumStmt(v) => {
                let full = v.options.iter().any(|o| {
                    matches!(&o.node, Some(N::DefElem(d)) if d.defname.eq_ignore_ascii_case("full"))
                });
                if v.is_vacuumcmd && full {
                    f.add(
                        "vacuum-full",
                        "VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock",
                    );
                }
            }
            N::ClusterStmt(c) => {
                let table = c
                    .relation
                    .as_ref()
                    .map_or("every clustered table", |r| r.relname.as_str());
                f.add(
                    "cluster",
                    format!("CLUSTER rewrites {table} under an ACCESS EXCLUSIVE lock"),
                );
            }
            N::LockStmt(l) => {
                let tables: Vec<&str> = l
                    .relations
                    .iter()
                    .filter_map(range_var)
                    .map(|r| r.relname.as_str())
                    .collect();
                f.add("lock-table", format!("LOCK TABLE {}", tables.join(", ")));
            }
            _ => {}
        }
        self.out.append(&mut f.out);
    }

    fn transaction(&mut self, f: &mut Findings, t: &pb::TransactionStmt) {
        let opens = match t.kind() {
            TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtStart => true,
            TransactionStmtKind::TransStmtCommit
            | TransactionStmtKind::TransStmtRollback
            | TransactionStmtKind::TransStmtPrepare => false,
            // Savepoints work inside the hub's transaction.
            _ => return,
        };
        if self.ctx.transactional {
            f.add(
                "transaction-control",
                if opens {
                    "BEGIN inside a migration that already runs in a transaction"
                } else {
                    "COMMIT/ROLLBACK ends the migration's transaction half-way"
                },
            );
        }
        self.explicit_transaction = opens;
    }

    fn create_table(&mut self, f: &mut Findings, c: &pb::CreateStmt) {
        let Some(rel) = &c.relation else { return };
        let has_primary_key = c.table_elts.iter().chain(&c.constraints).any(|e| match &e.node {
            Some(N::Constraint(k)) => k.contype() == ConstrType::ConstrPrimary,
            Some(N::ColumnDef(col)) => col.constraints.iter().any(|k| {
                matches!(&k.node, Some(N::Constraint(k)) if k.contype() == ConstrType::ConstrPrimary)
            }),
            _ => false,
        });
        // Partitions and inheriting tables get their keys from the parent;
        // temporary tables live for a session.
        let derived = c.partbound.is_some()
            || !c.inh_relations.is_empty()
            || c.of_typename.is_some()
            || rel.relpersistence == "t";
        if !has_primary_key && !derived {
            f.add(
                "table-without-primary-key",
                format!("table {} has no primary key", rel.relname),
            );
        }
        self.ctx.created_tables.insert(table_key(&rel.relname));
    }

    fn create_index(&mut self, f: &mut Findings, i: &pb::IndexStmt) {
        let Some(rel) = &i.relation else { return };
        if !i.idxname.is_empty() {
            self.new_indexes.insert(i.idxname.to_ascii_lowercase());
        }
        if i.concurrent && self.in_transaction() {
            f.add(
                "concurrently-in-transaction",
                format!(
                    "CREATE INDEX CONCURRENTLY on {} cannot run inside a transaction",
                    rel.relname
                ),
            );
        }
        if !self.ctx.existing(&rel.relname) {
            return;
        }
        if !i.concurrent {
            f.add(
                "index-not-concurrent",
                format!(
                    "CREATE INDEX on {} without CONCURRENTLY blocks writes while it builds",
                    rel.relname
                ),
            );
        }
        if i.unique {
            f.add(
                "unique-on-existing",
                format!(
                    "unique index on existing table {} fails if duplicates exist",
                    rel.relname
                ),
            );
        }
    }

    fn drop(&mut self, f: &mut Findings, d: &pb::DropStmt) {
        match d.remove_type() {
            ObjectType::ObjectSchema => {
                for name in d.objects.iter().filter_map(last_name) {
                    f.add(
                        "drop-schema",
                        format!("drops schema {name} and all it holds"),
                    );
                }
            }
            ObjectType::ObjectTable => {
                for name in d.objects.iter().filter_map(last_name) {
                    if self.ctx.existing(&name) {
                        f.add("drop-table", format!("drops table {name}"));
                    }
                }
            }
            ObjectType::ObjectIndex => {
                if d.concurrent && self.in_transaction() {
                    f.add(
                        "concurrently-in-transaction",
                        "DROP INDEX CONCURRENTLY cannot run inside a transaction",
                    );
                }
                for name in d.objects.iter().filter_map(last_name) {
                    if !d.concurrent && !self.new_indexes.contains(&name.to_ascii_lowercase()) {
                        f.add(
                            "drop-index-not-concurrent",
                            format!("DROP INDEX {name} without CONCURRENTLY locks its table"),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn rename(&mut self, f: &mut Findings, r: &pb::RenameStmt) {
        let Some(rel) = &r.relation else { return };
        if !self.ctx.existing(&rel.relname) {
            // Renaming what this run created breaks no running code; the
            // new name is what later statements call it.
            if r.rename_type() == ObjectType::ObjectTable {
                self.ctx.created_tables.insert(table_key(&r.newname));
            }
            return;
        }
        match r.rename_type() {
            ObjectType::ObjectTable => f.add(
                "rename-table",
                format!("renames table {} to {}", rel.relname, r.newname),
            ),
            ObjectType::ObjectColumn => f.add(
                "rename-column",
                format!(
                    "renames column {}.{} to {}",
                    rel.relname, r.subname, r.newname
                ),
            ),
            _ => {}
        }
    }

    fn alter_table(&mut self, f: &mut Findings, a: &pb::AlterTableStmt) {
        let Some(rel) = &a.relation else { return };
        if a.objtype() != ObjectType::ObjectTable || !self.ctx.existing(&rel.relname) {
            return;
        }
        let table = &rel.relname;
        for cmd in a.cmds.iter().filter_map(|c| match &c.node {
            Some(N::AlterTableCmd(cmd)) => Some(cmd),
            _ => None,
        }) {
            let def = cmd.def.as_ref().and_then(|d| d.node.as_ref());
            match cmd.subtype() {
                AlterTableType::AtAddColumn => {
                    if let Some(N::ColumnDef(col)) = def {
                        add_column(f, table, col);
                    }
                }
                AlterTableType::AtDropColumn => {
                    f.add("drop-column", format!("drops column {table}.{}", cmd.name));
                }
                AlterTableType::AtSetNotNull => f.add(
                    "set-not-null",
                    format!("makes {table}.{} NOT NULL (scans the table under an ACCESS EXCLUSIVE lock)", cmd.name),
                ),
                AlterTableType::AtAlterColumnType => {
                    f.add("change-column-type", format!("changes the type of {table}.{}", cmd.name));
                    f.add(
                        "type-change-rewrites",
                        format!("changing the type of {table}.{} rewrites the table unless binary-compatible", cmd.name),
                    );
                }
                AlterTableType::AtAddConstraint => {
                    if let Some(N::Constraint(k)) = def {
                        add_constraint(f, table, k);
                    }
                }
                _ => {}
            }
        }
    }
}

fn add_column(f: &mut Findings, table: &str, col: &pb::ColumnDef) {
    let constraints: Vec<&pb::Constraint> = col
        .constraints
        .iter()
        .filter_map(|k| match &k.node {
            Some(N::Constraint(k)) => Some(k.as_ref()),
            _ => None,
        })
        .collect();
    let has = |t: ConstrType| constraints.iter().any(|k| k.contype() == t);
    let default = col.raw_default.as_deref().or_else(|| {
        constraints
            .iter()
            .find(|k| k.contype() == ConstrType::ConstrDefault)
            .and_then(|k| k.raw_expr.as_deref())
    });
    let filled = default.is_some()
        || has(ConstrType::ConstrIdentity)
        || has(ConstrType::ConstrGenerated)
        || serial(col);
    if (col.is_not_null || has(ConstrType::ConstrNotnull) || has(ConstrType::ConstrPrimary))
        && !filled
    {
        f.add(
            "not-null-column-without-default",
            format!(
                "adds NOT NULL column {table}.{} without a default: fails if the table has rows",
                col.colname
            ),
        );
    }
    if serial(col) || default.is_some_and(volatile) {
        f.add(
            "volatile-default",
            format!(
                "the default of {table}.{} is computed row by row: the table is rewritten",
                col.colname
            ),
        );
    }
    if has(ConstrType::ConstrPrimary) || has(ConstrType::ConstrUnique) {
        f.add(
            "constraint-without-index",
            format!(
                "{table}.{} adds a unique index built while writes wait",
                col.colname
            ),
        );
    }
}

fn add_constraint(f: &mut Findings, table: &str, k: &pb::Constraint) {
    match k.contype() {
        ConstrType::ConstrForeign | ConstrType::ConstrCheck if !k.skip_validation => {
            let what = if k.contype() == ConstrType::ConstrForeign {
                "FOREIGN KEY"
            } else {
                "CHECK"
            };
            f.add(
                "validates-existing-rows",
                format!("{what} on {table} is checked against every existing row"),
            );
            f.add(
                "constraint-without-not-valid",
                format!(
                    "{what} on {table} without NOT VALID scans the table while blocking writes"
                ),
            );
        }
        ConstrType::ConstrPrimary | ConstrType::ConstrUnique => {
            let what = if k.contype() == ConstrType::ConstrPrimary {
                "PRIMARY KEY"
            } else {
                "UNIQUE"
            };
            if k.indexname.is_empty() {
                f.add(
                    "unique-on-existing",
                    format!("{what} on existing table {table} fails if duplicates exist"),
                );
                f.add(
                    "constraint-without-index",
                    format!("{what} on {table} without USING INDEX builds its index while blocking writes"),
                );
            }
        }
        _ => {}
    }
}

/// `serial`, `bigserial`, `smallserial`: a `nextval` default in disguise.
fn serial(col: &pb::ColumnDef) -> bool {
    col.type_name.as_ref().is_some_and(|t| {
        t.names.iter().filter_map(string).any(|n| {
            matches!(
                n.to_ascii_lowercase().as_str(),
                "serial" | "serial4" | "bigserial" | "serial8" | "smallserial" | "serial2"
            )
        })
    })
}

/// Whether the expression calls a volatile function anywhere in it.
fn volatile(node: &pb::Node) -> bool {
    let children: Vec<&pb::Node> = match &node.node {
        Some(N::FuncCall(call)) => {
            let name = call
                .funcname
                .iter()
                .filter_map(string)
                .next_back()
                .unwrap_or("");
            if VOLATILE.contains(&name.to_ascii_lowercase().as_str()) {
                return true;
            }
            call.args.iter().collect()
        }
        Some(N::TypeCast(c)) => c.arg.as_deref().into_iter().collect(),
        Some(N::AExpr(e)) => e.lexpr.iter().chain(&e.rexpr).map(|b| b.as_ref()).collect(),
        Some(N::BoolExpr(e)) => e.args.iter().collect(),
        Some(N::CoalesceExpr(e)) => e.args.iter().collect(),
        Some(N::List(l)) => l.items.iter().collect(),
        _ => Vec::new(),
    };
    children.into_iter().any(volatile)
}

fn string(node: &pb::Node) -> Option<&str> {
    match &node.node {
        Some(N::String(s)) => Some(&s.sval),
        _ => None,
    }
}

fn range_var(node: &pb::Node) -> Option<&pb::RangeVar> {
    match &node.node {
        Some(N::RangeVar(r)) => Some(r),
        _ => None,
    }
}

/// The object's own name in a `DROP` list (`schema.table` → `table`).
fn last_name(node: &pb::Node) -> Option<String> {
    match &node.node {
        Some(N::List(l)) => l
            .items
            .iter()
            .filter_map(string)
            .next_back()
            .map(str::to_owned),
        Some(N::String(s)) => Some(s.sval.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
