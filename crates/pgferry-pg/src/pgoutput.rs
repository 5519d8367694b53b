//! Decoding the `pgoutput` logical replication protocol, version 1.
//!
//! Every message kind PostgreSQL's built-in output plugin sends with `proto_version '1'`:
//! Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate and Message,
//! and all four kinds of tuple value (null, unchanged TOAST, text, binary). Values are
//! slices of the received buffer; nothing is copied.
//!
//! Reference: "Logical Replication Message Formats" in the PostgreSQL documentation.

use bytes::{Buf, Bytes};

use crate::lsn::Lsn;

/// A column of a relation, as the source describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (the key used to find rows).
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// A relation (table) description. Sent before the first change of a relation in a
/// session, and again whenever it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// One value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value the change did not touch: its content is not sent, and the column
    /// must be left as it is.
    Unchanged,
    /// The value in the type's text output form.
    Text(Bytes),
    /// The value in the type's binary send form.
    Binary(Bytes),
}

impl Value {
    /// The value's bytes, in whichever form was sent.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Text(b) | Value::Binary(b) => Some(b),
            Value::Null | Value::Unchanged => None,
        }
    }

    /// Approximate memory held by the value.
    pub fn size(&self) -> usize {
        self.bytes().map_or(0, Bytes::len) + 16
    }
}

/// A row image.
pub type Tuple = Vec<Value>;

/// Which old row image an update or delete carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldImage {
    /// Only the replica identity (key) columns are meaningful.
    Key,
    /// The whole old row (`REPLICA IDENTITY FULL`).
    Full,
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Begin {
        /// LSN of the transaction's commit record.
        final_lsn: Lsn,
        /// Commit time, microseconds since 2000-01-01.
        commit_time: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: Lsn,
        /// End of the commit record: where the next transaction can start.
        end_lsn: Lsn,
        commit_time: i64,
    },
    Origin {
        lsn: Lsn,
        name: String,
    },
    Relation(Relation),
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Tuple,
    },
    Update {
        relation: u32,
        old: Option<(OldImage, Tuple)>,
        new: Tuple,
    },
    Delete {
        relation: u32,
        old: (OldImage, Tuple),
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// A logical decoding message (`pg_logical_emit_message`).
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
}

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput message: {0}")]
pub struct DecodeError(pub String);

fn need(buf: &Bytes, n: usize, what: &str) -> Result<(), DecodeError> {
    if buf.remaining() < n {
        return Err(DecodeError(format!("truncated {what}")));
    }
    Ok(())
}

fn u8_(buf: &mut Bytes, what: &str) -> Result<u8, DecodeError> {
    need(buf, 1, what)?;
    Ok(buf.get_u8())
}

fn i16_(buf: &mut Bytes, what: &str) -> Result<i16, DecodeError> {
    need(buf, 2, what)?;
    Ok(buf.get_i16())
}

fn i32_(buf: &mut Bytes, what: &str) -> Result<i32, DecodeError> {
    need(buf, 4, what)?;
    Ok(buf.get_i32())
}

fn u32_(buf: &mut Bytes, what: &str) -> Result<u32, DecodeError> {
    need(buf, 4, what)?;
    Ok(buf.get_u32())
}

fn i64_(buf: &mut Bytes, what: &str) -> Result<i64, DecodeError> {
    need(buf, 8, what)?;
    Ok(buf.get_i64())
}

fn lsn(buf: &mut Bytes, what: &str) -> Result<Lsn, DecodeError> {
    need(buf, 8, what)?;
    Ok(Lsn(buf.get_u64()))
}

fn string(buf: &mut Bytes, what: &str) -> Result<String, DecodeError> {
    let end = buf
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| DecodeError(format!("unterminated string in {what}")))?;
    let s = String::from_utf8(buf.split_to(end).to_vec())
        .map_err(|_| DecodeError(format!("{what} is not UTF-8")))?;
    buf.advance(1);
    Ok(s)
}

