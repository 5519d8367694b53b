//! Schema dump and restore through PostgreSQL's own tools.
//!
//! `pg_dump` knows how to write every kind of schema object correctly for every server
//! version; pgferry does not try to. It dumps the pre-data and post-data sections once, under
//! the load's snapshot, into a custom-format archive. The archive's table of contents (TOC)
//! lists each object with its catalog identity and its dependencies. pgferry filters the
//! TOC, has `pg_restore` render the SQL of the entries it keeps (no connection needed), and
//! splits that script back into one piece of SQL per TOC entry, so each piece can run in its
//! own transaction, in parallel, and be recorded as done.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::conninfo::ConnInfo;
use crate::error::PgError;
use crate::ident::quote_literal;

/// Where `pg_dump` and `pg_restore` live, and their major version.
#[derive(Debug, Clone)]
pub struct PgTools {
    pub bindir: Option<PathBuf>,
    pub major: i32,
}

fn tool_error(tool: &str, message: impl Into<String>) -> PgError {
    PgError::Tool {
        tool: tool.to_owned(),
        message: message.into(),
    }
}

/// Runs a tool to completion, returning its stdout, or its stderr's last lines as the error.
async fn run_tool(mut cmd: Command, tool: &str) -> Result<Vec<u8>, PgError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = cmd.output().await.map_err(|e| {
        tool_error(
            tool,
            format!("cannot run {tool}: {e}; install the PostgreSQL client tools"),
        )
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .rev()
            .take(8)
            .collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(tool_error(
            tool,
            format!("{} exited with {}: {}", tool, out.status, tail.join(" | ")),
        ));
    }
    Ok(out.stdout)
}

