//! Finding where a key lives in the TOML text, so errors can say `file:line:col`.

use toml::de::{DeTable, DeValue};

/// Line and column (1-based) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

/// Byte offset of the key at `path` (dotted, e.g. `endpoints.demo.upstream.url`), or of the
/// deepest ancestor that exists.
pub fn find_key(text: &str, path: &str) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut found = None;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (key, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == part)?;
        found = Some(key.span().start);
        if parts.peek().is_none() {
            break;
        }
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            // `[[a.b]]` arrays of tables: the next part is an index.
            DeValue::Array(items) => {
                let Some(item) = parts
                    .next()
                    .and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| items.get(i))
                else {
                    break;
                };
                match item.get_ref() {
                    DeValue::Table(t) => {
                        found = Some(item.span().start);
                        table = t;
                    }
                    _ => {
                        found = Some(item.span().start);
                        break;
                    }
                }
            }
            _ => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys() {
        let text = "[server]\nlisten = \"x\"\n\n[endpoints.a.upstream]\ntransport = \"http\"\nurl = \"u\"\n";
        let at = find_key(text, "endpoints.a.upstream.url").unwrap();
        assert_eq!(line_col(text, at), (6, 1));
        let at = find_key(text, "server.listen").unwrap();
        assert_eq!(line_col(text, at), (2, 1));
        let text =
            "[[auth.oidc]]\nissuer = \"a\"\n\n[[auth.oidc]]\nissuer = \"b\"\naudiences = []\n";
        let at = find_key(text, "auth.oidc.1.audiences").unwrap();
        assert_eq!(line_col(text, at), (6, 1));
    }
}