fn tuple(buf: &mut Bytes) -> Result<Tuple, DecodeError> {
    let n = i16_(buf, "tuple column count")?;
    let mut values = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let kind = u8_(buf, "tuple value kind")?;
        values.push(match kind {
            b'n' => Value::Null,
            b'u' => Value::Unchanged,
            b't' | b'b' => {
                let len = i32_(buf, "tuple value length")?;
                if len < 0 {
                    return Err(DecodeError("negative value length".into()));
                }
                need(buf, len as usize, "tuple value")?;
                let data = buf.split_to(len as usize);
                if kind == b't' {
                    Value::Text(data)
                } else {
                    Value::Binary(data)
                }
            }
            other => {
                return Err(DecodeError(format!(
                    "unknown tuple value kind {:?}",
                    other as char
                )));
            }
        });
    }
    Ok(values)
}

fn old_image(kind: u8) -> Option<OldImage> {
    match kind {
        b'K' => Some(OldImage::Key),
        b'O' => Some(OldImage::Full),
        _ => None,
    }
}

/// Decodes one pgoutput message (the payload of an XLogData message).
pub fn decode(mut buf: Bytes) -> Result<Message, DecodeError> {
    let tag = u8_(&mut buf, "message tag")?;
    let b = &mut buf;
    Ok(match tag {
        b'B' => Message::Begin {
            final_lsn: lsn(b, "Begin")?,
            commit_time: i64_(b, "Begin")?,
            xid: u32_(b, "Begin")?,
        },
        b'C' => Message::Commit {
            flags: u8_(b, "Commit")?,
            commit_lsn: lsn(b, "Commit")?,
            end_lsn: lsn(b, "Commit")?,
            commit_time: i64_(b, "Commit")?,
        },
        b'O' => Message::Origin {
            lsn: lsn(b, "Origin")?,
            name: string(b, "Origin")?,
        },
        b'R' => relation(b)?,
        b'Y' => Message::Type {
            oid: u32_(b, "Type")?,
            namespace: string(b, "Type namespace")?,
            name: string(b, "Type name")?,
        },
        b'I' => {
            let relation = u32_(b, "Insert")?;
            let marker = u8_(b, "Insert")?;
            if marker != b'N' {
                return Err(DecodeError(format!(
                    "Insert without a new tuple ({:?})",
                    marker as char
                )));
            }
            Message::Insert {
                relation,
                new: tuple(b)?,
            }
        }
        b'U' => update(b)?,
        b'D' => {
            let relation = u32_(b, "Delete")?;
            let marker = u8_(b, "Delete")?;
            let kind = old_image(marker).ok_or_else(|| {
                DecodeError(format!(
                    "Delete without an old tuple ({:?})",
                    marker as char
                ))
            })?;
            Message::Delete {
                relation,
                old: (kind, tuple(b)?),
            }
        }
        b'T' => {
            let n = u32_(b, "Truncate")?;
            let options = u8_(b, "Truncate")?;
            let mut relations = Vec::with_capacity(n as usize);
            for _ in 0..n {
                relations.push(u32_(b, "Truncate relation")?);
            }
            Message::Truncate {
                relations,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
            }
        }
        b'M' => logical_message(b)?,
        other => {
            return Err(DecodeError(format!("unknown message {:?}", other as char)));
        }
    })
}

fn relation(b: &mut Bytes) -> Result<Message, DecodeError> {
    let id = u32_(b, "Relation")?;
    let namespace = string(b, "Relation namespace")?;
    let name = string(b, "Relation name")?;
    let replica_identity = u8_(b, "Relation")?;
    let n = i16_(b, "Relation column count")?;
    let mut columns = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let flags = u8_(b, "Relation column")?;
        columns.push(RelationColumn {
            key: flags & 1 == 1,
            name: string(b, "Relation column name")?,
            type_oid: u32_(b, "Relation column")?,
            type_modifier: i32_(b, "Relation column")?,
        });
    }
    Ok(Message::Relation(Relation {
        id,
        namespace,
        name,
        replica_identity,
        columns,
    }))
}

