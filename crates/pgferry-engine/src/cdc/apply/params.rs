//! Parameters as the target receives them: a value in the stream's own form (text or
//! binary) passed through untouched, arrays of such values built for `array_recv`, and
//! raw column bytes read back from the source.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};

/// A parameter sent as the bytes pgoutput delivered, in text or binary form.
#[derive(Debug)]
pub(super) struct Param<'a> {
    pub(super) value: Option<&'a [u8]>,
    pub(super) binary: bool,
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.value {
            Some(v) => {
                out.extend_from_slice(v);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        if self.binary {
            Format::Binary
        } else {
            Format::Text
        }
    }

    to_sql_checked!();
}

/// A one-dimensional array of binary element values, for bulk statements in binary mode.
#[derive(Debug)]
pub(super) struct ArrayParam<'a> {
    pub(super) element_oid: u32,
    pub(super) values: Vec<Option<&'a [u8]>>,
}

impl ToSql for ArrayParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let has_nulls = self.values.iter().any(Option::is_none);
        out.put_i32(i32::from(!self.values.is_empty()));
        out.put_i32(i32::from(has_nulls));
        out.put_u32(self.element_oid);
        if !self.values.is_empty() {
            out.put_i32(self.values.len() as i32);
            out.put_i32(1);
        }
        for v in &self.values {
            match v {
                Some(b) => {
                    out.put_i32(b.len() as i32);
                    out.put_slice(b);
                }
                None => out.put_i32(-1),
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column's bytes as the server sent them (binary for most types, text for `text`
/// results), for values read back from the source.
pub(super) struct RawValue(pub(super) Option<Bytes>);

impl<'a> tokio_postgres::types::FromSql<'a> for RawValue {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(Some(Bytes::copy_from_slice(raw))))
    }

    fn from_sql_null(
        _ty: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(None))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_arrays_are_encoded_for_array_recv() {
        let p = ArrayParam {
            element_oid: 23,
            values: vec![Some(&[0, 0, 0, 7]), None],
        };
        let mut out = BytesMut::new();
        p.to_sql(&Type::INT4_ARRAY, &mut out).unwrap();
        assert_eq!(
            &out[..],
            &[
                0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 23, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0,
                7, 255, 255, 255, 255
            ]
        );
        let empty = ArrayParam {
            element_oid: 23,
            values: vec![],
        };
        let mut out = BytesMut::new();
        empty.to_sql(&Type::INT4_ARRAY, &mut out).unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23]);
    }
}
