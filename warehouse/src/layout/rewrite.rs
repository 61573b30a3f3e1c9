//! The cluster rules, one per statement shape a migration may contain (see
//! scripts/cluster/README.md, "Statements: single node -> cluster"). `{shard}` and
//! `{replica}` are left in the SQL: every server expands its own macros. A shape not
//! listed here is an error naming the statement, never passed through: a statement run
//! as written on one server of a cluster would leave the others without it.

use std::collections::HashMap;

use super::sql::{
    find_word, is_word_char, matching_paren, replace_references, split_top_level, Cursor,
};
use super::{placement, LayoutError, Placement, LOCAL_SUFFIX, REPLICATED_DEDUP_WINDOW};

/// Turns single-server statements into cluster statements, one after the other, keeping
/// what earlier statements created.
#[derive(Debug)]
pub(super) struct Rewriter<'a> {
    database: &'a str,
    cluster: &'a str,
    /// Tables split into `T_local` + Distributed `T`.
    sharded: HashMap<String, Sharded>,
}

/// What the Distributed table over a `T_local` is made of.
#[derive(Debug, Clone)]
struct Sharded {
    key: &'static str,
    /// Every column a client inserts, in the Distributed table's order.
    columns: Vec<String>,
}

impl<'a> Rewriter<'a> {
    pub(super) fn new(database: &'a str, cluster: &'a str) -> Rewriter<'a> {
        Rewriter {
            database,
            cluster,
            sharded: HashMap::new(),
        }
    }

    pub(super) fn rewrite_all(
        &mut self,
        statements: &[String],
    ) -> Result<Vec<String>, LayoutError> {
        let mut out = Vec::new();
        for statement in statements {
            out.extend(self.rewrite(statement)?);
        }
        Ok(out)
    }

    /// The cluster statements for one single-server statement.
    pub(super) fn rewrite(&mut self, statement: &str) -> Result<Vec<String>, LayoutError> {
        let (db, c) = (self.database, self.cluster);
        let unknown = || LayoutError::UnknownStatement(head(statement));
        let mut cur = Cursor::new(statement.trim());
        if cur.keywords(&["CREATE", "DATABASE"]) {
            cur.keywords(&["IF", "NOT", "EXISTS"]);
            if !cur.keywords(&[db]) || !cur.at_end() {
                return Err(unknown());
            }
            return Ok(vec![format!(
                "CREATE DATABASE IF NOT EXISTS {db} ON CLUSTER {c}"
            )]);
        }
        if cur.keywords(&["CREATE", "TABLE"]) {
            cur.keywords(&["IF", "NOT", "EXISTS"]);
            let name = cur.qualified_name(db).ok_or_else(unknown)?;
            if !cur.rest().starts_with('(') {
                return Err(unknown());
            }
            return self.create_table(statement.trim(), name, cur.offset());
        }
        if cur.keywords(&["CREATE", "MATERIALIZED", "VIEW"]) {
            cur.keywords(&["IF", "NOT", "EXISTS"]);
            let name = cur.qualified_name(db).ok_or_else(unknown)?;
            if !cur.keywords(&["TO"]) {
                return Err(LayoutError::ViewWithoutTarget(name.to_owned()));
            }
            let target = cur.qualified_name(db).ok_or_else(unknown)?;
            if !cur.keywords(&["AS"]) {
                return Err(unknown());
            }
            return self.materialized_view(name, target, cur.rest());
        }
        if cur.keywords(&["CREATE", "VIEW"]) {
            cur.keywords(&["IF", "NOT", "EXISTS"]);
            let name = cur.qualified_name(db).ok_or_else(unknown)?;
            if !cur.keywords(&["AS"]) {
                return Err(unknown());
            }
            // The body reads the Distributed tables: each shard applies FINAL to its own
            // rows, and the view's GROUP BY and JOINs run on the server asked.
            let body = cur.rest();
            return Ok(vec![format!(
                "CREATE VIEW IF NOT EXISTS {db}.{name} ON CLUSTER {c} AS {body}"
            )]);
        }
        if cur.keywords(&["ALTER", "TABLE"]) {
            let name = cur.qualified_name(db).ok_or_else(unknown)?;
            return self.alter(name, cur.rest());
        }
        if cur.keywords(&["DROP", "TABLE"]) {
            cur.keywords(&["IF", "EXISTS"]);
            let name = cur.qualified_name(db).ok_or_else(unknown)?;
            if !cur.at_end() {
                return Err(unknown());
            }
            let mut out = vec![format!("DROP TABLE IF EXISTS {db}.{name} ON CLUSTER {c}")];
            if self.sharded.remove(name).is_some() {
                // Its local table goes too, after the Distributed table that reads it,
                // so a later CREATE of the name starts afresh.
                out.push(format!(
                    "DROP TABLE IF EXISTS {db}.{name}{LOCAL_SUFFIX} ON CLUSTER {c}"
                ));
            }
            return Ok(out);
        }
        Err(unknown())
    }

    /// `CREATE TABLE T (cols) ENGINE = XMergeTree[(args)] rest` -> the replicated
    /// `T_local` and the Distributed `T` over it.
    fn create_table(
        &mut self,
        statement: &str,
        name: &str,
        open: usize,
    ) -> Result<Vec<String>, LayoutError> {
        let (db, c) = (self.database, self.cluster);
        let unknown = || LayoutError::UnknownStatement(head(statement));
        let close = matching_paren(statement, open).ok_or_else(unknown)?;
        let columns = split_top_level(&statement[open + 1..close]);
        let mut rest = Cursor::new(&statement[close + 1..]);
        if !rest.keywords(&["ENGINE"]) {
            return Err(unknown());
        }
        let after = rest
            .rest()
            .strip_prefix('=')
            .ok_or_else(unknown)?
            .trim_start();
        let engine_len = after.find(|ch| !is_word_char(ch)).unwrap_or(after.len());
        let (engine, mut tail) = (&after[..engine_len], after[engine_len..].trim_start());
        let mut args = "";
        if tail.starts_with('(') {
            let end = matching_paren(tail, 0).ok_or_else(unknown)?;
            args = tail[1..end].trim();
            tail = &tail[end + 1..];
        }
        let tail = tail.trim();
        if !is_merge_tree(engine) {
            return Err(LayoutError::NotReplicable {
                table: name.to_owned(),
                engine: engine.to_owned(),
            });
        }
        if tail.is_empty() {
            return Err(LayoutError::NoOrderBy(name.to_owned()));
        }
        let Some(Placement::Sharded(key)) = placement(name) else {
            return Err(LayoutError::NoShardKey(name.to_owned()));
        };
        let path = format!("'/clickhouse/tables/{{shard}}/{db}.{name}'");
        let mut engine_args = vec![path.as_str(), "'{replica}'"];
        if !args.is_empty() {
            engine_args.push(args);
        }
        let setting = format!("replicated_deduplication_window = {REPLICATED_DEDUP_WINDOW}");
        let tail = match find_word(tail, "SETTINGS") {
            Some(at) => format!("{}SETTINGS {setting},{}", &tail[..at], &tail[at + 8..]),
            None => format!("{tail}\nSETTINGS {setting}"),
        };
        let local = format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name}{LOCAL_SUFFIX} ON CLUSTER {c}\n(\n    {}\n)\n\
             ENGINE = Replicated{engine}({})\n{tail}",
            columns.join(",\n    "),
            engine_args.join(", ")
        );
        // A Distributed table that lists MATERIALIZED or ALIAS columns refuses every
        // insert (Code 44): the shard computes them.
        let columns = columns
            .iter()
            .filter(|col| is_insertable(col))
            .map(|col| col.to_string())
            .collect();
        let sharded = Sharded { key, columns };
        let distributed = self.distributed(name, &sharded);
        self.sharded.insert(name.to_owned(), sharded);
        Ok(vec![local, distributed])
    }

    /// The Distributed table `name` over `name_local`.
    fn distributed(&self, name: &str, sharded: &Sharded) -> String {
        let (db, c, key) = (self.database, self.cluster, sharded.key);
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {c}\n(\n    {}\n)\n\
             ENGINE = Distributed({c}, {db}, {name}{LOCAL_SUFFIX}, {key})",
            sharded.columns.join(",\n    ")
        )
    }

    /// `CREATE MATERIALIZED VIEW M TO T AS body` -> the view reads the local tables and
    /// writes the local target: a view fires on the server that received the insert,
    /// for the rows of its shard, and the replicated target copies the result.
    fn materialized_view(
        &self,
        name: &str,
        target: &str,
        body: &str,
    ) -> Result<Vec<String>, LayoutError> {
        let (db, c) = (self.database, self.cluster);
        if !self.sharded.contains_key(target) {
            return Err(LayoutError::ViewTargetNotSharded {
                view: name.to_owned(),
                target: target.to_owned(),
            });
        }
        let local_body = self.to_local(body);
        if local_body == body {
            return Err(LayoutError::ViewSourceNotSharded(name.to_owned()));
        }
        Ok(vec![format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{name} ON CLUSTER {c} TO {db}.{target}{LOCAL_SUFFIX} AS {local_body}"
        )])
    }

    /// Every reference to a sharded table pointed at its local table.
    fn to_local(&self, body: &str) -> String {
        replace_references(body, self.database, |name| {
            self.sharded
                .contains_key(name)
                .then(|| format!("{name}{LOCAL_SUFFIX}"))
        })
    }

    /// `ALTER TABLE T op` -> the ALTER of `T_local` on every server, and when `op`
    /// changes the columns a client inserts, the Distributed table created again with
    /// them: 18.16 refuses ALTER ... ON CLUSTER of a Distributed table when the shards
    /// use internal replication (Code 371), and it holds no data (inserts are
    /// synchronous). Local first: a Distributed table that lacks a column still reads.
    fn alter(&mut self, name: &str, op: &str) -> Result<Vec<String>, LayoutError> {
        let (db, c) = (self.database, self.cluster);
        let Some(mut sharded) = self.sharded.get(name).cloned() else {
            return Err(LayoutError::AlterOfUnknownTable(name.to_owned()));
        };
        let mut changed = false;
        for clause in split_top_level(op) {
            changed |= change_columns(&mut sharded.columns, clause).map_err(|()| {
                LayoutError::UnknownAlter {
                    table: name.to_owned(),
                    clause: head(clause),
                }
            })?;
        }
        let mut out = vec![format!(
            "ALTER TABLE {db}.{name}{LOCAL_SUFFIX} ON CLUSTER {c} {op}"
        )];
        if changed {
            out.push(format!("DROP TABLE IF EXISTS {db}.{name} ON CLUSTER {c}"));
            out.push(self.distributed(name, &sharded));
            self.sharded.insert(name.to_owned(), sharded);
        }
        Ok(out)
    }
}