fn parse_major(version_output: &str) -> Option<i32> {
    // "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    let version = version_output.split_whitespace().nth(2)?;
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

impl PgTools {
    fn program(&self, tool: &str) -> PathBuf {
        match &self.bindir {
            Some(dir) => dir.join(tool),
            None => PathBuf::from(tool),
        }
    }

    pub fn pg_dump(&self) -> PathBuf {
        self.program("pg_dump")
    }

    pub fn pg_restore(&self) -> PathBuf {
        self.program("pg_restore")
    }

    async fn probe(bindir: Option<PathBuf>) -> Option<PgTools> {
        let tools = PgTools { bindir, major: 0 };
        let mut cmd = Command::new(tools.pg_dump());
        cmd.arg("--version");
        let out = run_tool(cmd, "pg_dump").await.ok()?;
        let major = parse_major(&String::from_utf8_lossy(&out))?;
        Some(PgTools { major, ..tools })
    }

    /// Finds client tools at least as new as `min_major` (pg_dump refuses older). Looks in
    /// `$PGFERRY_PG_BINDIR`, then Debian's `/usr/lib/postgresql/*/bin` (newest first), then
    /// `PATH`.
    pub async fn locate(min_major: i32) -> Result<PgTools, PgError> {
        let mut candidates: Vec<Option<PathBuf>> = Vec::new();
        if let Some(dir) = std::env::var_os("PGFERRY_PG_BINDIR") {
            candidates.push(Some(PathBuf::from(dir)));
        }
        let mut debian: Vec<(i32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v: i32 = e.file_name().to_str()?.parse().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        debian.sort_by_key(|d| std::cmp::Reverse(d.0));
        candidates.extend(debian.into_iter().map(|(_, p)| Some(p)));
        candidates.push(None);
        let mut newest_found = None;
        for candidate in candidates {
            if let Some(tools) = Self::probe(candidate).await {
                if tools.major >= min_major {
                    return Ok(tools);
                }
                newest_found = newest_found.max(Some(tools.major));
            }
        }
        Err(tool_error(
            "pg_dump",
            match newest_found {
                Some(v) => format!(
                    "the newest pg_dump found is version {v}, older than the source server \
                     ({min_major}); install postgresql-client-{min_major} or newer"
                ),
                None => "pg_dump was not found; install the PostgreSQL client tools \
                         (postgresql-client on Debian and Ubuntu)"
                    .to_owned(),
            },
        ))
    }

    /// Points a command at `info` through libpq environment variables only, so the
    /// caller's own `PG*` variables cannot redirect it.
    fn connect_env(cmd: &mut Command, info: &ConnInfo) {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(info.libpq_env());
    }

    /// Dumps the pre-data and post-data schema of `info`'s database, as seen by `snapshot`
    /// when given, into a custom-format archive at `path`. The control schema is left out.
    pub async fn dump_schema(
        &self,
        info: &ConnInfo,
        snapshot: Option<&str>,
        path: &Path,
    ) -> Result<(), PgError> {
        let mut cmd = Command::new(self.pg_dump());
        cmd.args([
            "--format=custom",
            "--section=pre-data",
            "--section=post-data",
            "--no-publications",
            "--no-subscriptions",
            "--exclude-schema=pgferry",
            "--exclude-schema=pgferry_capture",
            "--file",
        ])
        .arg(path);
        if let Some(snapshot) = snapshot {
            cmd.arg(format!("--snapshot={snapshot}"));
        }
        Self::connect_env(&mut cmd, info);
        run_tool(cmd, "pg_dump").await.map(|_| ())
    }

    /// Reads an archive's table of contents with dependencies and sections.
    pub async fn read_toc(&self, archive: &Path) -> Result<Vec<TocEntry>, PgError> {
        let list = |section: Option<&str>| {
            let mut cmd = Command::new(self.pg_restore());
            cmd.arg("--list");
            match section {
                Some(s) => {
                    cmd.arg(format!("--section={s}"));
                }
                None => {
                    cmd.arg("--verbose");
                }
            }
            cmd.arg(archive);
            run_tool(cmd, "pg_restore")
        };
        let full = String::from_utf8_lossy(&list(None).await?).into_owned();
        let post = String::from_utf8_lossy(&list(Some("post-data")).await?).into_owned();
        let post_ids: HashSet<i32> = parse_toc(&post).iter().map(|e| e.dump_id).collect();
        let mut entries = parse_toc(&full);
        for e in &mut entries {
            e.section = if post_ids.contains(&e.dump_id) {
                Section::PostData
            } else {
                Section::PreData
            };
        }
        Ok(entries)
    }

    /// Renders the SQL of `entries`, in their order, and splits it per entry.
    pub async fn render(
        &self,
        archive: &Path,
        entries: &[&TocEntry],
        options: &RenderOptions,
    ) -> Result<RenderedScript, PgError> {
        let mut list = tempfile::NamedTempFile::new().map_err(|e| PgError::Io {
            context: "creating a pg_restore list file".to_owned(),
            source: e,
        })?;
        let mut text = String::new();
        for e in entries {
            text.push_str(&e.list_line);
            text.push('\n');
        }
        std::io::Write::write_all(&mut list, text.as_bytes()).map_err(|e| PgError::Io {
            context: "writing a pg_restore list file".to_owned(),
            source: e,
        })?;
        let mut cmd = Command::new(self.pg_restore());
        cmd.args([
            "--verbose",
            "--file=-",
            "--no-tablespaces",
            "--no-security-labels",
        ]);
        if !options.keep_owners {
            cmd.arg("--no-owner");
        }
        if !options.keep_privileges {
            cmd.arg("--no-privileges");
        }
        cmd.arg("--use-list").arg(list.path()).arg(archive);
        let script = String::from_utf8(run_tool(cmd, "pg_restore").await?)
            .map_err(|_| tool_error("pg_restore", "rendered SQL is not valid UTF-8"))?;
        let expected: Vec<(i32, u32, u32)> = entries
            .iter()
            .map(|e| (e.dump_id, e.class_oid, e.obj_oid))
            .collect();
        Ok(split_script(&script, &expected))
    }
}

/// Where an entry belongs in the restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    /// Before the data: schemas, types, functions, tables, views.
    PreData,
    /// After the data: indexes, constraints, triggers, rules, policies, matview contents.
    PostData,
}

/// One line of `pg_restore --list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    pub dump_id: i32,
    /// Catalog of the object (`pg_class`, `pg_constraint`, ...), or 0.
    pub class_oid: u32,
    /// The object's OID in that catalog, or 0.
    pub obj_oid: u32,
    /// pg_dump's kind: `TABLE`, `INDEX`, `FK CONSTRAINT`, `MATERIALIZED VIEW DATA`, ...
    pub desc: String,
    /// The rest of the line: schema, name and owner, for messages only.
    pub tag: String,
    pub deps: Vec<i32>,
    pub section: Section,
    /// The line itself, to write into a `--use-list` file.
    pub list_line: String,
}

impl TocEntry {
    /// `INDEX public orders_pkey`, for messages.
    pub fn label(&self) -> String {
        let mut tag = self.tag.trim().to_owned();
        // Drop the trailing owner name pg_restore prints.
        if let Some(i) = tag.rfind(' ') {
            tag.truncate(i);
        }
        format!("{} {}", self.desc, tag)
    }
}

