//! One cell of a row, as bound to a statement or read back, the same for both backends: the
//! typed rows of [`crate::schema`] turn into these and back, and the stores bind and read them.
//! Apart from both, so neither imports the other for it.

/// A value bound to, or read from, a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// BIGINT.
    Int(i64),
    /// Double precision.
    Real(f64),
    /// TEXT.
    Text(String),
    /// BYTEA / BLOB.
    Blob(Vec<u8>),
}

impl Value {
    /// The integer, or 0 for anything else.
    pub fn int(&self) -> i64 {
        match self {
            Value::Int(v) => *v,
            Value::Real(v) => *v as i64,
            _ => 0,
        }
    }

    /// The float (integers widen), or 0.
    pub fn real(&self) -> f64 {
        match self {
            Value::Real(v) => *v,
            Value::Int(v) => *v as f64,
            _ => 0.0,
        }
    }

    /// The text, or "" for anything else.
    pub fn text(&self) -> &str {
        match self {
            Value::Text(v) => v,
            _ => "",
        }
    }

    /// A canonical rendering, equal across backends for equal values.
    pub fn render(&self) -> String {
        match self {
            Value::Null => "NULL".to_owned(),
            Value::Int(v) => v.to_string(),
            Value::Real(v) => format!("{v:?}"),
            Value::Text(v) => format!("{v:?}"),
            Value::Blob(v) => format!("blob:{}", v.len()),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        // Seqs, epochs and counts stay far below 2^63; saturate rather than wrap if not.
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Real(f64::from(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}
