//! Multi-row statements: one `INSERT` (or a `WITH v (…) AS (…)` update)
//! for many rows — on SQLite a `VALUES` list split into chunks under its
//! limit on bound parameters, on PostgreSQL an `unnest` of one array per
//! column.

use crate::error::Result;
use crate::store::Conn;

/// Bound parameters per SQLite statement (it allows 32,766); measured on
/// a renewal batch, 8,000 ran fastest.
const MAX_PARAMS_SQLITE: usize = 8_000;

/// One bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bool(bool),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_owned()))
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        Value::Text(v.map(str::to_owned))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

/// Rows of `width` values each, bound in order.
#[derive(Debug, Clone)]
pub struct Rows {
    width: usize,
    values: Vec<Value>,
}

impl Rows {
    pub fn new(width: usize) -> Rows {
        assert!(width > 0, "rows of no columns");
        Rows {
            width,
            values: Vec::new(),
        }
    }

    /// Appends one row; it must have exactly the width.
    pub fn push(&mut self, row: impl IntoIterator<Item = Value>) {
        let before = self.values.len();
        self.values.extend(row);
        assert_eq!(
            self.values.len() - before,
            self.width,
            "a row of the wrong width"
        );
    }

    pub fn len(&self) -> usize {
        self.values.len() / self.width
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whole rows, at most `max_params` values a chunk.
    fn chunks(&self, max_params: usize) -> impl Iterator<Item = &[Value]> {
        let rows = (max_params / self.width).max(1);
        self.values.chunks(rows * self.width)
    }
}

/// `(?, ?), (?, ?)` for `n` values in rows of `width` (SQLite numbers
/// anonymous parameters itself; named ones cost it a lookup each).
fn placeholders(n: usize, width: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i % width == 0 {
            if i > 0 {
                s.push_str("), ");
            }
            s.push('(');
        } else {
            s.push_str(", ");
        }
        s.push('?');
    }
    if n > 0 {
        s.push(')');
    }
    s
}

/// One column of a PostgreSQL `unnest`, bound as an array.
enum Column {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Bool(Vec<bool>),
}

impl Rows {
    /// The rows as column arrays, with the `unnest(…)` that reads them.
    fn columns(&self) -> (String, Vec<Column>) {
        let mut columns: Vec<Column> = self.values[..self.width]
            .iter()
            .map(|v| match v {
                Value::Int(_) => Column::Int(Vec::with_capacity(self.len())),
                Value::Text(_) => Column::Text(Vec::with_capacity(self.len())),
                Value::Bool(_) => Column::Bool(Vec::with_capacity(self.len())),
            })
            .collect();
        for (i, v) in self.values.iter().enumerate() {
            match (&mut columns[i % self.width], v) {
                (Column::Int(c), Value::Int(x)) => c.push(*x),
                (Column::Text(c), Value::Text(x)) => c.push(x.clone()),
                (Column::Bool(c), Value::Bool(x)) => c.push(*x),
                _ => panic!("column {} holds values of two types", i % self.width),
            }
        }
        let casts: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let ty = match c {
                    Column::Int(_) => "int8",
                    Column::Text(_) => "text",
                    Column::Bool(_) => "bool",
                };
                format!("${}::{ty}[]", i + 1)
            })
            .collect();
        (
            format!("SELECT * FROM unnest({})", casts.join(", ")),
            columns,
        )
    }
}

macro_rules! bind_values {
    ($q:expr, $values:expr) => {{
        let mut q = $q;
        for v in $values {
            q = match v {
                Value::Int(x) => q.bind(*x),
                Value::Text(x) => q.bind(x.as_deref()),
                Value::Bool(x) => q.bind(*x),
            };
        }
        q
    }};
}

macro_rules! bind_columns {
    ($q:expr, $columns:expr) => {{
        let mut q = $q;
        for c in $columns {
            q = match c {
                Column::Int(x) => q.bind(x),
                Column::Text(x) => q.bind(x),
                Column::Bool(x) => q.bind(x),
            };
        }
        q
    }};
}