/// pg_dump's entry kinds, longest first so that `FK CONSTRAINT` wins over `CONSTRAINT`.
const DESCS: &[&str] = &[
    "PUBLICATION TABLES IN SCHEMA",
    "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY",
    "MATERIALIZED VIEW DATA",
    "FOREIGN DATA WRAPPER",
    "PROCEDURAL LANGUAGE",
    "TEXT SEARCH TEMPLATE",
    "DATABASE PROPERTIES",
    "TEXT SEARCH PARSER",
    "PUBLICATION TABLE",
    "SEQUENCE OWNED BY",
    "MATERIALIZED VIEW",
    "CHECK CONSTRAINT",
    "OPERATOR FAMILY",
    "OPERATOR CLASS",
    "FOREIGN SERVER",
    "SECURITY LABEL",
    "ACCESS METHOD",
    "EVENT TRIGGER",
    "FK CONSTRAINT",
    "FOREIGN TABLE",
    "INDEX ATTACH",
    "LARGE OBJECT",
    "ROW SECURITY",
    "SEQUENCE SET",
    "TABLE ATTACH",
    "USER MAPPING",
    "BLOB METADATA",
    "DEFAULT ACL",
    "PUBLICATION",
    "SUBSCRIPTION",
    "CONSTRAINT",
    "CONVERSION",
    "SHELL TYPE",
    "STATISTICS",
    "TABLE DATA",
    "COLLATION",
    "EXTENSION",
    "AGGREGATE",
    "PROCEDURE",
    "SEARCHPATH",
    "STDSTRINGS",
    "TRANSFORM",
    "DATABASE",
    "ENCODING",
    "FUNCTION",
    "OPERATOR",
    "SEQUENCE",
    "COMMENT",
    "DEFAULT",
    "TRIGGER",
    "DOMAIN",
    "POLICY",
    "SCHEMA",
    "SERVER",
    "BLOBS",
    "INDEX",
    "TABLE",
    "BLOB",
    "CAST",
    "RULE",
    "TYPE",
    "VIEW",
    "ACL",
];

/// Parses `pg_restore --list [--verbose]` output: `ID; CLASS OID DESC SCHEMA NAME OWNER`
/// lines, each optionally followed by `;\tdepends on: ID ...`.
pub fn parse_toc(text: &str) -> Vec<TocEntry> {
    let mut entries: Vec<TocEntry> = Vec::new();
    for line in text.lines() {
        if let Some(deps) = line.strip_prefix(";\tdepends on:") {
            if let Some(last) = entries.last_mut() {
                last.deps.extend(
                    deps.split_whitespace()
                        .filter_map(|d| d.parse::<i32>().ok()),
                );
            }
            continue;
        }
        if line.starts_with(';') || line.trim().is_empty() {
            continue;
        }
        let Some((id, rest)) = line.split_once("; ") else {
            continue;
        };
        let Ok(dump_id) = id.trim().parse::<i32>() else {
            continue;
        };
        let mut parts = rest.splitn(3, ' ');
        let (Some(class), Some(oid), Some(tail)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(class_oid), Ok(obj_oid)) = (class.parse::<u32>(), oid.parse::<u32>()) else {
            continue;
        };
        let desc = DESCS
            .iter()
            .find(|d| tail.starts_with(**d) && tail[d.len()..].starts_with(' '))
            .map(|d| (*d).to_owned())
            .unwrap_or_else(|| tail.split(' ').next().unwrap_or("").to_owned());
        let tag = tail[desc.len().min(tail.len())..].trim_start().to_owned();
        entries.push(TocEntry {
            dump_id,
            class_oid,
            obj_oid,
            desc,
            tag,
            deps: Vec::new(),
            section: Section::PreData,
            list_line: line.to_owned(),
        });
    }
    entries
}

/// How entries are rendered.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub keep_owners: bool,
    pub keep_privileges: bool,
}

/// A rendered script, split per TOC entry.
#[derive(Debug, Clone, Default)]
pub struct RenderedScript {
    /// Session settings every connection runs before any entry.
    pub preamble: String,
    /// `(dump id, SQL)` in restore order.
    pub entries: Vec<(i32, String)>,
}

