//! Stream replies read entry by entry, so one entry this version cannot read
//! (written by someone else, with a field name that is not UTF-8, say) is
//! skipped and counted instead of failing the whole reply — and with it every
//! read after it.
//!
//! Owns: [`Entry`] and the walk over `XREAD`, `XREADGROUP`, `XRANGE`,
//! `XREVRANGE` and `XAUTOCLAIM` replies (RESP2 arrays or RESP3 maps).
//! Must not know: what the fields mean.

use redis::Value;

/// One stream entry: its id and its fields, as bytes.
#[derive(Debug)]
pub(crate) struct Entry {
    pub id: String,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// The value of field `name`, if the entry has it.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(key, _)| key == name.as_bytes())
            .map(|(_, value)| value.as_slice())
    }
}

/// A reply's entries in order, and how many could not be read.
#[derive(Debug, Default)]
pub(crate) struct Entries {
    pub entries: Vec<Entry>,
    pub unreadable: usize,
}

/// The entries of an `XRANGE`/`XREVRANGE` reply (or one stream's part of
/// an `XREAD`).
pub(crate) fn range(reply: &Value) -> Entries {
    let mut found = Entries::default();
    for item in items(reply) {
        match entry(item) {
            Some(entry) => found.entries.push(entry),
            // A deleted entry claimed by `XAUTOCLAIM` in Redis 6.2 is nil.
            None if matches!(item, Value::Nil) => {}
            None => found.unreadable += 1,
        }
    }
    found
}

/// The entries of an `XREAD`/`XREADGROUP` reply for `key` (nil: none).
pub(crate) fn read(reply: &Value, key: &str) -> Entries {
    let streams: Vec<(&Value, &Value)> = match reply {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        other => items(other)
            .iter()
            .filter_map(|stream| match items(stream) {
                [name, entries] => Some((name, entries)),
                _ => None,
            })
            .collect(),
    };
    streams
        .into_iter()
        .find(|(name, _)| text(name).as_deref() == Some(key))
        .map_or_else(Entries::default, |(_, entries)| range(entries))
}

/// An `XAUTOCLAIM` reply: the cursor to go on from, and the claimed entries.
pub(crate) fn claimed(reply: &Value) -> (String, Entries) {
    match items(reply) {
        [cursor, entries, ..] => (text(cursor).unwrap_or_else(|| "0-0".into()), range(entries)),
        _ => ("0-0".into(), Entries::default()),
    }
}

/// The two numbers of the first entry's id in an `XREVRANGE … COUNT 1`
/// reply, whatever its fields (an entry of another writer counts too).
pub(crate) fn newest_id(reply: &Value) -> Option<(u64, u64)> {
    let first = items(reply).first()?;
    let id = text(items(first).first()?)?;
    id_parts(&id)
}

/// `<ms>-<seq>` as numbers.
pub(crate) fn id_parts(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn entry(value: &Value) -> Option<Entry> {
    let [id, fields] = items(value) else {
        return None;
    };
    let id = text(id)?;
    let flat = items(fields);
    if !flat.len().is_multiple_of(2) {
        return None;
    }
    let fields = flat
        .chunks(2)
        .map(|pair| Some((bytes(&pair[0])?, bytes(&pair[1])?)))
        .collect::<Option<Vec<_>>>()?;
    Some(Entry { id, fields })
}

fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

fn bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes.clone()),
        Value::SimpleString(text) => Some(text.clone().into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    String::from_utf8(bytes(value)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &[u8]) -> Value {
        Value::BulkString(text.to_vec())
    }

    fn entry_value(id: &str, fields: &[&[u8]]) -> Value {
        Value::Array(vec![
            bulk(id.as_bytes()),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn an_entry_that_cannot_be_read_is_skipped_and_counted_not_fatal() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(b"p:outcomes"),
            Value::Array(vec![
                entry_value("1-1", &[b"json", b"{}"]),
                entry_value("1-2", &[b"\xff\xfe", b"x", b"odd"]),
                Value::Int(7),
                entry_value("1-3", &[b"\xff\xfe", b"binary names are fine"]),
            ]),
        ])]);
        let found = read(&reply, "p:outcomes");
        let ids: Vec<&str> = found.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1-1", "1-3"]);
        assert_eq!(found.unreadable, 2);
        assert_eq!(found.entries[0].field("json"), Some(&b"{}"[..]));
        assert_eq!(read(&reply, "p:stats").entries.len(), 0);
        assert_eq!(read(&Value::Nil, "p:outcomes").entries.len(), 0);
    }
}
