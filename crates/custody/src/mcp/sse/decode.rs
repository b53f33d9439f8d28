//! Reading server-sent events from an upstream, with a bound on each event.
//!
//! The framing follows the WHATWG `EventSource` parsing rules (lines end in CRLF, LF or CR; a
//! blank line ends an event; `data` lines are joined with LF; lines starting with `:` are
//! comments; `retry` takes digits only), except that, as a relay, ids and retry values are not
//! carried from one event to the next. Unlike a general-purpose parser it never holds more than
//! `limit` bytes of an event: lines are consumed as they arrive, and once an event's data passes
//! the limit it is only counted and hashed ([`Meter`]) until the event ends, then reported as
//! [`Item::Oversized`]. Comments and unknown fields are skipped without being kept.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::mcp::upstream::oversized::{Meter, Oversized};

/// The longest event id kept; a longer one is dropped (the event still passes).
const MAX_ID: usize = 1024;
/// The longest field name recognised (`retry`); longer names are unknown fields.
const MAX_NAME: usize = 5;

/// One decoded event.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    Event {
        id: Option<String>,
        retry: Option<u64>,
        /// The data lines joined with LF; `None` without any `data` field.
        data: Option<Bytes>,
    },
    /// An event whose data went over the limit: counted and hashed, not kept.
    Oversized(Oversized),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Data,
    Id,
    Retry,
    /// `event` and unknown fields: skipped.
    Other,
}

#[derive(Debug)]
enum Line {
    /// Nothing of this line yet.
    Start,
    /// Reading the field name.
    Name { buf: [u8; MAX_NAME], len: usize },
    /// Reading the value; `space`: a leading space is still to be dropped.
    Value { field: Field, space: bool },
    /// A comment, or a name too long to be a field we read.
    Skip,
}

/// A push decoder: feed it the body's chunks, take complete events.
pub struct Decoder {
    limit: usize,
    line: Line,
    /// The previous chunk ended in CR: a LF starting this one belongs to that line ending.
    after_cr: bool,
    data: BytesMut,
    has_data: bool,
    /// Past the limit: the event's data goes here instead of `data`.
    meter: Option<Meter>,
    id: Vec<u8>,
    id_set: bool,
    id_dropped: bool,
    retry: Vec<u8>,
    retry_set: bool,
}

