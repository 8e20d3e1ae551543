//! MySQL/MariaDB scripts, split as the executor splits them (the `mysql`
//! client's rules: `DELIMITER`, executable comments, stored-program bodies)
//! and each statement read by `sqlparser`'s MySQL dialect.

use std::collections::BTreeMap;

use sqlparser::{
    ast::{
        AlterColumnOperation, AlterTableOperation, ColumnDef, ColumnOption, FromTable, ObjectName,
        ObjectType, RenameTableNameKind, Statement, TableConstraint, TableFactor, TableWithJoins,
    },
    dialect::MySqlDialect,
    parser::Parser,
};

use super::{Context, Finding, Findings, PARSE, Severity};
use crate::domain::split::split_mysql;

/// Reviews a MySQL/MariaDB script (see the [module](super) documentation).
pub fn review_mysql(sql: &str, ctx: &mut Context) -> Vec<Finding> {
    let statements = match split_mysql(sql) {
        Ok(s) => s,
        Err(e) => {
            let mut f = Findings::new(1, 1);
            f.add(
                PARSE,
                format!("the script cannot be split into statements: {e}"),
            );
            return f.out;
        }
    };
    let mut review = Review {
        ctx,
        alters: BTreeMap::new(),
        first_ddl: None,
        first_dml: None,
        out: Vec::new(),
    };
    for (i, statement) in statements.iter().enumerate() {
        let mut f = Findings::new(i + 1, statement.line);
        match Parser::new(&MySqlDialect {})
            .try_with_sql(statement.text)
            .and_then(|mut p| p.parse_statements())
        {
            Ok(parsed) => {
                for s in &parsed {
                    review.statement(&mut f, s);
                }
            }
            Err(e) => f.add(
                PARSE,
                format!("the MySQL grammar does not accept this statement: {e}"),
            ),
        }
        review.out.append(&mut f.out);
    }
    review.finish();
    review.out
}

/// Where a kind of statement was first seen: (statement, line).
type At = (usize, usize);

struct Review<'c> {
    ctx: &'c mut Context,
    /// ALTER TABLE statements per existing table, in order.
    alters: BTreeMap<String, Vec<At>>,
    first_ddl: Option<At>,
    first_dml: Option<At>,
    out: Vec<Finding>,
}

