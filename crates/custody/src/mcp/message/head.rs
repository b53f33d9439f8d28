//! The typed view of a message: the few fields the relay inspects, read in one pass over the
//! bytes without building a document. Everything else is skipped (and validated) by serde.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// What the relay needs to know about a message without parsing the whole of it.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub jsonrpc_ok: bool,
    /// `None`: no `id` key; `Some(Value::Null)`: `"id": null`.
    pub id: Option<Value>,
    /// `None`: no `method` key; `Some` non-string: malformed.
    pub method: Option<Value>,
    pub has_result: bool,
    pub has_error: bool,
    pub params: Option<Params>,
}

/// The inspected part of `params`.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub name: Option<String>,
    pub uri: Option<String>,
    pub meta: Option<Meta>,
}

/// The inspected part of `params._meta`.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub protocol_version: Option<String>,
    pub client_capabilities_is_object: bool,
}

/// A top-level key the head cares about, recognised without allocating.
enum Key {
    Jsonrpc,
    Id,
    Method,
    Params,
    Result,
    Error,
    Name,
    Uri,
    Meta,
    ProtocolVersion,
    ClientCapabilities,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "jsonrpc" => Key::Jsonrpc,
                    "id" => Key::Id,
                    "method" => Key::Method,
                    "params" => Key::Params,
                    "result" => Key::Result,
                    "error" => Key::Error,
                    "name" => Key::Name,
                    "uri" => Key::Uri,
                    "_meta" => Key::Meta,
                    "io.modelcontextprotocol/protocolVersion" => Key::ProtocolVersion,
                    "io.modelcontextprotocol/clientCapabilities" => Key::ClientCapabilities,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Head;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON-RPC message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
                let mut head = Head::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Jsonrpc => {
                            let v: Value = map.next_value()?;
                            head.jsonrpc_ok = v.as_str() == Some("2.0");
                        }
                        Key::Id => head.id = Some(map.next_value()?),
                        Key::Method => head.method = Some(map.next_value()?),
                        Key::Params => head.params = map.next_value::<Option<Params>>()?,
                        Key::Result => {
                            map.next_value::<IgnoredAny>()?;
                            head.has_result = true;
                        }
                        Key::Error => {
                            map.next_value::<IgnoredAny>()?;
                            head.has_error = true;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(head)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Params;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("params as an object or an array")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
                let mut p = Params::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Name => p.name = string_or_skip(map.next_value()?),
                        Key::Uri => p.uri = string_or_skip(map.next_value()?),
                        Key::Meta => p.meta = map.next_value::<Option<Meta>>()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(p)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Params, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Params::default())
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Meta;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("_meta as an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Meta, A::Error> {
                let mut m = Meta::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::ProtocolVersion => {
                            m.protocol_version = string_or_skip(map.next_value()?)
                        }
                        Key::ClientCapabilities => {
                            let v: Value = map.next_value()?;
                            m.client_capabilities_is_object = v.is_object();
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_map(V)
    }
}

/// A string field, or `None` when the value is of another type (the relay then treats the
/// field as absent, as it would not match any header or policy).
fn string_or_skip(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}