/// The setting a session-setting line sets: `SET name = ...;` or
/// `SELECT pg_catalog.set_config('name', ...);`.
fn setting_name(line: &str) -> Option<String> {
    let l = line.trim();
    let name = if let Some(rest) = l.strip_prefix("SET ") {
        rest.split([' ', '=']).next()?
    } else {
        l.strip_prefix("SELECT pg_catalog.set_config('")?
            .split('\'')
            .next()?
    };
    Some(name.to_ascii_lowercase())
}

/// Drops the session settings a `pg_dump` newer than the target writes and the target does
/// not know (`SET transaction_timeout = 0;` from a 17 `pg_dump`, for a 16 target): each
/// only restores a default that such a target does not have. `known` is the target's
/// `pg_settings` names. Everything else is kept as written.
pub fn drop_unknown_settings(sql: &str, known: &std::collections::HashSet<String>) -> String {
    let mut out = String::with_capacity(sql.len());
    for line in sql.split_inclusive('\n') {
        let unknown =
            is_session_setting(line) && setting_name(line).is_some_and(|n| !known.contains(&n));
        if !unknown {
            out.push_str(line);
        }
    }
    out
}

fn is_session_setting(line: &str) -> bool {
    let l = line.trim();
    (l.starts_with("SET ") && l.ends_with(';'))
        || (l.starts_with("SELECT pg_catalog.set_config(") && l.ends_with(';'))
}

/// Splits a `pg_restore --verbose --file=-` script at its `-- TOC entry N (class C OID O)`
/// headers, looking for each expected entry in order, so that text inside a function body
/// cannot be mistaken for a header. Session settings pg_restore prints between entries
/// belong to the entry after them and are moved there. psql's `\restrict` lines, which
/// only psql understands, are dropped.
pub fn split_script(script: &str, expected: &[(i32, u32, u32)]) -> RenderedScript {
    let restrict_key = script
        .lines()
        .find_map(|l| l.strip_prefix("\\restrict "))
        .map(str::to_owned);
    let cleaned: String = match &restrict_key {
        Some(key) => {
            let a = format!("\\restrict {key}");
            let b = format!("\\unrestrict {key}");
            script
                .lines()
                .filter(|l| *l != a && *l != b)
                .map(|l| format!("{l}\n"))
                .collect()
        }
        None => script.to_owned(),
    };
    let mut starts: Vec<(usize, Option<usize>)> = Vec::with_capacity(expected.len());
    let mut cursor = 0;
    for (i, (id, class, oid)) in expected.iter().enumerate() {
        let needle = format!("--\n-- TOC entry {id} (class {class} OID {oid})\n");
        match cleaned[cursor..].find(&needle) {
            Some(pos) => {
                cursor += pos;
                starts.push((i, Some(cursor)));
                cursor += needle.len();
            }
            None => starts.push((i, None)),
        }
    }
    let found: Vec<(usize, usize)> = starts
        .iter()
        .filter_map(|(i, s)| s.map(|s| (*i, s)))
        .collect();
    let preamble_end = found.first().map(|(_, s)| *s).unwrap_or(cleaned.len());
    let mut pieces: HashMap<usize, String> = HashMap::new();
    for (n, (i, start)) in found.iter().enumerate() {
        let end = found.get(n + 1).map(|(_, s)| *s).unwrap_or(cleaned.len());
        pieces.insert(*i, cleaned[*start..end].to_owned());
    }
    // Move trailing session settings forward to the next entry that has SQL.
    let mut carry = String::new();
    let mut entries = Vec::with_capacity(expected.len());
    for (i, (id, _, _)) in expected.iter().enumerate() {
        let Some(piece) = pieces.remove(&i) else {
            entries.push((*id, String::new()));
            continue;
        };
        let mut lines: Vec<&str> = piece.lines().collect();
        let mut trailing = Vec::new();
        while let Some(last) = lines.last() {
            if last.trim().is_empty() {
                lines.pop();
            } else if is_session_setting(last) {
                trailing.push(lines.pop().unwrap_or_default());
            } else {
                break;
            }
        }
        trailing.reverse();
        let mut sql = std::mem::take(&mut carry);
        sql.push_str(&lines.join("\n"));
        sql.push('\n');
        for t in trailing {
            carry.push_str(t);
            carry.push('\n');
        }
        entries.push((*id, sql));
    }
    RenderedScript {
        preamble: cleaned[..preamble_end].to_owned(),
        entries,
    }
}

