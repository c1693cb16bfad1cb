//! CREATE, ALTER and DROP: catalog changes made in the statement's transaction.
//!
//! DDL is transactional: a definition is a key like any row, so a CREATE TABLE inside
//! BEGIN … ROLLBACK leaves nothing behind, and a transaction that read a definition
//! conflicts with a concurrent change to it. Dropped tables and indexes disappear from the
//! catalog at once; their keys are deleted after the dropping transaction commits, in
//! chunks (ids are never reused, so nothing can see them meanwhile).

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    self, AlterTableOperation, ColumnOption, Expr, ObjectName, ObjectType, TableConstraint,
};

use crate::catalog::{
    CheckDef, ColumnDef, ForeignKeyDef, IndexDef, StoredDatum, TableDef, ViewDef,
};
use crate::codec::Key;
use crate::dml::load;
use crate::error::{Result, SqlError};
use crate::eval;
use crate::planner::Context;
use crate::session::{normalize, Output, Session};
use crate::tx::{Tx, SCAN_CHUNK};
use crate::types::{Datum, SqlType};

fn last_name(n: &ObjectName) -> String {
    match n.0.last() {
        Some(ast::ObjectNamePart::Identifier(i)) => normalize(i),
        _ => n.to_string(),
    }
}

fn column_of(e: &Expr) -> Result<String> {
    match e {
        Expr::Identifier(i) => Ok(normalize(i)),
        other => Err(SqlError::Unsupported(format!(
            "index or key on the expression {other}"
        ))),
    }
}

/// A foreign key as written: name, columns, parent table, parent columns.
type ForeignKeyParts = (Option<String>, Vec<String>, ObjectName, Vec<String>);

/// Table-level parts gathered from column options and constraints.
#[derive(Default)]
struct Parts {
    primary_key: Option<(Option<String>, Vec<String>)>,
    uniques: Vec<(Option<String>, Vec<String>)>,
    checks: Vec<(Option<String>, String)>,
    foreign_keys: Vec<ForeignKeyParts>,
}

impl Parts {
    fn primary(&mut self, name: Option<String>, cols: Vec<String>, table: &str) -> Result<()> {
        if self.primary_key.is_some() {
            return Err(SqlError::Syntax(format!(
                "multiple primary keys for table {table:?} are not allowed"
            )));
        }
        self.primary_key = Some((name, cols));
        Ok(())
    }

    fn constraint(&mut self, c: &TableConstraint, table: &str) -> Result<()> {
        let cols = |cs: &[ast::IndexColumn]| -> Result<Vec<String>> {
            cs.iter().map(|c| column_of(&c.column.expr)).collect()
        };
        match c {
            TableConstraint::PrimaryKey(pk) => {
                self.primary(pk.name.as_ref().map(normalize), cols(&pk.columns)?, table)
            }
            TableConstraint::Unique(u) => {
                self.uniques
                    .push((u.name.as_ref().map(normalize), cols(&u.columns)?));
                Ok(())
            }
            TableConstraint::Check(c) => {
                self.checks
                    .push((c.name.as_ref().map(normalize), c.expr.to_string()));
                Ok(())
            }
            TableConstraint::ForeignKey(fk) => {
                self.foreign_keys.push((
                    fk.name.as_ref().map(normalize),
                    fk.columns.iter().map(normalize).collect(),
                    fk.foreign_table.clone(),
                    fk.referred_columns.iter().map(normalize).collect(),
                ));
                Ok(())
            }
            other => Err(SqlError::Unsupported(format!("constraint {other}"))),
        }
    }
}

