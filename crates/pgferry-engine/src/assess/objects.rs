//! Objects pgferry does not move (or moves only in part), the extensions the target must
//! offer, and text: encodings, locales and collations.

use super::{Ctx, Severity};
use crate::error::Result;

/// Large objects, roles, tablespaces, event triggers, publications and subscriptions.
pub(super) async fn left_behind(ctx: &mut Ctx<'_>) -> Result<()> {
    let oids = ctx.all_oids();
    let row = ctx
        .source
        .query_one(
            "reading objects pgferry does not move",
            "SELECT (SELECT count(*) FROM pg_largeobject_metadata),
                    (SELECT array(SELECT DISTINCT ts.spcname::text FROM pg_class c
                                  JOIN pg_tablespace ts ON ts.oid = c.reltablespace
                                  WHERE c.oid = ANY($1) ORDER BY 1)),
                    (SELECT array(SELECT evtname::text FROM pg_event_trigger
                                  WHERE evtname NOT LIKE 'pgferry\\_capture\\_%' ORDER BY 1)),
                    (SELECT array(SELECT pubname::text FROM pg_publication
                                  WHERE pubname NOT LIKE 'pgferry\\_%' ORDER BY 1)),
                    (SELECT array(SELECT DISTINCT r.rolname::text FROM pg_class c
                                  JOIN pg_roles r ON r.oid = c.relowner
                                  WHERE c.oid = ANY($1)
                                  UNION
                                  SELECT DISTINCT g.rolname::text FROM pg_class c,
                                         aclexplode(c.relacl) a
                                  JOIN pg_roles g ON g.oid = a.grantee
                                  WHERE c.oid = ANY($1) ORDER BY 1))",
            &[&oids],
        )
        .await?;
    let blobs: i64 = row.get(0);
    if blobs > 0 && ctx.loads() {
        let bytes: i64 = ctx
            .source
            .query_one(
                "measuring large objects",
                "SELECT CASE WHEN has_table_privilege('pg_largeobject', 'SELECT')
                        THEN pg_total_relation_size('pg_largeobject') ELSE 0 END",
                &[],
            )
            .await?
            .get(0);
        ctx.push(
            "objects.large_objects",
            if ctx.cdc() {
                Severity::Warning
            } else {
                Severity::Info
            },
            None,
            format!(
                "{blobs} large object(s){}: the load copies them with their OIDs{}",
                if bytes > 0 {
                    format!(" ({})", crate::cdc::human_bytes(bytes))
                } else {
                    String::new()
                },
                if ctx.cdc() {
                    ", but logical decoding does not carry their later changes"
                } else {
                    ""
                }
            ),
            if ctx.cdc() {
                "keep large objects unchanged after the load starts, or copy them again \
                 before the cutover"
            } else {
                "nothing to do"
            },
        );
    }
    let tablespaces: Vec<String> = row.get(1);
    if !tablespaces.is_empty() {
        ctx.push(
            "objects.tablespaces",
            Severity::Info,
            None,
            format!(
                "selected tables live in tablespace(s) {}; the target creates every table in \
                 its default tablespace",
                tablespaces.join(", ")
            ),
            "nothing to do; move tables on the target afterwards if you need to \
             (ALTER TABLE ... SET TABLESPACE)",
        );
    }
    let event_triggers: Vec<String> = row.get(2);
    if !event_triggers.is_empty() {
        ctx.push(
            "objects.event_triggers",
            Severity::Warning,
            None,
            format!(
                "the source has event trigger(s) {}, which are not migrated",
                event_triggers.join(", ")
            ),
            "create them on the target yourself (CREATE EVENT TRIGGER needs a superuser)",
        );
    }
    let publications: Vec<String> = row.get(3);
    if !publications.is_empty() {
        ctx.push(
            "objects.publications",
            Severity::Info,
            None,
            format!(
                "the source has publication(s) {}, which are not migrated",
                publications.join(", ")
            ),
            "create them on the target after the cutover if subscribers should follow it",
        );
    }
    subscriptions(ctx).await?;
    roles(ctx, row.get(4)).await
}

/// Subscriptions live in `pg_subscription`, which only a superuser can read in full;
/// `pg_stat_subscription` names them for anyone.
async fn subscriptions(ctx: &mut Ctx<'_>) -> Result<()> {
    let subs: Vec<String> = ctx
        .source
        .query(
            "reading subscriptions",
            "SELECT subname::text FROM pg_stat_subscription ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !subs.is_empty() {
        ctx.push(
            "objects.subscriptions",
            Severity::Warning,
            None,
            format!(
                "the source subscribes to other servers ({}); subscriptions are not \
                 migrated, and the tables they fill keep changing",
                subs.join(", ")
            ),
            "create the subscriptions on the target at the cutover (copy_data = false)",
        );
    }
    Ok(())
}