/// Applies one ALTER clause to the columns of a Distributed table; whether they changed.
/// `Err` for a clause with no cluster rule.
fn change_columns(columns: &mut Vec<String>, clause: &str) -> Result<bool, ()> {
    let mut cur = Cursor::new(clause);
    let verb = ["ADD", "DROP", "MODIFY", "RENAME", "COMMENT", "CLEAR"]
        .into_iter()
        .find(|verb| cur.keywords(&[verb, "COLUMN"]));
    let Some(verb) = verb else {
        // Clauses that leave the columns alone run on the local tables as they are.
        const KEEP: &[&[&str]] = &[
            &["DROP", "PARTITION"],
            &["DETACH", "PARTITION"],
            &["ATTACH", "PARTITION"],
            &["FREEZE"],
            &["DELETE"],
            &["UPDATE"],
            &["MODIFY", "SETTING"],
            &["MODIFY", "TTL"],
            &["MODIFY", "ORDER", "BY"],
        ];
        let known = KEEP.iter().any(|words| Cursor::new(clause).keywords(words));
        return if known { Ok(false) } else { Err(()) };
    };
    if !cur.keywords(&["IF", "NOT", "EXISTS"]) {
        cur.keywords(&["IF", "EXISTS"]);
    }
    let rest = cur.rest();
    let name_len = rest.find(|ch| !is_word_char(ch)).unwrap_or(rest.len());
    let (column, definition) = (&rest[..name_len], without_position(&rest[name_len..]));
    if column.is_empty() {
        return Err(());
    }
    let index = columns
        .iter()
        .position(|d| d.split_whitespace().next() == Some(column));
    let new = format!("{column} {definition}");
    match (verb, index) {
        ("DROP", Some(i)) => {
            columns.remove(i);
        }
        ("ADD", None) if is_insertable(&new) => columns.push(new),
        ("MODIFY", Some(i)) if is_insertable(&new) => columns[i] = new,
        ("MODIFY", Some(i)) => {
            columns.remove(i);
        }
        ("MODIFY", None) if is_insertable(&new) => columns.push(new),
        ("RENAME", Some(i)) => {
            let mut to = Cursor::new(definition);
            let renamed = to.keywords(&["TO"]).then(|| to.rest()).ok_or(())?;
            let old = columns[i].clone();
            columns[i] = format!("{renamed}{}", &old[column.len()..]);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// A column definition without a trailing `AFTER col` or `FIRST` (a position in the
/// local table; the Distributed table lists columns in its own order).
fn without_position(definition: &str) -> &str {
    let definition = definition.trim();
    let words: Vec<&str> = definition.split_whitespace().collect();
    let cut = match words.as_slice() {
        [.., last] if last.eq_ignore_ascii_case("FIRST") => 1,
        [.., after, _] if after.eq_ignore_ascii_case("AFTER") => 2,
        _ => 0,
    };
    let mut end = definition.len();
    for _ in 0..cut {
        end = definition[..end]
            .trim_end()
            .rfind(char::is_whitespace)
            .unwrap_or(0);
    }
    definition[..end].trim_end()
}

/// Whether a client inserts the column (not computed by the server from others).
fn is_insertable(column: &str) -> bool {
    !column
        .split_whitespace()
        .any(|w| w.eq_ignore_ascii_case("MATERIALIZED") || w.eq_ignore_ascii_case("ALIAS"))
}

/// Engines with a Replicated form: `[Replacing|Aggregating|...]MergeTree`.
fn is_merge_tree(engine: &str) -> bool {
    const FAMILY: &[&str] = &[
        "",
        "Replacing",
        "Aggregating",
        "Summing",
        "Collapsing",
        "VersionedCollapsing",
        "Graphite",
    ];
    engine
        .strip_suffix("MergeTree")
        .is_some_and(|kind| FAMILY.contains(&kind))
}

/// The start of a statement, to name it in an error.
fn head(statement: &str) -> String {
    let flat = statement.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(120) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}