/// A column definition, with its constraints moved to `parts`.
fn column(c: &ast::ColumnDef, id: u32, table: &str, parts: &mut Parts) -> Result<ColumnDef> {
    let name = normalize(&c.name);
    let custom = match &c.data_type {
        ast::DataType::Custom(n, _) => n.to_string().to_ascii_lowercase(),
        _ => String::new(),
    };
    let mut col = ColumnDef {
        id,
        ty: SqlType::from_ast(&c.data_type)?,
        name: name.clone(),
        nullable: true,
        default: None,
        auto_increment: custom.contains("serial"),
        added_default: None,
    };
    for opt in &c.options {
        let cname = opt.name.as_ref().map(normalize);
        match &opt.option {
            ColumnOption::Null => col.nullable = true,
            ColumnOption::NotNull => col.nullable = false,
            ColumnOption::Default(e) => col.default = Some(e.to_string()),
            ColumnOption::PrimaryKey(_) => parts.primary(cname, vec![name.clone()], table)?,
            ColumnOption::Unique(_) => parts.uniques.push((cname, vec![name.clone()])),
            ColumnOption::Check(cc) => parts.checks.push((
                cname.or_else(|| cc.name.as_ref().map(normalize)),
                cc.expr.to_string(),
            )),
            ColumnOption::ForeignKey(fk) => parts.foreign_keys.push((
                cname,
                vec![name.clone()],
                fk.foreign_table.clone(),
                fk.referred_columns.iter().map(normalize).collect(),
            )),
            ColumnOption::DialectSpecific(tokens)
                if tokens
                    .iter()
                    .any(|t| t.to_string().eq_ignore_ascii_case("autoincrement")) =>
            {
                col.auto_increment = true
            }
            ColumnOption::Identity(_) | ColumnOption::Generated { .. } => col.auto_increment = true,
            ColumnOption::Comment(_) | ColumnOption::Collation(_) => {}
            other => return Err(SqlError::Unsupported(format!("column option {other}"))),
        }
    }
    if col.auto_increment && !col.ty.is_integer() {
        return Err(SqlError::DataType(format!(
            "auto-increment column {name:?} must have an integer type"
        )));
    }
    Ok(col)
}