/// Roles that own the selected tables or are granted on them, missing on the target.
async fn roles(ctx: &mut Ctx<'_>, used: Vec<String>) -> Result<()> {
    let present: Vec<String> = ctx
        .target
        .query(
            "reading target roles",
            "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)",
            &[&used],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&String> = used.iter().filter(|r| !present.contains(r)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let restores = ctx.task.full_load.keep_owners || ctx.task.full_load.keep_privileges;
    let names: Vec<String> = missing.iter().map(|r| r.to_string()).collect();
    ctx.push(
        "objects.roles",
        if restores && ctx.loads() {
            Severity::Blocker
        } else {
            Severity::Info
        },
        None,
        format!(
            "role(s) {} own or are granted the selected tables on the source and do not \
             exist on the target{}",
            names.join(", "),
            if restores {
                "; keep_owners or keep_privileges makes the restore name them"
            } else {
                "; the target user will own everything (keep_owners = false)"
            }
        ),
        names
            .iter()
            .map(|r| format!("CREATE ROLE {};", pgferry_pg::quote_ident(r)))
            .collect::<Vec<_>>()
            .join(" ")
            + " (pg_dumpall --roles-only on the source lists them with their attributes)",
    );
    Ok(())
}

/// Extensions installed on the source that the target lacks, or has only at another
/// version.
pub(super) async fn extensions(ctx: &mut Ctx<'_>) -> Result<()> {
    let installed = ctx
        .source
        .query(
            "reading installed extensions",
            "SELECT extname::text, extversion FROM pg_extension WHERE extname <> 'plpgsql'
             ORDER BY 1",
            &[],
        )
        .await?;
    let names: Vec<String> = installed.iter().map(|r| r.get(0)).collect();
    let available = ctx
        .target
        .query(
            "reading available extension versions",
            "SELECT name::text, array_agg(version ORDER BY version)
             FROM pg_available_extension_versions WHERE name = ANY($1) GROUP BY name",
            &[&names],
        )
        .await?;
    for r in installed {
        let (name, version): (String, String) = (r.get(0), r.get(1));
        let versions: Option<Vec<String>> = available
            .iter()
            .find(|a| a.get::<_, String>(0) == name)
            .map(|a| a.get(1));
        match versions {
            None => ctx.push(
                "objects.extension_missing",
                Severity::Blocker,
                Some(name.clone()),
                format!(
                    "extension {name} {version} is installed on the source, and the target \
                     cannot install it"
                ),
                format!(
                    "install its package on the target server (on RDS and Aurora, check \
                     that {name} is supported: SHOW rds.extensions)"
                ),
            ),
            Some(v) if !v.contains(&version) => ctx.push(
                "objects.extension_version",
                Severity::Warning,
                Some(name.clone()),
                format!(
                    "extension {name} is {version} on the source; the target offers {}",
                    v.join(", ")
                ),
                format!(
                    "ALTER EXTENSION {} UPDATE on the source to a version the target has, or \
                     check that the target's version reads the same data",
                    pgferry_pg::quote_ident(&name)
                ),
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Encodings, `lc_collate` and `lc_ctype`, ICU, and collation versions.
pub(super) async fn text(ctx: &mut Ctx<'_>) -> Result<()> {
    const SQL: &str = "SELECT pg_encoding_to_char(d.encoding)::text, d.datcollate::text,
                              d.datctype::text,
                              (SELECT count(*) FROM pg_collation WHERE collprovider = 'i') > 0,
                              current_setting('server_version_num')::int
                       FROM pg_database d WHERE d.datname = current_database()";
    let s = ctx.source.query_one("reading locales", SQL, &[]).await?;
    let t = ctx.target.query_one("reading locales", SQL, &[]).await?;
    let (s_enc, s_coll, s_ctype): (String, String, String) = (s.get(0), s.get(1), s.get(2));
    let (t_enc, t_coll, t_ctype): (String, String, String) = (t.get(0), t.get(1), t.get(2));
    if s_enc != t_enc {
        let lossy = s_enc == "UTF8" || t_enc == "SQL_ASCII";
        ctx.push(
            "text.encoding",
            if lossy {
                Severity::Blocker
            } else {
                Severity::Warning
            },
            None,
            format!(
                "the source database is {s_enc} and the target {t_enc}: text is converted on \
                 the way{}",
                if lossy {
                    ", and characters the target's encoding lacks make the load fail"
                } else {
                    ""
                }
            ),
            format!("create the target database with ENCODING '{s_enc}' (and TEMPLATE template0)"),
        );
    }
    for (what, a, b) in [
        ("lc_collate", &s_coll, &t_coll),
        ("lc_ctype", &s_ctype, &t_ctype),
    ] {
        if a != b {
            ctx.push(
                if what == "lc_collate" {
                    "text.lc_collate"
                } else {
                    "text.lc_ctype"
                },
                Severity::Warning,
                None,
                format!(
                    "{what} is {a:?} on the source and {b:?} on the target: text sorts and \
                     compares differently there (ORDER BY, unique indexes, range queries)"
                ),
                format!(
                    "create the target database with LC_COLLATE and LC_CTYPE '{a}', or \
                     check that the application accepts the target's order"
                ),
            );
        }
    }
    let icu_source: bool = s.get(3);
    let icu_target: bool = t.get(3);
    if icu_source && !icu_target {
        ctx.push(
            "text.icu",
            Severity::Blocker,
            None,
            "the source has ICU collations and the target was built without ICU",
            "use a target server built with ICU (every managed service is)",
        );
    }
    providers(ctx).await?;
    collation_versions(ctx, &s_coll).await
}

/// The databases' default collation providers (15+): ICU on one side and libc on the
/// other order the same text differently.
async fn providers(ctx: &mut Ctx<'_>) -> Result<()> {
    if ctx.source_info.major() < 15 || ctx.target_info.major() < 15 {
        return Ok(());
    }
    const SQL: &str = "SELECT CASE datlocprovider WHEN 'i' THEN 'ICU' WHEN 'b' THEN 'builtin'
                                                  ELSE 'libc' END
                       FROM pg_database WHERE datname = current_database()";
    let s: String = ctx
        .source
        .query_one("reading the collation provider", SQL, &[])
        .await?
        .get(0);
    let t: String = ctx
        .target
        .query_one("reading the collation provider", SQL, &[])
        .await?
        .get(0);
    if s != t {
        ctx.push(
            "text.provider",
            Severity::Warning,
            None,
            format!(
                "the source database's default collation comes from {s} and the target's from \
                 {t}: text sorts and compares differently there"
            ),
            format!(
                "create the target database with LOCALE_PROVIDER {}",
                s.to_lowercase()
            ),
        );
    }
    Ok(())
}

/// Collations the selected columns use, whose provider versions differ between the two
/// servers: the same collation can order text differently under another library version.
async fn collation_versions(ctx: &mut Ctx<'_>, default_collate: &str) -> Result<()> {
    let oids: Vec<u32> = ctx.tables.iter().map(|t| t.oid).collect();
    const VERSIONS: &str = "SELECT c.collname::text, c.collprovider::text,
                                   pg_collation_actual_version(c.oid)
                            FROM pg_collation c WHERE c.collname = ANY($1)";
    let mut used: Vec<String> = ctx
        .source
        .query(
            "reading collations in use",
            "SELECT DISTINCT CASE WHEN a.attcollation = 100 THEN 'default'
                                  ELSE co.collname::text END
             FROM pg_attribute a JOIN pg_collation co ON co.oid = a.attcollation
             WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&oids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .filter(|n: &String| n != "default" && n != "C" && n != "POSIX")
        .collect();
    // The database default, as the collation of its locale that initdb imported.
    if !matches!(default_collate, "C" | "POSIX") && !used.iter().any(|u| u == default_collate) {
        used.push(default_collate.to_owned());
    }
    if used.is_empty() {
        return Ok(());
    }
    let s = ctx
        .source
        .query("reading collation versions", VERSIONS, &[&used])
        .await?;
    let t = ctx
        .target
        .query("reading collation versions", VERSIONS, &[&used])
        .await?;
    for r in &s {
        let (name, provider, version): (String, String, Option<String>) =
            (r.get(0), r.get(1), r.get(2));
        let other = t.iter().find(|x| x.get::<_, String>(0) == name);
        match other.map(|x| x.get::<_, Option<String>>(2)) {
            // The default's locale differs: `text.lc_collate` says so.
            None if name == default_collate => {}
            None => ctx.push(
                "text.collation_missing",
                Severity::Blocker,
                Some(name.clone()),
                format!(
                    "collation {name:?} is used by selected columns and is missing on the target"
                ),
                format!(
                    "CREATE COLLATION {} on the target, or create the target with that locale",
                    pgferry_pg::quote_ident(&name)
                ),
            ),
            Some(v) if v != version => ctx.push(
                "text.collation_version",
                Severity::Warning,
                Some(name.clone()),
                format!(
                    "collation {name:?} ({}) is version {} on the source and {} on the \
                     target: the two servers may order the same text differently. pgferry \
                     builds the target's indexes there, so they are consistent, but results \
                     ordered by this text may change",
                    if provider == "i" { "ICU" } else { "libc" },
                    version.as_deref().unwrap_or("unknown"),
                    v.as_deref().unwrap_or("unknown")
                ),
                "test the application's ordering on the target before the cutover",
            ),
            Some(_) => {}
        }
    }
    Ok(())
}