/// `SET TRANSACTION SNAPSHOT '...'`, which takes no parameters.
pub fn set_snapshot_sql(snapshot: &str) -> String {
    format!("SET TRANSACTION SNAPSHOT {}", quote_literal(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOC: &str = "\
;
; Archive created at 2026-11-21 05:02:32 UTC
;
843; 1247 16385 TYPE public mood postgres
215; 1259 16395 TABLE public c postgres
214; 1259 16389 TABLE public my table postgres
;\tdepends on: 843
3231; 2606 16400 FK CONSTRAINT public c c_id_fkey postgres
;\tdepends on: 215 214 3220
3378; 0 16406 MATERIALIZED VIEW DATA public mv postgres
;\tdepends on: 216 3382
3229; 0 0 INDEX ATTACH public p1_id_idx postgres
";

    #[test]
    fn toc_lines_parse_with_kinds_and_dependencies() {
        let toc = parse_toc(TOC);
        assert_eq!(toc.len(), 6);
        assert_eq!(toc[0].desc, "TYPE");
        assert_eq!(toc[2].desc, "TABLE");
        assert_eq!(toc[2].tag, "public my table postgres");
        assert_eq!(toc[2].label(), "TABLE public my table");
        assert_eq!(toc[2].deps, vec![843]);
        assert_eq!(toc[3].desc, "FK CONSTRAINT");
        assert_eq!(toc[3].deps, vec![215, 214, 3220]);
        assert_eq!(toc[4].desc, "MATERIALIZED VIEW DATA");
        assert_eq!((toc[4].class_oid, toc[4].obj_oid), (0, 16406));
        assert_eq!(toc[5].desc, "INDEX ATTACH");
        assert_eq!(
            toc[5].list_line,
            "3229; 0 0 INDEX ATTACH public p1_id_idx postgres"
        );
    }

    const SCRIPT: &str = "--
-- PostgreSQL database dump
--

\\restrict KEY123

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- TOC entry 843 (class 1247 OID 16385)
-- Name: mood; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.mood AS ENUM ('a');


SET default_table_access_method = heap;

--
-- TOC entry 214 (class 1259 OID 16389)
-- Dependencies: 843
-- Name: t; Type: TABLE; Schema: public; Owner: -
--

CREATE FUNCTION x() RETURNS text LANGUAGE sql AS $$ SELECT '
--
-- TOC entry 215 (class 1259 OID 99999)
' $$;
CREATE TABLE public.t (m public.mood);


--
-- TOC entry 215 (class 1259 OID 16395)
--

CREATE TABLE public.c (id int);


--
-- PostgreSQL database dump complete
--

\\unrestrict KEY123
";

    #[test]
    fn scripts_split_at_the_expected_headers_only() {
        let r = split_script(
            SCRIPT,
            &[(843, 1247, 16385), (214, 1259, 16389), (215, 1259, 16395)],
        );
        assert!(r.preamble.contains("SET statement_timeout = 0;"));
        let known: std::collections::HashSet<String> = ["statement_timeout", "search_path"]
            .map(String::from)
            .into();
        assert_eq!(
            drop_unknown_settings(
                "SET statement_timeout = 0;\nSET transaction_timeout = 0;\n\
                 SELECT pg_catalog.set_config('search_path', '', false);\n\
                 SELECT pg_catalog.set_config('new_thing', '', false);\nCREATE TABLE t ();\n",
                &known
            ),
            "SET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n\
             CREATE TABLE t ();\n"
        );
        assert!(!r.preamble.contains("restrict"));
        assert_eq!(r.entries.len(), 3);
        assert!(r.entries[0].1.contains("CREATE TYPE public.mood"));
        assert!(
            !r.entries[0].1.contains("default_table_access_method"),
            "settings move to the entry they precede"
        );
        assert!(
            r.entries[1]
                .1
                .starts_with("SET default_table_access_method = heap;\n")
        );
        assert!(
            r.entries[1].1.contains("OID 99999"),
            "a header inside a body is not split"
        );
        assert!(r.entries[1].1.contains("CREATE TABLE public.t"));
        assert!(r.entries[2].1.contains("CREATE TABLE public.c"));
        assert!(!r.entries[2].1.contains("unrestrict"));
    }

    #[test]
    fn an_entry_without_output_gets_empty_sql() {
        let r = split_script(SCRIPT, &[(843, 1247, 16385), (7, 0, 0), (215, 1259, 16395)]);
        assert_eq!(r.entries[1], (7, String::new()));
        assert!(r.entries[2].1.contains("CREATE TABLE public.c"));
    }

    #[test]
    fn tool_versions_parse() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("pg_dump (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(parse_major("nonsense"), None);
    }
}