pub async fn create_table(s: &mut Session, ct: ast::CreateTable) -> Result<Output> {
    if ct.query.is_some() || ct.like.is_some() || ct.clone.is_some() {
        return Err(SqlError::Unsupported(
            "CREATE TABLE … AS / LIKE / CLONE".into(),
        ));
    }
    let (db, name) = s.table_name(&ct.name).await?;
    let tx = s.ctx.tx(&db).await?;
    let mut guard = tx.lock().await;
    let tx: &mut Tx = &mut guard;
    if tx.table(&name).await?.is_some() || tx.view(&name).await?.is_some() {
        if ct.if_not_exists {
            return Ok(Output::Done);
        }
        return Err(SqlError::DuplicateObject {
            kind: "relation",
            name,
        });
    }
    if ct.columns.is_empty() {
        return Err(SqlError::Syntax(format!(
            "table {name:?} must have at least one column"
        )));
    }
    let mut parts = Parts::default();
    let mut columns: Vec<ColumnDef> = Vec::new();
    for (i, c) in ct.columns.iter().enumerate() {
        let col = column(c, i as u32 + 1, &name, &mut parts)?;
        if columns.iter().any(|x| x.name == col.name) {
            return Err(SqlError::DuplicateObject {
                kind: "column",
                name: col.name,
            });
        }
        columns.push(col);
    }
    for c in &ct.constraints {
        parts.constraint(c, &name)?;
    }
    let id = tx.next_object_id().await?;
    let mut def = TableDef {
        id,
        name: name.clone(),
        next_column_id: columns.len() as u32 + 1,
        columns,
        primary_key: Vec::new(),
        indexes: Vec::new(),
        checks: Vec::new(),
        foreign_keys: Vec::new(),
        pk_name: format!("{name}_pkey"),
        referenced_by: Vec::new(),
    };
    let id_of = |def: &TableDef, col: &str| -> Result<u32> {
        def.columns
            .iter()
            .find(|c| c.name == col)
            .map(|c| c.id)
            .ok_or_else(|| SqlError::UndefinedColumn {
                table: def.name.clone(),
                column: col.to_string(),
            })
    };
    if let Some((pk_name, cols)) = parts.primary_key {
        for c in &cols {
            let cid = id_of(&def, c)?;
            def.primary_key.push(cid);
            if let Some(col) = def.columns.iter_mut().find(|x| x.id == cid) {
                col.nullable = false;
            }
        }
        if let Some(n) = pk_name {
            def.pk_name = n;
        }
        // A single integer primary key is assigned automatically when left out, as
        // SQLite's INTEGER PRIMARY KEY is.
        if def.primary_key.len() == 1 {
            if let Some(col) = def.columns.iter_mut().find(|x| x.id == def.primary_key[0]) {
                if col.ty.is_integer() {
                    col.auto_increment = true;
                }
            }
        }
    }
    if def.columns.iter().filter(|c| c.auto_increment).count() > 1 {
        return Err(SqlError::Unsupported(
            "more than one auto-increment column".into(),
        ));
    }
    if let Some(c) = def.columns.iter().find(|c| c.auto_increment) {
        if def.primary_key != [c.id] {
            return Err(SqlError::Unsupported(format!(
                "auto-increment column {:?} must be the table's primary key",
                c.name
            )));
        }
    }
    for (uname, cols) in parts.uniques {
        let ids = cols
            .iter()
            .map(|c| id_of(&def, c))
            .collect::<Result<Vec<_>>>()?;
        let index_name = uname.unwrap_or_else(|| format!("{name}_{}_key", cols.join("_")));
        if def.indexes.iter().any(|i| i.name == index_name) {
            continue;
        }
        let iid = tx.next_object_id().await?;
        def.indexes.push(IndexDef {
            id: iid,
            name: index_name,
            columns: ids,
            unique: true,
            ready: true,
        });
    }
    for (i, (cname, expr)) in parts.checks.into_iter().enumerate() {
        let check = CheckDef {
            name: cname.unwrap_or_else(|| {
                format!(
                    "{name}_check{}",
                    if i == 0 { String::new() } else { i.to_string() }
                )
            }),
            expr,
        };
        validate_check(s, &def, &check)?;
        def.checks.push(check);
    }
    let mut parents_to_update = Vec::new();
    for (i, (fname, cols, parent, pcols)) in parts.foreign_keys.into_iter().enumerate() {
        let parent_name = last_name(&parent);
        let fk_name = fname.unwrap_or_else(|| format!("{name}_{}_fkey", cols.join("_")));
        let _ = i;
        let ids = cols
            .iter()
            .map(|c| id_of(&def, c))
            .collect::<Result<Vec<_>>>()?;
        let parent_def: Arc<TableDef> = if parent_name == name {
            Arc::new(def.clone())
        } else {
            load(tx, &parent_name).await?
        };
        let pcols = if pcols.is_empty() {
            parent_def
                .pk_positions()
                .iter()
                .map(|&i| parent_def.columns[i].name.clone())
                .collect()
        } else {
            pcols
        };
        let ppos: Vec<usize> = pcols
            .iter()
            .map(|c| {
                parent_def
                    .column_index(c)
                    .ok_or_else(|| SqlError::UndefinedColumn {
                        table: parent_name.clone(),
                        column: c.clone(),
                    })
            })
            .collect::<Result<_>>()?;
        let keyed = (!parent_def.has_rowid() && parent_def.pk_positions() == ppos)
            || parent_def
                .indexes
                .iter()
                .any(|ix| ix.unique && parent_def.index_positions(ix) == ppos);
        if !keyed || ppos.len() != ids.len() {
            return Err(SqlError::Syntax(format!(
                "foreign key {fk_name:?} must reference a primary key or unique constraint of {parent_name:?} with as many columns"
            )));
        }
        def.foreign_keys.push(ForeignKeyDef {
            name: fk_name.clone(),
            columns: ids,
            parent: parent_name.clone(),
            parent_columns: pcols,
        });
        if parent_name == name {
            def.referenced_by.push((name.clone(), fk_name));
        } else {
            parents_to_update.push((parent_name, fk_name));
        }
    }
    for (parent, fk_name) in parents_to_update {
        let mut p = (*load(tx, &parent).await?).clone();
        p.referenced_by.push((name.clone(), fk_name));
        tx.put_table(p).await?;
    }
    // A new table counts its rows from zero (see `crate::stats`).
    tx.put_value(
        &crate::stats::counter_key(def.id),
        crate::stats::counter_value(0),
    )?;
    tx.put_table(def).await?;
    Ok(Output::Done)
}

/// A CHECK must be a boolean expression over the table's columns.
fn validate_check(s: &Session, def: &TableDef, check: &CheckDef) -> Result<()> {
    let expr = eval::parse_stored(&check.expr)?;
    let groups = [eval::Columns {
        qualifier: &def.name,
        names: def.columns.iter().map(|c| c.name.clone()).collect(),
        types: def.columns.iter().map(|c| c.ty.clone()).collect(),
    }];
    let (batch, schema) = eval::batch(&groups, &[])?;
    eval::eval(&s.state, &expr, &batch, &schema)?;
    Ok(())
}

/// An index to fill after the transaction that created it commits.
#[derive(Debug, Clone)]
pub struct IndexBuild {
    pub db: String,
    pub table: String,
    pub index: String,
}