/// Runs `template` for `rows`, its `{rows}` replaced by a row source that
/// fits in an `INSERT INTO t (…) {rows}` or a `WITH v (…) AS ({rows})`:
/// on SQLite `VALUES (…), (…)` a chunk at a time, on PostgreSQL one
/// `unnest` of column arrays (one statement, planned in no time whatever
/// the number of rows). Returns the rows affected.
pub async fn execute(c: Conn<'_>, template: &str, rows: &Rows) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    match c {
        Conn::Sqlite(c) => {
            let mut affected = 0;
            for chunk in rows.chunks(MAX_PARAMS_SQLITE) {
                let q = template.replace(
                    "{rows}",
                    &format!("VALUES {}", placeholders(chunk.len(), rows.width)),
                );
                affected += bind_values!(sqlx::query(&q), chunk)
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
            }
            Ok(affected)
        }
        Conn::Postgres(c) => {
            let (source, columns) = rows.columns();
            let q = template.replace("{rows}", &source);
            Ok(bind_columns!(sqlx::query(&q), &columns)
                .execute(&mut *c)
                .await?
                .rows_affected())
        }
    }
}

/// Like [`execute`] for a statement that returns rows (`RETURNING`): the
/// rows of every chunk, in order.
pub async fn fetch_all<T>(c: Conn<'_>, template: &str, rows: &Rows) -> Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + Send
        + Unpin,
{
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    match c {
        Conn::Sqlite(c) => {
            let mut out = Vec::with_capacity(rows.len());
            for chunk in rows.chunks(MAX_PARAMS_SQLITE) {
                let q = template.replace(
                    "{rows}",
                    &format!("VALUES {}", placeholders(chunk.len(), rows.width)),
                );
                out.extend(
                    bind_values!(sqlx::query_as::<_, T>(&q), chunk)
                        .fetch_all(&mut *c)
                        .await?,
                );
            }
            Ok(out)
        }
        Conn::Postgres(c) => {
            let (source, columns) = rows.columns();
            let q = template.replace("{rows}", &source);
            Ok(bind_columns!(sqlx::query_as::<_, T>(&q), &columns)
                .fetch_all(&mut *c)
                .await?)
        }
    }
}

/// Rows selected by a list of ids: the template's `IN {ids}` gets the ids
/// (on SQLite a chunk at a time).
pub async fn fetch_in<T>(c: Conn<'_>, template: &str, ids: &[&str]) -> Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + Send
        + Unpin,
{
    let mut list = Rows::new(1);
    for id in ids {
        list.push([Value::from(*id)]);
    }
    let template = template.replace("IN {ids}", "IN (SELECT * FROM ({rows}) AS ids)");
    fetch_all(c, &template, &list).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_group_by_row() {
        assert_eq!(placeholders(4, 2), "(?, ?), (?, ?)");
        assert_eq!(placeholders(3, 1), "(?), (?), (?)");
        assert_eq!(placeholders(0, 2), "");
    }

    #[test]
    fn chunks_stay_under_the_parameter_limit_and_keep_rows_whole() {
        let mut rows = Rows::new(7);
        for i in 0..10_000 {
            rows.push((0..7).map(|j| Value::from(i * 7 + j)));
        }
        let chunks: Vec<_> = rows.chunks(MAX_PARAMS_SQLITE).collect();
        assert!(chunks.len() > 1);
        assert!(
            chunks
                .iter()
                .all(|c| c.len() <= MAX_PARAMS_SQLITE && c.len() % 7 == 0)
        );
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 70_000);
    }

    #[test]
    fn columns_are_typed_arrays_in_order() {
        let mut rows = Rows::new(3);
        rows.push([Value::from("a"), Value::from(1), Value::from(true)]);
        rows.push([Value::Text(None), Value::Int(None), Value::from(false)]);
        let (source, columns) = rows.columns();
        assert_eq!(
            source,
            "SELECT * FROM unnest($1::text[], $2::int8[], $3::bool[])"
        );
        assert!(matches!(&columns[0], Column::Text(v) if v == &[Some("a".to_owned()), None]));
        assert!(matches!(&columns[1], Column::Int(v) if v == &[Some(1), None]));
        assert!(matches!(&columns[2], Column::Bool(v) if v == &[true, false]));
    }
}