impl Decoder {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            line: Line::Start,
            after_cr: false,
            data: BytesMut::new(),
            has_data: false,
            meter: None,
            id: Vec::new(),
            id_set: false,
            id_dropped: false,
            retry: Vec::new(),
            retry_set: false,
        }
    }

    /// Decodes a chunk; complete events are appended to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut VecDeque<Item>) {
        if std::mem::take(&mut self.after_cr) && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        while !chunk.is_empty() {
            match memchr::memchr2(b'\n', b'\r', chunk) {
                None => {
                    self.segment(chunk);
                    return;
                }
                Some(at) => {
                    self.segment(&chunk[..at]);
                    self.end_line(out);
                    let mut next = at + 1;
                    if chunk[at] == b'\r' {
                        match chunk.get(next) {
                            Some(b'\n') => next += 1,
                            Some(_) => {}
                            None => self.after_cr = true,
                        }
                    }
                    chunk = &chunk[next..];
                }
            }
        }
    }

    /// The body ended: an event still open is dropped (the standard's rule), unless it was
    /// already over the limit, which is reported as not read to its end.
    pub fn finish(&mut self, out: &mut VecDeque<Item>) {
        if let Some(m) = self.meter.take() {
            out.push_back(Item::Oversized(m.finish(false)));
        }
        self.reset();
    }

    /// Part of the current line (no line break inside).
    fn segment(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.line {
                Line::Skip => return,
                Line::Start => {
                    if bytes[0] == b':' {
                        self.line = Line::Skip;
                        return;
                    }
                    self.line = Line::Name {
                        buf: [0; MAX_NAME],
                        len: 0,
                    };
                }
                Line::Name { buf, len } => match bytes.iter().position(|&b| b == b':') {
                    Some(at) if *len + at <= MAX_NAME => {
                        buf[*len..*len + at].copy_from_slice(&bytes[..at]);
                        let field = field(&buf[..*len + at]);
                        self.start_value(field);
                        bytes = &bytes[at + 1..];
                    }
                    None if *len + bytes.len() <= MAX_NAME => {
                        buf[*len..*len + bytes.len()].copy_from_slice(bytes);
                        *len += bytes.len();
                        return;
                    }
                    _ => {
                        self.line = Line::Skip;
                        return;
                    }
                },
                Line::Value { field, space } => {
                    let field = *field;
                    if std::mem::take(space) && bytes[0] == b' ' {
                        bytes = &bytes[1..];
                        continue;
                    }
                    match field {
                        Field::Data => self.data_bytes(bytes),
                        Field::Id => {
                            if self.id.len() + bytes.len() <= MAX_ID {
                                self.id.extend_from_slice(bytes);
                            } else {
                                self.id_dropped = true;
                            }
                        }
                        Field::Retry => {
                            if self.retry.len() + bytes.len() <= 20 {
                                self.retry.extend_from_slice(bytes);
                            } else {
                                self.retry.clear();
                                self.retry.push(b'x');
                            }
                        }
                        Field::Other => {}
                    }
                    return;
                }
            }
        }
    }

    fn start_value(&mut self, field: Field) {
        match field {
            Field::Data => {
                if self.has_data {
                    self.data_bytes(b"\n");
                }
                self.has_data = true;
            }
            Field::Id => {
                self.id.clear();
                self.id_set = true;
                self.id_dropped = false;
            }
            Field::Retry => {
                self.retry.clear();
                self.retry_set = true;
            }
            Field::Other => {}
        }
        self.line = Line::Value { field, space: true };
    }

    fn data_bytes(&mut self, bytes: &[u8]) {
        if let Some(m) = &mut self.meter {
            m.feed(bytes);
        } else if self.data.len() + bytes.len() > self.limit {
            let mut m = Meter::new(self.limit);
            m.feed(&self.data);
            m.feed(bytes);
            // Let the memory go now, not at the end of the event.
            self.data = BytesMut::new();
            self.meter = Some(m);
        } else {
            self.data.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self, out: &mut VecDeque<Item>) {
        match std::mem::replace(&mut self.line, Line::Start) {
            Line::Start => self.dispatch(out),
            // A line without a colon is a field with an empty value.
            Line::Name { buf, len } => {
                let f = field(&buf[..len]);
                self.start_value(f);
                self.line = Line::Start;
            }
            Line::Value { .. } | Line::Skip => {}
        }
    }

    fn dispatch(&mut self, out: &mut VecDeque<Item>) {
        if let Some(m) = self.meter.take() {
            out.push_back(Item::Oversized(m.finish(true)));
        } else if self.has_data || self.id_set || self.retry_set {
            let id = (self.id_set && !self.id_dropped && !self.id.contains(&0))
                .then(|| String::from_utf8_lossy(&self.id).into_owned());
            let retry = std::str::from_utf8(&self.retry)
                .ok()
                .filter(|r| {
                    self.retry_set && !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit())
                })
                .and_then(|r| r.parse().ok());
            out.push_back(Item::Event {
                id,
                retry,
                data: self.has_data.then(|| self.data.split().freeze()),
            });
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.data.clear();
        self.has_data = false;
        self.id.clear();
        self.id_set = false;
        self.id_dropped = false;
        self.retry.clear();
        self.retry_set = false;
        self.line = Line::Start;
    }
}

fn field(name: &[u8]) -> Field {
    match name {
        b"data" => Field::Data,
        b"id" => Field::Id,
        b"retry" => Field::Retry,
        _ => Field::Other,
    }
}

#[cfg(test)]
mod tests;
