//! One value of an index row or query parameter, the same for both backends.

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// A value in the index: the index holds only integers and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
}

impl Cell {
    /// An index or time (beyond `i64::MAX`: the largest, as the columns are signed).
    pub fn int(v: u64) -> Self {
        Self::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }

    pub fn text(&self) -> Option<String> {
        match self {
            Self::Text(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A count, index or time (negative: 0).
    pub fn uint(&self) -> Option<u64> {
        self.as_i64().map(|i| u64::try_from(i).unwrap_or(0))
    }
}

impl From<Option<String>> for Cell {
    fn from(v: Option<String>) -> Self {
        v.map_or(Self::Null, Self::Text)
    }
}

impl rusqlite::ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput;
        Ok(match self {
            Self::Null => ToSqlOutput::Owned(rusqlite::types::Value::Null),
            Self::Int(i) => ToSqlOutput::from(*i),
            Self::Text(s) => ToSqlOutput::from(s.as_str()),
        })
    }
}

impl From<rusqlite::types::Value> for Cell {
    fn from(v: rusqlite::types::Value) -> Self {
        use rusqlite::types::Value;
        match v {
            Value::Integer(i) => Self::Int(i),
            Value::Text(s) => Self::Text(s),
            // The index writes no other kinds.
            Value::Null | Value::Real(_) | Value::Blob(_) => Self::Null,
        }
    }
}

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Self::Null => Ok(IsNull::Yes),
            Self::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Self::Int(i) => i.to_sql(ty, out),
            Self::Text(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT8 | Type::INT4 | Type::TEXT | Type::VARCHAR)
    }

    to_sql_checked!();
}

/// A PostgreSQL row as cells (the index's columns are bigint, integer or text).
pub fn of_pg(row: &postgres::Row) -> Result<Vec<Cell>, String> {
    (0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_();
            let cell = if *ty == Type::INT8 {
                row.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::Int))
            } else if *ty == Type::INT4 {
                row.try_get::<_, Option<i32>>(i)
                    .map(|v| v.map(|v| Cell::Int(i64::from(v))))
            } else {
                row.try_get::<_, Option<String>>(i)
                    .map(|v| v.map(Cell::Text))
            };
            cell.map(|c| c.unwrap_or(Cell::Null))
                .map_err(|e| format!("column {i}: {e}"))
        })
        .collect()
}