fn update(b: &mut Bytes) -> Result<Message, DecodeError> {
    let relation = u32_(b, "Update")?;
    let mut marker = u8_(b, "Update")?;
    let old = match old_image(marker) {
        Some(kind) => {
            let t = tuple(b)?;
            marker = u8_(b, "Update")?;
            Some((kind, t))
        }
        None => None,
    };
    if marker != b'N' {
        return Err(DecodeError(format!(
            "Update without a new tuple ({:?})",
            marker as char
        )));
    }
    Ok(Message::Update {
        relation,
        old,
        new: tuple(b)?,
    })
}

fn logical_message(b: &mut Bytes) -> Result<Message, DecodeError> {
    let flags = u8_(b, "Message")?;
    let lsn = lsn(b, "Message")?;
    let prefix = string(b, "Message prefix")?;
    let len = i32_(b, "Message")?;
    if len < 0 {
        return Err(DecodeError("negative message length".into()));
    }
    need(b, len as usize, "Message content")?;
    Ok(Message::Message {
        transactional: flags & 1 == 1,
        lsn,
        prefix,
        content: b.split_to(len as usize),
    })
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};

    use super::*;

    fn cstr(b: &mut BytesMut, s: &str) {
        b.put_slice(s.as_bytes());
        b.put_u8(0);
    }

    fn tuple_bytes(b: &mut BytesMut, values: &[Option<&str>], unchanged: &[usize]) {
        b.put_i16(values.len() as i16);
        for (i, v) in values.iter().enumerate() {
            if unchanged.contains(&i) {
                b.put_u8(b'u');
            } else {
                match v {
                    None => b.put_u8(b'n'),
                    Some(s) => {
                        b.put_u8(b't');
                        b.put_i32(s.len() as i32);
                        b.put_slice(s.as_bytes());
                    }
                }
            }
        }
    }

    #[test]
    fn begin_and_commit_carry_positions_and_times() {
        let mut b = BytesMut::new();
        b.put_u8(b'B');
        b.put_u64(0x10_0000_0020);
        b.put_i64(12345);
        b.put_u32(777);
        assert_eq!(
            decode(b.freeze()).unwrap(),
            Message::Begin {
                final_lsn: Lsn(0x10_0000_0020),
                commit_time: 12345,
                xid: 777
            }
        );
        let mut b = BytesMut::new();
        b.put_u8(b'C');
        b.put_u8(0);
        b.put_u64(0x20);
        b.put_u64(0x48);
        b.put_i64(99);
        assert_eq!(
            decode(b.freeze()).unwrap(),
            Message::Commit {
                flags: 0,
                commit_lsn: Lsn(0x20),
                end_lsn: Lsn(0x48),
                commit_time: 99
            }
        );
    }

    #[test]
    fn relations_describe_columns_and_keys() {
        let mut b = BytesMut::new();
        b.put_u8(b'R');
        b.put_u32(16400);
        cstr(&mut b, "Weird \"Schema\"");
        cstr(&mut b, "order lines");
        b.put_u8(b'd');
        b.put_i16(2);
        b.put_u8(1);
        cstr(&mut b, "id");
        b.put_u32(23);
        b.put_i32(-1);
        b.put_u8(0);
        cstr(&mut b, "Note");
        b.put_u32(1043);
        b.put_i32(104);
        let Message::Relation(r) = decode(b.freeze()).unwrap() else {
            panic!("not a relation");
        };
        assert_eq!(r.namespace, "Weird \"Schema\"");
        assert_eq!(r.name, "order lines");
        assert_eq!(r.replica_identity, b'd');
        assert!(r.columns[0].key && !r.columns[1].key);
        assert_eq!(r.columns[1].type_modifier, 104);
    }

    #[test]
    fn updates_keep_unchanged_toast_and_old_keys_apart() {
        let mut b = BytesMut::new();
        b.put_u8(b'U');
        b.put_u32(5);
        b.put_u8(b'K');
        tuple_bytes(&mut b, &[Some("1"), None, None], &[]);
        b.put_u8(b'N');
        tuple_bytes(&mut b, &[Some("2"), Some("x"), None], &[2]);
        let m = decode(b.freeze()).unwrap();
        let Message::Update { relation, old, new } = m else {
            panic!("not an update")
        };
        assert_eq!(relation, 5);
        let (kind, old) = old.unwrap();
        assert_eq!(kind, OldImage::Key);
        assert_eq!(old[0], Value::Text(Bytes::from_static(b"1")));
        assert_eq!(new[1], Value::Text(Bytes::from_static(b"x")));
        assert_eq!(new[2], Value::Unchanged);

        let mut b = BytesMut::new();
        b.put_u8(b'U');
        b.put_u32(5);
        b.put_u8(b'N');
        tuple_bytes(&mut b, &[Some("2")], &[]);
        assert!(matches!(
            decode(b.freeze()).unwrap(),
            Message::Update { old: None, .. }
        ));
    }

    #[test]
    fn deletes_inserts_truncates_types_origins_and_messages_decode() {
        let mut b = BytesMut::new();
        b.put_u8(b'D');
        b.put_u32(9);
        b.put_u8(b'O');
        tuple_bytes(&mut b, &[Some("a"), None], &[]);
        assert!(matches!(
            decode(b.freeze()).unwrap(),
            Message::Delete {
                relation: 9,
                old: (OldImage::Full, _)
            }
        ));

        let mut b = BytesMut::new();
        b.put_u8(b'I');
        b.put_u32(9);
        b.put_u8(b'N');
        b.put_i16(1);
        b.put_u8(b'b');
        b.put_i32(4);
        b.put_i32(42);
        let Message::Insert { new, .. } = decode(b.freeze()).unwrap() else {
            panic!()
        };
        assert_eq!(new[0], Value::Binary(Bytes::from_static(&[0, 0, 0, 42])));

        let mut b = BytesMut::new();
        b.put_u8(b'T');
        b.put_u32(2);
        b.put_u8(3);
        b.put_u32(1);
        b.put_u32(2);
        assert_eq!(
            decode(b.freeze()).unwrap(),
            Message::Truncate {
                relations: vec![1, 2],
                cascade: true,
                restart_identity: true
            }
        );

        let mut b = BytesMut::new();
        b.put_u8(b'Y');
        b.put_u32(16500);
        cstr(&mut b, "public");
        cstr(&mut b, "mood");
        assert!(matches!(
            decode(b.freeze()).unwrap(),
            Message::Type { oid: 16500, .. }
        ));

        let mut b = BytesMut::new();
        b.put_u8(b'O');
        b.put_u64(7);
        cstr(&mut b, "node_a");
        assert!(matches!(
            decode(b.freeze()).unwrap(),
            Message::Origin { .. }
        ));

        let mut b = BytesMut::new();
        b.put_u8(b'M');
        b.put_u8(0);
        b.put_u64(0x99);
        cstr(&mut b, "pgferry_heartbeat");
        b.put_i32(2);
        b.put_slice(b"{}");
        assert_eq!(
            decode(b.freeze()).unwrap(),
            Message::Message {
                transactional: false,
                lsn: Lsn(0x99),
                prefix: "pgferry_heartbeat".into(),
                content: Bytes::from_static(b"{}")
            }
        );
    }

    #[test]
    fn truncated_and_unknown_messages_are_errors_not_panics() {
        assert!(decode(Bytes::new()).is_err());
        assert!(decode(Bytes::from_static(b"B\x00\x01")).is_err());
        assert!(decode(Bytes::from_static(b"Z")).is_err());
        assert!(
            decode(Bytes::from_static(
                b"I\x00\x00\x00\x01N\x00\x01t\x00\x00\x00\x09ab"
            ))
            .is_err()
        );
        assert!(decode(Bytes::from_static(b"I\x00\x00\x00\x01N\x00\x01x")).is_err());
        assert!(decode(Bytes::from_static(b"R\x00\x00\x00\x01public")).is_err());
    }
}