impl Review<'_> {
    fn ddl(&mut self, f: &Findings) {
        self.first_ddl = self.first_ddl.or(Some((f.statement, f.line)));
    }

    fn dml(&mut self, f: &Findings) {
        self.first_dml = self.first_dml.or(Some((f.statement, f.line)));
    }

    fn statement(&mut self, f: &mut Findings, s: &Statement) {
        match s {
            Statement::CreateTable(ct) => {
                self.ddl(f);
                let table = name(&ct.name);
                let has_primary_key = ct
                    .constraints
                    .iter()
                    .any(|c| matches!(c, TableConstraint::PrimaryKey { .. }))
                    || ct.columns.iter().any(|c| {
                        c.options.iter().any(|o| {
                            matches!(
                                o.option,
                                ColumnOption::Unique {
                                    is_primary: true,
                                    ..
                                }
                            )
                        })
                    });
                let derived =
                    ct.temporary || ct.like.is_some() || ct.clone.is_some() || ct.query.is_some();
                if !has_primary_key && !derived {
                    f.add(
                        "table-without-primary-key",
                        format!("table {table} has no primary key"),
                    );
                }
                self.ctx.created_tables.insert(table);
            }
            Statement::CreateIndex(ci) => {
                self.ddl(f);
                let table = name(&ci.table_name);
                if ci.unique && self.ctx.existing(&table) {
                    f.add(
                        "unique-on-existing",
                        format!("unique index on existing table {table} fails if duplicates exist"),
                    );
                }
            }
            Statement::Drop {
                object_type, names, ..
            } => {
                self.ddl(f);
                for n in names.iter().map(name) {
                    match object_type {
                        ObjectType::Schema | ObjectType::Database => {
                            f.add(
                                "drop-schema",
                                format!("drops database {n} and all it holds"),
                            );
                        }
                        ObjectType::Table if self.ctx.existing(&n) => {
                            f.add("drop-table", format!("drops table {n}"));
                        }
                        _ => {}
                    }
                }
            }
            Statement::Truncate { table_names, .. } => {
                self.ddl(f);
                for t in table_names.iter().map(|t| name(&t.name)) {
                    if self.ctx.existing(&t) {
                        f.add("truncate", format!("empties table {t}"));
                    }
                }
            }
            Statement::Delete(d) => {
                self.dml(f);
                let from = match &d.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
                };
                if d.selection.is_none()
                    && d.limit.is_none()
                    && let Some(table) = from.first().and_then(table_name)
                    && self.ctx.existing(&table)
                {
                    f.add(
                        "dml-without-where",
                        format!("DELETE without WHERE removes every row of {table}"),
                    );
                }
            }
            Statement::Update {
                table,
                selection,
                limit,
                ..
            } => {
                self.dml(f);
                if selection.is_none()
                    && limit.is_none()
                    && let Some(t) = table_name(table)
                    && self.ctx.existing(&t)
                {
                    f.add(
                        "dml-without-where",
                        format!("UPDATE without WHERE rewrites every row of {t}"),
                    );
                }
            }
            Statement::Insert(_) | Statement::Merge { .. } => self.dml(f),
            Statement::RenameTable(renames) => {
                self.ddl(f);
                for r in renames {
                    self.rename_table(f, &name(&r.old_name), &name(&r.new_name));
                }
            }
            Statement::AlterTable {
                name: n,
                operations,
                ..
            } => {
                self.ddl(f);
                self.alter_table(f, &name(n), operations);
            }
            Statement::LockTables { tables } => {
                let names: Vec<&str> = tables.iter().map(|t| t.table.value.as_str()).collect();
                f.add("lock-table", format!("LOCK TABLES {}", names.join(", ")));
            }
            _ => {}
        }
    }

    fn rename_table(&mut self, f: &mut Findings, old: &str, new: &str) {
        if self.ctx.existing(old) {
            f.add("rename-table", format!("renames table {old} to {new}"));
        } else {
            self.ctx.created_tables.insert(new.to_owned());
        }
    }

    fn alter_table(&mut self, f: &mut Findings, table: &str, operations: &[AlterTableOperation]) {
        if !self.ctx.existing(table) {
            return;
        }
        self.alters
            .entry(table.to_owned())
            .or_default()
            .push((f.statement, f.line));
        // ALGORITHM= / LOCK= make the server refuse instead of silently
        // copying: the author has said what they accept.
        let explicit = operations.iter().any(|op| {
            matches!(
                op,
                AlterTableOperation::Algorithm { .. } | AlterTableOperation::Lock { .. }
            )
        });
        let mut redefines = false;
        for op in operations {
            match op {
                AlterTableOperation::AddColumn { column_def, .. } => {
                    add_column(f, table, column_def)
                }
                AlterTableOperation::DropColumn { column_names, .. } => {
                    for c in column_names {
                        f.add("drop-column", format!("drops column {table}.{}", c.value));
                    }
                }
                AlterTableOperation::RenameColumn {
                    old_column_name,
                    new_column_name,
                } => f.add(
                    "rename-column",
                    format!(
                        "renames column {table}.{} to {}",
                        old_column_name.value, new_column_name.value
                    ),
                ),
                AlterTableOperation::ChangeColumn {
                    old_name,
                    new_name,
                    data_type,
                    options,
                    ..
                } => {
                    if old_name.value != new_name.value {
                        f.add(
                            "rename-column",
                            format!(
                                "renames column {table}.{} to {}",
                                old_name.value, new_name.value
                            ),
                        );
                    }
                    redefine(f, table, &old_name.value, &data_type.to_string(), options);
                    redefines = true;
                }
                AlterTableOperation::ModifyColumn {
                    col_name,
                    data_type,
                    options,
                    ..
                } => {
                    redefine(f, table, &col_name.value, &data_type.to_string(), options);
                    redefines = true;
                }
                AlterTableOperation::AlterColumn { column_name, op } => match op {
                    AlterColumnOperation::SetDataType { data_type, .. } => {
                        f.add(
                            "change-column-type",
                            format!(
                                "changes the type of {table}.{} to {data_type}",
                                column_name.value
                            ),
                        );
                        redefines = true;
                    }
                    AlterColumnOperation::SetNotNull => f.add(
                        "set-not-null",
                        format!("makes {table}.{} NOT NULL", column_name.value),
                    ),
                    _ => {}
                },
                AlterTableOperation::RenameTable { table_name } => {
                    let (RenameTableNameKind::As(new) | RenameTableNameKind::To(new)) = table_name;
                    self.rename_table(f, table, &name(new));
                }
                AlterTableOperation::AddConstraint { constraint, .. } => match constraint {
                    TableConstraint::Unique { .. } | TableConstraint::PrimaryKey { .. } => f.add(
                        "unique-on-existing",
                        format!("unique key on existing table {table} fails if duplicates exist"),
                    ),
                    TableConstraint::ForeignKey { .. } | TableConstraint::Check { .. } => f.add(
                        "validates-existing-rows",
                        format!("constraint on {table} is checked against every existing row"),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
        if redefines && !explicit {
            f.add(
                "mysql-copy-alter",
                format!("redefining a column of {table} may copy the table (ALGORITHM=COPY) while writes wait; no ALGORITHM/LOCK is given"),
            );
        }
    }

    /// Findings that need the whole script.
    fn finish(&mut self) {
        for (table, alters) in &self.alters {
            if let [_, (statement, line), ..] = alters.as_slice() {
                let mut f = Findings::new(*statement, *line);
                f.add(
                    "mysql-multiple-alters",
                    format!(
                        "{} ALTER TABLE statements on {table}: each may rebuild it",
                        alters.len()
                    ),
                );
                self.out.append(&mut f.out);
            }
        }
        if let (Some(ddl), Some(dml)) = (self.first_ddl, self.first_dml) {
            let (statement, line) = ddl.max(dml);
            let mut f = Findings::new(statement, line);
            f.add(
                "mysql-mixed-ddl-dml",
                "the script mixes schema changes and data changes: DDL commits implicitly, so it cannot be undone as one",
            );
            self.out.append(&mut f.out);
        }
        self.out.sort_by_key(|f| f.statement);
    }
}

fn add_column(f: &mut Findings, table: &str, col: &ColumnDef) {
    let has = |p: fn(&ColumnOption) -> bool| col.options.iter().any(|o| p(&o.option));
    let not_null = has(|o| {
        matches!(
            o,
            ColumnOption::NotNull
                | ColumnOption::Unique {
                    is_primary: true,
                    ..
                }
        )
    });
    let filled = has(|o| {
        matches!(
            o,
            ColumnOption::Default(_) | ColumnOption::Generated { .. } | ColumnOption::Identity(_)
        ) || matches!(o, ColumnOption::DialectSpecific(tokens) if tokens.iter().any(|t| t.to_string().eq_ignore_ascii_case("AUTO_INCREMENT")))
    });
    if not_null && !filled {
        // MySQL fills existing rows with the type's implicit default (0,
        // '', …) rather than failing: wrong data rather than a failed run.
        f.add_as(
            "not-null-column-without-default",
            Severity::Warning,
            format!("adds NOT NULL column {table}.{} without a default: existing rows get the type's implicit default", col.name.value),
        );
    }
    if has(|o| matches!(o, ColumnOption::Unique { .. })) {
        f.add(
            "unique-on-existing",
            format!(
                "unique column {table}.{} on an existing table fails if existing rows collide",
                col.name.value
            ),
        );
    }
}

/// `MODIFY` / `CHANGE`: the column is restated whole; its old definition is
/// not in the script, so a type change cannot be told from a restated type.
fn redefine(
    f: &mut Findings,
    table: &str,
    column: &str,
    data_type: &str,
    options: &[ColumnOption],
) {
    f.add(
        "change-column-type",
        format!("redefines {table}.{column} as {data_type} (narrowing or changing its type breaks readers or data)"),
    );
    if options.iter().any(|o| matches!(o, ColumnOption::NotNull)) {
        f.add(
            "set-not-null",
            format!(
                "{table}.{column} is declared NOT NULL: fails or rewrites NULLs if it was nullable"
            ),
        );
    }
}

/// A table's own name, lower-case and unquoted (`db.t` → `t`).
fn name(n: &ObjectName) -> String {
    n.0.last()
        .and_then(|p| p.as_ident())
        .map_or_else(|| n.to_string(), |i| i.value.clone())
        .to_ascii_lowercase()
}

fn table_name(t: &TableWithJoins) -> Option<String> {
    match &t.relation {
        TableFactor::Table { name: n, .. } => Some(name(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
