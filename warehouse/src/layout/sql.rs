//! Just enough reading of ClickHouse DDL for the cluster rewrite: keywords, qualified
//! names, balanced parentheses, top-level commas, and table references in a query body.
//! Not a SQL parser: the rewrite recognises a fixed set of statement shapes and refuses
//! the rest, so these helpers only need to be exact on those shapes.

/// A position in a statement, read forward.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(text: &'a str) -> Cursor<'a> {
        Cursor { text, pos: 0 }
    }

    /// What is left, from the next non-blank character.
    pub(super) fn rest(&self) -> &'a str {
        self.text[self.pos..].trim_start()
    }

    /// The byte offset of the next non-blank character in the statement.
    pub(super) fn offset(&self) -> usize {
        self.text.len() - self.rest().len()
    }

    /// Consumes `words` if they come next, each a whole word (case-insensitive);
    /// consumes nothing otherwise.
    pub(super) fn keywords(&mut self, words: &[&str]) -> bool {
        let mut pos = self.pos;
        for word in words {
            let rest = &self.text[pos..];
            let start = pos + (rest.len() - rest.trim_start().len());
            let candidate = &self.text[start..];
            let whole = candidate
                .get(..word.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(word))
                && !candidate[word.len()..].starts_with(is_word_char);
            if !whole {
                return false;
            }
            pos = start + word.len();
        }
        self.pos = pos;
        true
    }

    /// Consumes `{database}.name` if it comes next and returns `name`.
    pub(super) fn qualified_name(&mut self, database: &str) -> Option<&'a str> {
        let start = self.offset();
        let name = self.text[start..]
            .strip_prefix(database)?
            .strip_prefix('.')?;
        let len = name.find(|c| !is_word_char(c)).unwrap_or(name.len());
        if len == 0 {
            return None;
        }
        self.pos = start + database.len() + 1 + len;
        Some(&name[..len])
    }

    /// Whether nothing but blanks is left.
    pub(super) fn at_end(&self) -> bool {
        self.rest().is_empty()
    }
}

pub(super) fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The byte offset of the `)` closing the `(` at `open`, quotes respected.
pub(super) fn matching_paren(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in text[open..].char_indices() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '`' | '"' => quote = Some(c),
                '(' => depth += 1,
                ')' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(open + i);
                    }
                }
                _ => {}
            },
        }
    }
    None
}

/// `text` cut at the commas outside parentheses and quotes, each part trimmed; empty
/// parts dropped.
pub(super) fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None, 0);
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '`' | '"' => quote = Some(c),
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(text[start..i].trim());
                    start = i + 1;
                }
                _ => {}
            },
        }
    }
    parts.push(text[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// The byte offset of the first whole word `word` (case-insensitive) in `text`.
pub(super) fn find_word(text: &str, word: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let word = word.to_ascii_lowercase();
    lower.match_indices(&word).map(|(i, _)| i).find(|&i| {
        !text[..i].ends_with(is_word_char) && !text[i + word.len()..].starts_with(is_word_char)
    })
}

/// `body` with every reference `{database}.name` for which `rename(name)` answers
/// replaced by `{database}.<answer>`; whole names only (`db.calls` is not a reference to
/// `db.call`).
pub(super) fn replace_references(
    body: &str,
    database: &str,
    rename: impl Fn(&str) -> Option<String>,
) -> String {
    let prefix = format!("{database}.");
    let mut out = String::with_capacity(body.len());
    let mut copied = 0;
    for (at, _) in body.match_indices(&prefix) {
        if at < copied || body[..at].ends_with(is_word_char) {
            continue;
        }
        let name_start = at + prefix.len();
        let tail = &body[name_start..];
        let len = tail.find(|c| !is_word_char(c)).unwrap_or(tail.len());
        if let Some(new_name) = rename(&tail[..len]) {
            out.push_str(&body[copied..name_start]);
            out.push_str(&new_name);
            copied = name_start + len;
        }
    }
    out.push_str(&body[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_match_whole_words_in_any_case_or_nothing() {
        let mut c = Cursor::new("create  TABLE if not exists db.t (a UInt8)");
        assert!(!c.keywords(&["CREATE", "VIEW"]));
        assert!(c.keywords(&["CREATE", "TABLE"]));
        assert!(c.keywords(&["IF", "NOT", "EXISTS"]));
        assert_eq!(c.qualified_name("db"), Some("t"));
        assert_eq!(c.rest(), "(a UInt8)");
        assert!(!Cursor::new("CREATED x").keywords(&["CREATE"]));
    }

    #[test]
    fn qualified_names_need_the_database_and_a_dot() {
        assert_eq!(Cursor::new("db.t_1 AS").qualified_name("db"), Some("t_1"));
        assert_eq!(Cursor::new("other.t").qualified_name("db"), None);
        assert_eq!(Cursor::new("db t").qualified_name("db"), None);
        assert_eq!(Cursor::new("db.(").qualified_name("db"), None);
    }

    #[test]
    fn matching_paren_skips_nested_and_quoted_parentheses() {
        let text = "(a Nullable(Int8), b String DEFAULT ')(', c Array(Tuple(x, y))) rest";
        let close = matching_paren(text, 0).unwrap();
        assert_eq!(&text[close + 1..], " rest");
        assert_eq!(matching_paren("(a (b)", 0), None);
    }

    #[test]
    fn split_top_level_keeps_commas_inside_types_and_strings() {
        assert_eq!(
            split_top_level(" a Tuple(UInt8, String),\n b String DEFAULT 'x, y' , "),
            vec!["a Tuple(UInt8, String)", "b String DEFAULT 'x, y'"]
        );
    }

    #[test]
    fn find_word_skips_parts_of_longer_words() {
        assert_eq!(find_word("x_settings SETTINGS a = 1", "settings"), Some(11));
        assert_eq!(find_word("ORDER BY settings_id", "SETTINGS"), None);
    }

    #[test]
    fn replace_references_renames_whole_names_of_the_database_only() {
        let body = "FROM db.calls JOIN db.calls_state, other.calls, xdb.calls, db.calls";
        let out = replace_references(body, "db", |name| {
            (name == "calls").then(|| format!("{name}_local"))
        });
        assert_eq!(
            out,
            "FROM db.calls_local JOIN db.calls_state, other.calls, xdb.calls, db.calls_local"
        );
    }
}