pub async fn create_index(s: &mut Session, ci: ast::CreateIndex) -> Result<Output> {
    if ci.predicate.is_some() {
        return Err(SqlError::Unsupported("partial indexes".into()));
    }
    let (db, table) = s.table_name(&ci.table_name).await?;
    let tx = s.ctx.tx(&db).await?;
    let mut guard = tx.lock().await;
    let tx: &mut Tx = &mut guard;
    let mut def = (*load(tx, &table).await?).clone();
    let cols = ci
        .columns
        .iter()
        .map(|c| column_of(&c.column.expr))
        .collect::<Result<Vec<_>>>()?;
    let name = match &ci.name {
        Some(n) => last_name(n),
        None => format!("{table}_{}_idx", cols.join("_")),
    };
    if let Some(owner) = find_index(tx, &name).await? {
        // An index whose online build was interrupted: this statement finishes the build.
        let building = owner.indexes.iter().any(|i| i.name == name && !i.ready);
        if building && !s.in_transaction() {
            s.builds.push(IndexBuild {
                db,
                table: owner.name.clone(),
                index: name,
            });
            return Ok(Output::Done);
        }
        if ci.if_not_exists {
            return Ok(Output::Done);
        }
        return Err(SqlError::DuplicateObject {
            kind: "index",
            name,
        });
    }
    let ids = cols
        .iter()
        .map(|c| {
            def.columns
                .iter()
                .find(|x| &x.name == c)
                .map(|x| x.id)
                .ok_or_else(|| SqlError::UndefinedColumn {
                    table: table.clone(),
                    column: c.clone(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    // Outside an explicit transaction the index is built online: this statement's
    // transaction only adds it to the catalog (writers maintain it from then on, queries
    // skip it), and once that commits the session fills it chunk by chunk, each chunk its
    // own transaction, then marks it ready. Inside BEGIN … COMMIT it is filled in the
    // transaction, so that it commits or rolls back with the rest.
    let online = !s.in_transaction();
    let index = IndexDef {
        id: tx.next_object_id().await?,
        name: name.clone(),
        columns: ids,
        unique: ci.unique,
        ready: !online,
    };
    if !online {
        crate::index::backfill(tx, &def, &index).await?;
    }
    def.indexes.push(index);
    tx.put_table(def).await?;
    if online {
        s.builds.push(IndexBuild {
            db,
            table,
            index: name,
        });
    }
    Ok(Output::Done)
}

/// REINDEX: rebuild an index (or every index of a table) from its table's rows.
pub async fn reindex(tx: &mut Tx, name: &str) -> Result<()> {
    let (def, which): (Arc<TableDef>, Vec<IndexDef>) = match find_index(tx, name).await? {
        Some(def) => {
            let idx = def
                .indexes
                .iter()
                .filter(|i| i.name == name)
                .cloned()
                .collect();
            (def, idx)
        }
        None => match tx.table(name).await? {
            Some(def) => {
                let all = def.indexes.clone();
                (def, all)
            }
            None => {
                return Err(SqlError::UndefinedObject {
                    kind: "index or table",
                    name: name.to_string(),
                })
            }
        },
    };
    for index in which {
        let prefix = Key::IndexEntries(def.id, index.id).encode();
        let end = strata_engine::prefix_end(&prefix);
        loop {
            let chunk = tx.scan(&prefix, &end, false, SCAN_CHUNK).await?;
            for (k, _) in &chunk {
                tx.delete(k)?;
            }
            if chunk.len() < SCAN_CHUNK {
                break;
            }
        }
        crate::index::backfill(tx, &def, &index).await?;
    }
    Ok(())
}

/// The table that has an index named `name`.
async fn find_index(tx: &mut Tx, name: &str) -> Result<Option<Arc<TableDef>>> {
    for t in tx.table_names().await? {
        if let Some(def) = tx.table(&t).await? {
            if def.indexes.iter().any(|i| i.name == name) {
                return Ok(Some(def));
            }
        }
    }
    Ok(None)
}

pub async fn create_view(s: &mut Session, cv: ast::CreateView) -> Result<Output> {
    if cv.materialized {
        return Err(SqlError::Unsupported("materialized views".into()));
    }
    let (db, name) = s.table_name(&cv.name).await?;
    let tx = s.ctx.tx(&db).await?;
    {
        let mut guard = tx.lock().await;
        let exists_table = guard.table(&name).await?.is_some();
        let exists_view = guard.view(&name).await?.is_some();
        if exists_table || (exists_view && !cv.or_replace) {
            if cv.if_not_exists {
                return Ok(Output::Done);
            }
            return Err(SqlError::DuplicateObject {
                kind: "relation",
                name,
            });
        }
    }
    let sql = if cv.columns.is_empty() {
        cv.query.to_string()
    } else {
        let cols: Vec<String> = cv.columns.iter().map(|c| c.name.to_string()).collect();
        format!(
            "SELECT * FROM ({}) AS {}({})",
            cv.query,
            name,
            cols.join(", ")
        )
    };
    // The definition must plan now, against the tables as they are.
    let mut stmt = crate::planner::parse_one(&sql)?;
    crate::planner::rewrite(&mut stmt);
    crate::planner::plan_statement(&s.state, stmt).await?;
    tx.lock().await.put_view(&ViewDef { name, sql }).await?;
    Ok(Output::Done)
}

pub async fn drop(
    s: &mut Session,
    object_type: ObjectType,
    if_exists: bool,
    names: Vec<ObjectName>,
) -> Result<Output> {
    for n in names {
        match object_type {
            ObjectType::Database | ObjectType::Schema => {
                let name = crate::session::object_name_text(&n);
                s.drop_database(&name, if_exists).await?;
            }
            ObjectType::Table => drop_table(s, &n, if_exists).await?,
            ObjectType::View => {
                let (db, name) = s.table_name(&n).await?;
                let tx = s.ctx.tx(&db).await?;
                let mut guard = tx.lock().await;
                if guard.view(&name).await?.is_some() {
                    guard.remove_view(&name).await?;
                } else if !if_exists {
                    return Err(SqlError::UndefinedObject { kind: "view", name });
                }
            }
            ObjectType::Index => {
                let (db, name) = s.table_name(&n).await?;
                let tx = s.ctx.tx(&db).await?;
                let mut guard = tx.lock().await;
                match find_index(&mut guard, &name).await? {
                    Some(def) => {
                        let mut def = (*def).clone();
                        let Some(pos) = def.indexes.iter().position(|i| i.name == name) else {
                            continue;
                        };
                        let index = def.indexes.remove(pos);
                        guard.put_table(def.clone()).await?;
                        s.purges
                            .push((db.clone(), Key::IndexEntries(def.id, index.id).encode()));
                    }
                    None if if_exists => {}
                    None => {
                        return Err(SqlError::UndefinedObject {
                            kind: "index",
                            name,
                        })
                    }
                }
            }
            other => return Err(SqlError::Unsupported(format!("DROP {other}"))),
        }
    }
    Ok(Output::Done)
}

async fn drop_table(s: &mut Session, n: &ObjectName, if_exists: bool) -> Result<()> {
    let (db, name) = s.table_name(n).await?;
    let tx = s.ctx.tx(&db).await?;
    let mut guard = tx.lock().await;
    let tx: &mut Tx = &mut guard;
    let Some(def) = tx.table(&name).await? else {
        if if_exists {
            return Ok(());
        }
        return Err(SqlError::UndefinedObject {
            kind: "table",
            name,
        });
    };
    if let Some((child, fk)) = def.referenced_by.iter().find(|(c, _)| *c != name) {
        return Err(SqlError::InvalidTransactionState(format!(
            "cannot drop table {name:?}: constraint {fk:?} of table {child:?} references it"
        )));
    }
    for fk in &def.foreign_keys {
        if fk.parent != name {
            if let Some(parent) = tx.table(&fk.parent).await? {
                let mut p = (*parent).clone();
                p.referenced_by.retain(|(c, _)| *c != name);
                tx.put_table(p).await?;
            }
        }
    }
    tx.remove_table(&name).await?;
    s.purges.push((db.clone(), Key::Rows(def.id).encode()));
    s.purges.push((db.clone(), Key::RowCounts(def.id).encode()));
    for index in &def.indexes {
        s.purges
            .push((db.clone(), Key::IndexEntries(def.id, index.id).encode()));
    }
    Ok(())
}

/// Delete every key under `prefix`, a chunk per transaction.
pub async fn purge_table(ctx: &Context, db: &str, prefix: &[u8]) -> Result<()> {
    let database = ctx.open(db).await?;
    let end = strata_engine::prefix_end(prefix);
    loop {
        let mut tx = Tx::begin(database.clone(), false).await?;
        let chunk = tx.scan(prefix, &end, false, SCAN_CHUNK).await?;
        if chunk.is_empty() {
            return Ok(());
        }
        for (k, _) in &chunk {
            tx.delete(k)?;
        }
        tx.commit().await?;
    }
}

pub async fn alter_table(s: &mut Session, at: ast::AlterTable) -> Result<Output> {
    let (db, name) = s.table_name(&at.name).await?;
    let tx = s.ctx.tx(&db).await?;
    let mut guard = tx.lock().await;
    let tx: &mut Tx = &mut guard;
    let Some(current) = tx.table(&name).await? else {
        if at.if_exists {
            return Ok(Output::Done);
        }
        return Err(SqlError::UndefinedObject {
            kind: "table",
            name,
        });
    };
    let mut def = (*current).clone();
    for op in at.operations {
        match op {
            AlterTableOperation::AddColumn {
                column_def,
                if_not_exists,
                ..
            } => {
                let cname = normalize(&column_def.name);
                if def.column_index(&cname).is_some() {
                    if if_not_exists {
                        continue;
                    }
                    return Err(SqlError::DuplicateObject {
                        kind: "column",
                        name: cname,
                    });
                }
                let mut parts = Parts::default();
                let mut col = column(&column_def, def.next_column_id, &def.name, &mut parts)?;
                if parts.primary_key.is_some()
                    || !parts.uniques.is_empty()
                    || !parts.foreign_keys.is_empty()
                    || col.auto_increment
                {
                    return Err(SqlError::Unsupported(
                        "ADD COLUMN with PRIMARY KEY, UNIQUE, REFERENCES or auto-increment".into(),
                    ));
                }
                let fill = match &col.default {
                    Some(d) => col
                        .ty
                        .coerce(eval::constant(&s.state, &eval::parse_stored(d)?)?, &cname)?,
                    None => Datum::Null,
                };
                if fill.is_null() && !col.nullable && table_has_rows(tx, &def).await? {
                    return Err(SqlError::NotNullViolation {
                        table: def.name.clone(),
                        column: cname,
                    });
                }
                col.added_default = Some(StoredDatum(fill));
                def.next_column_id += 1;
                def.columns.push(col);
                for (i, (cname, expr)) in parts.checks.into_iter().enumerate() {
                    let check = CheckDef {
                        name: cname.unwrap_or_else(|| {
                            format!("{}_check_{}", def.name, def.checks.len() + i + 1)
                        }),
                        expr,
                    };
                    validate_check(s, &def, &check)?;
                    def.checks.push(check);
                }
            }
            AlterTableOperation::DropColumn {
                column_names,
                if_exists,
                ..
            } => {
                for c in column_names {
                    let cname = normalize(&c);
                    let Some(pos) = def.column_index(&cname) else {
                        if if_exists {
                            continue;
                        }
                        return Err(SqlError::UndefinedColumn {
                            table: def.name.clone(),
                            column: cname,
                        });
                    };
                    let id = def.columns[pos].id;
                    if def.primary_key.contains(&id) {
                        return Err(SqlError::Unsupported(format!(
                            "dropping primary-key column {cname:?}"
                        )));
                    }
                    if def.foreign_keys.iter().any(|f| f.columns.contains(&id)) {
                        return Err(SqlError::Unsupported(format!(
                            "dropping column {cname:?}, which a foreign key uses"
                        )));
                    }
                    if def.columns.len() == 1 {
                        return Err(SqlError::Unsupported(
                            "dropping a table's last column".into(),
                        ));
                    }
                    let dropped: Vec<IndexDef> = def
                        .indexes
                        .iter()
                        .filter(|i| i.columns.contains(&id))
                        .cloned()
                        .collect();
                    def.indexes.retain(|i| !i.columns.contains(&id));
                    for index in dropped {
                        s.purges
                            .push((db.clone(), Key::IndexEntries(def.id, index.id).encode()));
                    }
                    def.columns.remove(pos);
                }
            }
            AlterTableOperation::RenameColumn {
                old_column_name,
                new_column_name,
            } => {
                let old = normalize(&old_column_name);
                let new = normalize(&new_column_name);
                if def.column_index(&new).is_some() {
                    return Err(SqlError::DuplicateObject {
                        kind: "column",
                        name: new,
                    });
                }
                let Some(pos) = def.column_index(&old) else {
                    return Err(SqlError::UndefinedColumn {
                        table: def.name.clone(),
                        column: old,
                    });
                };
                def.columns[pos].name = new.clone();
                for check in &mut def.checks {
                    check.expr = rename_in_expr(&check.expr, &old, &new)?;
                }
            }
            AlterTableOperation::RenameTable { table_name } => {
                let target = match table_name {
                    ast::RenameTableNameKind::As(n) | ast::RenameTableNameKind::To(n) => {
                        last_name(&n)
                    }
                };
                if tx.table(&target).await?.is_some() || tx.view(&target).await?.is_some() {
                    return Err(SqlError::DuplicateObject {
                        kind: "relation",
                        name: target,
                    });
                }
                let old = def.name.clone();
                for (child, _) in def.referenced_by.clone() {
                    if child == old {
                        continue;
                    }
                    if let Some(c) = tx.table(&child).await? {
                        let mut c = (*c).clone();
                        for fk in &mut c.foreign_keys {
                            if fk.parent == old {
                                fk.parent = target.clone();
                            }
                        }
                        tx.put_table(c).await?;
                    }
                }
                for fk in def.foreign_keys.clone() {
                    if fk.parent == old {
                        continue;
                    }
                    if let Some(p) = tx.table(&fk.parent).await? {
                        let mut p = (*p).clone();
                        for r in &mut p.referenced_by {
                            if r.0 == old {
                                r.0 = target.clone();
                            }
                        }
                        tx.put_table(p).await?;
                    }
                }
                for fk in &mut def.foreign_keys {
                    if fk.parent == old {
                        fk.parent = target.clone();
                    }
                }
                for r in &mut def.referenced_by {
                    if r.0 == old {
                        r.0 = target.clone();
                    }
                }
                tx.remove_table(&old).await?;
                def.name = target;
            }
            other => return Err(SqlError::Unsupported(format!("ALTER TABLE {other}"))),
        }
    }
    tx.put_table(def).await?;
    Ok(Output::Done)
}

async fn table_has_rows(tx: &mut Tx, def: &TableDef) -> Result<bool> {
    let prefix = Key::Rows(def.id).encode();
    let end = strata_engine::prefix_end(&prefix);
    Ok(!tx.scan(&prefix, &end, false, 1).await?.is_empty())
}

/// A stored expression with column `old` renamed to `new`.
fn rename_in_expr(sql: &str, old: &str, new: &str) -> Result<String> {
    let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
    let mut expr = datafusion::sql::sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(sql)?
        .parse_expr()?;
    let _ = ast::visit_expressions_mut(&mut expr, |e: &mut Expr| {
        if let Expr::Identifier(i) = e {
            if normalize(i) == old {
                *i = ast::Ident::with_quote('"', new);
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    Ok(expr.to_string())
}

/// `ANALYZE [table]`: count the rows of one table (or of every table of the current
/// database) and make that the table's row count, the statistic the planner reads. Tables
/// count their rows as they change, so this is needed only for a table created before row
/// counts existed, or to repair a count `strata sql check` reports wrong.
///
/// The rows are counted at the transaction's snapshot without recording the reads, so
/// writers that do not change the table's row count never conflict with it.
pub async fn analyze(s: &mut Session, a: ast::Analyze) -> Result<Output> {
    let (db, names) = match &a.table_name {
        Some(name) => {
            let (db, table) = s.table_name(name).await?;
            (db, vec![table])
        }
        None => {
            let db = s.current_database().to_string();
            let tx = s.ctx.tx(&db).await?;
            let names = tx.lock().await.table_names().await?;
            (db, names)
        }
    };
    let database = s.ctx.open(&db).await?;
    let tx = s.ctx.tx(&db).await?;
    let mut guard = tx.lock().await;
    let tx: &mut Tx = &mut guard;
    for name in names {
        let Some(def) = tx.table(&name).await? else {
            return Err(SqlError::UndefinedObject {
                kind: "table",
                name,
            });
        };
        let snapshot = crate::tx::Source::Version(database.clone(), tx.engine_txn().read_version());
        let prefix = Key::Rows(def.id).encode();
        let end = strata_engine::prefix_end(&prefix);
        let (mut start, mut rows) = (prefix, 0u64);
        loop {
            let chunk = snapshot.scan(&start, &end, false, SCAN_CHUNK).await?;
            rows += chunk.len() as u64;
            match crate::tx::resume_after(&chunk) {
                Some(next) => start = next,
                None => break,
            }
        }
        crate::stats::reset(tx.engine_txn(), def.id, rows).await?;
    }
    Ok(Output::Done)
}
