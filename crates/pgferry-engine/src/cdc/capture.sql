-- pgferry's DDL capture (installed by `pgferry run` when [cdc] ddl is on; removed by
-- `pgferry cleanup`). Static text: nothing from a task or a user is spliced in.
--
-- Event triggers record, for each command on an object pgferry carries, the object's shape
-- before and after the command as a row of pgferry_capture.log. That table is published, so
-- the row reaches the applier in the WAL at the command's place in its transaction. The row
-- is deleted again at once: the table stays empty, its WAL is the record.
--
-- The triggers must never break the application's DDL: every error is caught and written
-- as a `problem` row (or, if even that fails, a WARNING).

CREATE SCHEMA IF NOT EXISTS pgferry_capture;
COMMENT ON SCHEMA pgferry_capture IS
    'pgferry: DDL capture for streaming tasks; `pgferry cleanup` removes it';

CREATE TABLE IF NOT EXISTS pgferry_capture.tasks (task text PRIMARY KEY);

-- The last shape of every object captured, by OID: the "before" of the next command.
CREATE TABLE IF NOT EXISTS pgferry_capture.shapes (
    object oid PRIMARY KEY,
    kind text NOT NULL,
    shape jsonb NOT NULL
);

CREATE TABLE IF NOT EXISTS pgferry_capture.log (
    id bigserial PRIMARY KEY,
    tag text NOT NULL,
    kind text NOT NULL,
    identity text NOT NULL,
    old_shape text,
    new_shape text,
    problem text
);

CREATE OR REPLACE FUNCTION pgferry_capture.table_shape(rel oid) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
SELECT jsonb_build_object(
    'schema', n.nspname,
    'name', c.relname,
    'relkind', c.relkind::text,
    'columns', coalesce((
        SELECT jsonb_agg(jsonb_build_object(
            'attnum', a.attnum,
            'name', a.attname,
            'type', format_type(a.atttypid, a.atttypmod),
            'not_null', a.attnotnull,
            'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
            'generated', CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
            'identity', nullif(a.attidentity::text, ''),
            'collation', CASE WHEN a.attcollation <> t.typcollation THEN
                (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                 FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                 WHERE co.oid = a.attcollation) END,
            'inherited', a.attinhcount > 0
        ) ORDER BY a.attnum)
        FROM pg_attribute a
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]'::jsonb),
    'constraints', coalesce((
        SELECT jsonb_agg(jsonb_build_object('name', k.conname, 'def', pg_get_constraintdef(k.oid))
                         ORDER BY k.conname)
        FROM pg_constraint k
        WHERE k.conrelid = c.oid AND k.contype <> 't' AND k.conislocal AND k.conparentid = 0),
        '[]'::jsonb),
    'indexes', coalesce((
        SELECT jsonb_agg(jsonb_build_object(
            'name', x.relname, 'oid', x.indexrelid::bigint, 'unique', x.indisunique,
            'tail', CASE WHEN starts_with(x.def, x.prefix) THEN substr(x.def, length(x.prefix) + 1) END,
            'def', x.def) ORDER BY x.relname)
        FROM (SELECT ic.relname, i.indexrelid, i.indisunique, pg_get_indexdef(i.indexrelid) AS def,
                     format('CREATE %sINDEX %s ON %s%s.%s ',
                            CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END,
                            quote_ident(ic.relname),
                            CASE WHEN c.relkind = 'p' THEN 'ONLY ' ELSE '' END,
                            quote_ident(n.nspname), quote_ident(c.relname)) AS prefix
              FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
              WHERE i.indrelid = c.oid
                AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                                WHERE k.conindid = i.indexrelid AND k.conrelid = c.oid
                                  AND k.contype IN ('p', 'u', 'x'))
                AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)) x),
        '[]'::jsonb),
    'parent', (SELECT jsonb_build_object('schema', pn.nspname, 'name', p.relname, 'oid', p.oid::bigint)
               FROM pg_inherits h JOIN pg_class p ON p.oid = h.inhparent
               JOIN pg_namespace pn ON pn.oid = p.relnamespace
               WHERE h.inhrelid = c.oid AND c.relispartition),
    'root', (SELECT jsonb_build_object('schema', rn.nspname, 'name', r.relname)
             FROM pg_class r JOIN pg_namespace rn ON rn.oid = r.relnamespace
             WHERE c.relispartition AND r.oid = pg_partition_root(c.oid)),
    'bound', CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END,
    'partition_key', CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END
)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = rel AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
$$;

CREATE OR REPLACE FUNCTION pgferry_capture.sequence_shape(seq oid) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
SELECT jsonb_build_object(
    'schema', n.nspname, 'name', c.relname, 'type', format_type(s.seqtypid, NULL),
    'start', s.seqstart, 'increment', s.seqincrement, 'min', s.seqmin, 'max', s.seqmax,
    'cache', s.seqcache, 'cycle', s.seqcycle)
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE s.seqrelid = seq AND c.relpersistence = 'p'
  -- An identity column's sequence comes and goes with its column.
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                    AND d.deptype = 'i')
$$;

CREATE OR REPLACE FUNCTION pgferry_capture.enum_shape(typ oid) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
SELECT jsonb_build_object(
    'schema', n.nspname, 'name', t.typname,
    'values', coalesce((SELECT jsonb_agg(e.enumlabel ORDER BY e.enumsortorder)
                        FROM pg_enum e WHERE e.enumtypid = t.oid), '[]'::jsonb))
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.oid = typ AND t.typtype = 'e'
$$;

-- The shape of a captured object of `kind`, or NULL when it is gone or not carried.
CREATE OR REPLACE FUNCTION pgferry_capture.shape_of(p_kind text, p_object oid) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
SELECT CASE p_kind
    WHEN 'table' THEN pgferry_capture.table_shape(p_object)
    WHEN 'sequence' THEN pgferry_capture.sequence_shape(p_object)
    WHEN 'enum' THEN pgferry_capture.enum_shape(p_object)
END
$$;

-- Whether a schema's objects are the application's (not the system's, not pgferry's).
CREATE OR REPLACE FUNCTION pgferry_capture.carried(nsp oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
SELECT nspname NOT IN ('pg_catalog', 'information_schema', 'pgferry_capture', 'pgferry')
       AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp%'
FROM pg_namespace WHERE oid = nsp
$$;

-- Logs a row and deletes it again: its WAL is what the applier reads.
CREATE OR REPLACE FUNCTION pgferry_capture.emit(p_tag text, p_kind text, p_identity text,
                                                p_old jsonb, p_new jsonb, p_problem text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    logged bigint;
BEGIN
    -- Never the command's text: the client's query string may hold other statements, and
    -- secrets (a user mapping's password).
    INSERT INTO pgferry_capture.log (tag, kind, identity, old_shape, new_shape, problem)
    VALUES (p_tag, p_kind, p_identity, p_old::text, p_new::text, p_problem)
    RETURNING id INTO logged;
    DELETE FROM pgferry_capture.log WHERE id = logged;
END
$$;

-- A command the triggers could not capture: a `problem` row, which the applier refuses; if
-- even that fails, a WARNING. Never an error: the application's DDL goes on.
CREATE OR REPLACE FUNCTION pgferry_capture.failed(p_tag text, p_identity text, p_error text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pgferry_capture.emit(p_tag, 'problem', coalesce(p_identity, ''), NULL, NULL,
                                 p_error);
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'pgferry could not capture %: %', p_tag, SQLERRM;
END
$$;

-- Compares an object's shape with the last one captured; logs and keeps it when it moved.
CREATE OR REPLACE FUNCTION pgferry_capture.refresh(p_tag text, p_kind text, p_object oid)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    before jsonb;
    after jsonb := pgferry_capture.shape_of(p_kind, p_object);
BEGIN
    SELECT s.shape INTO before FROM pgferry_capture.shapes s WHERE s.object = p_object;
    IF before IS NOT DISTINCT FROM after THEN
        RETURN;
    END IF;
    IF after IS NULL THEN
        DELETE FROM pgferry_capture.shapes s WHERE s.object = p_object;
    ELSE
        INSERT INTO pgferry_capture.shapes AS s VALUES (p_object, p_kind, after)
        ON CONFLICT (object) DO UPDATE SET shape = excluded.shape;
    END IF;
    PERFORM pgferry_capture.emit(p_tag, p_kind,
        coalesce(after ->> 'schema', before ->> 'schema') || '.' ||
        coalesce(after ->> 'name', before ->> 'name'), before, after, NULL);
END
$$;

-- A new table joins each publication that lists pgferry_capture.log by name (one that
-- publishes all tables has it already), so its rows stream from its first insert.
CREATE OR REPLACE FUNCTION pgferry_capture.publish(rel oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pub name;
    leaf boolean;
    via_root boolean := current_setting('server_version_num')::int >= 130000;
BEGIN
    SELECT (c.relkind = 'r' AND NOT (via_root AND c.relispartition))
           OR (c.relkind = 'p' AND via_root AND NOT c.relispartition)
    INTO leaf FROM pg_class c WHERE c.oid = rel;
    IF NOT coalesce(leaf, false) THEN
        RETURN;
    END IF;
    FOR pub IN
        SELECT p.pubname FROM pg_publication p JOIN pg_publication_rel r ON r.prpubid = p.oid
        WHERE r.prrelid = 'pgferry_capture.log'::regclass AND NOT p.puballtables
          AND NOT EXISTS (SELECT 1 FROM pg_publication_rel m
                          WHERE m.prpubid = p.oid AND m.prrelid = rel)
    LOOP
        EXECUTE format('ALTER PUBLICATION %I ADD TABLE ONLY %s', pub, rel::regclass);
    END LOOP;
END
$$;

-- A function, view or trigger: its definition as the server prints it, replayed as is.
CREATE OR REPLACE FUNCTION pgferry_capture.definition(p_tag text, p_kind text, p_object oid)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    shape jsonb;
BEGIN
    IF p_kind = 'function' THEN
        SELECT jsonb_build_object('schema', n.nspname, 'name', p.proname,
                                  'def', pg_get_functiondef(p.oid))
        INTO shape FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.oid = p_object AND p.prokind IN ('f', 'p');
    ELSIF p_kind = 'view' THEN
        SELECT jsonb_build_object('schema', n.nspname, 'name', c.relname,
                                  'def', format('CREATE OR REPLACE VIEW %I.%I AS %s',
                                                n.nspname, c.relname, pg_get_viewdef(c.oid)))
        INTO shape FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = p_object;
    ELSIF p_kind = 'trigger' THEN
        SELECT jsonb_build_object('schema', n.nspname, 'name', t.tgname,
                                  'table', jsonb_build_object('schema', n.nspname, 'name', c.relname),
                                  'def', pg_get_triggerdef(t.oid))
        INTO shape FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE t.oid = p_object AND NOT t.tgisinternal;
    END IF;
    IF shape IS NOT NULL THEN
        PERFORM pgferry_capture.emit(p_tag, p_kind,
                                     (shape ->> 'schema') || '.' || (shape ->> 'name'),
                                     NULL, shape, NULL);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgferry_capture.on_command_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cmd record;
    rel record;
    child record;
BEGIN
    FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE NOT in_extension LOOP
        BEGIN
            -- Not carried, and said so (pgferry's own schemas aside).
            IF cmd.command_tag IN ('COMMENT', 'GRANT', 'REVOKE', 'SECURITY LABEL',
                                   'ALTER DEFAULT PRIVILEGES') THEN
                IF coalesce(cmd.schema_name, cmd.object_identity, '')
                       NOT IN ('pgferry', 'pgferry_capture', 'pg_catalog') THEN
                    PERFORM pgferry_capture.emit(cmd.command_tag, 'other',
                                                 coalesce(cmd.object_identity, ''),
                                                 NULL, NULL, NULL);
                END IF;
                CONTINUE;
            END IF;
            IF cmd.classid = 'pg_class'::regclass THEN
                SELECT c.oid, c.relkind, c.relnamespace, i.indrelid INTO rel
                FROM pg_class c LEFT JOIN pg_index i ON i.indexrelid = c.oid
                WHERE c.oid = cmd.objid;
                CONTINUE WHEN rel.oid IS NULL OR NOT pgferry_capture.carried(rel.relnamespace);
                IF rel.relkind IN ('r', 'p') THEN
                    IF cmd.command_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') THEN
                        PERFORM pgferry_capture.publish(rel.oid);
                    END IF;
                    PERFORM pgferry_capture.refresh(cmd.command_tag, 'table', rel.oid);
                    -- Attaching or detaching moves the partitions' shapes; a detached
                    -- partition is a table of its own, published by its own name.
                    FOR child IN
                        SELECT h.inhrelid AS object FROM pg_inherits h
                        WHERE rel.relkind = 'p' AND h.inhparent = rel.oid
                        UNION
                        SELECT s.object FROM pgferry_capture.shapes s
                        WHERE rel.relkind = 'p' AND (s.shape -> 'parent' ->> 'oid')::oid = rel.oid
                    LOOP
                        IF NOT EXISTS (SELECT 1 FROM pg_inherits h
                                       WHERE h.inhrelid = child.object) THEN
                            PERFORM pgferry_capture.publish(child.object);
                        END IF;
                        PERFORM pgferry_capture.refresh(cmd.command_tag, 'table', child.object);
                    END LOOP;
                ELSIF rel.relkind IN ('i', 'I') THEN
                    PERFORM pgferry_capture.refresh(cmd.command_tag, 'table', rel.indrelid);
                ELSIF rel.relkind = 'S' THEN
                    PERFORM pgferry_capture.refresh(cmd.command_tag, 'sequence', rel.oid);
                ELSIF rel.relkind = 'v' THEN
                    PERFORM pgferry_capture.definition(cmd.command_tag, 'view', rel.oid);
                ELSE
                    PERFORM pgferry_capture.emit(cmd.command_tag, 'other', cmd.object_identity,
                                                 NULL, NULL, NULL);
                END IF;
            ELSIF cmd.classid = 'pg_type'::regclass THEN
                IF EXISTS (SELECT 1 FROM pg_type t WHERE t.oid = cmd.objid AND t.typtype = 'e'
                           AND pgferry_capture.carried(t.typnamespace)) THEN
                    PERFORM pgferry_capture.refresh(cmd.command_tag, 'enum', cmd.objid);
                ELSIF EXISTS (SELECT 1 FROM pg_type t LEFT JOIN pg_class c ON c.oid = t.typrelid
                              WHERE t.oid = cmd.objid AND pgferry_capture.carried(t.typnamespace)
                                AND (c.oid IS NULL OR c.relkind = 'c')) THEN
                    -- A domain, a composite or range type: not carried, and said so.
                    PERFORM pgferry_capture.emit(cmd.command_tag, 'other', cmd.object_identity,
                                                 NULL, NULL, NULL);
                END IF;
            ELSIF cmd.classid = 'pg_proc'::regclass THEN
                IF EXISTS (SELECT 1 FROM pg_proc p WHERE p.oid = cmd.objid
                           AND pgferry_capture.carried(p.pronamespace)) THEN
                    PERFORM pgferry_capture.definition(cmd.command_tag, 'function', cmd.objid);
                END IF;
            ELSIF cmd.classid = 'pg_trigger'::regclass THEN
                PERFORM pgferry_capture.definition(cmd.command_tag, 'trigger', cmd.objid);
            ELSIF cmd.classid = 'pg_constraint'::regclass THEN
                PERFORM pgferry_capture.refresh(cmd.command_tag, 'table', k.conrelid)
                FROM pg_constraint k WHERE k.oid = cmd.objid AND k.conrelid <> 0;
            ELSIF cmd.classid = 'pg_namespace'::regclass THEN
                IF cmd.command_tag = 'CREATE SCHEMA' AND pgferry_capture.carried(cmd.objid) THEN
                    PERFORM pgferry_capture.emit(cmd.command_tag, 'schema', cmd.object_identity,
                        NULL, (SELECT jsonb_build_object('name', n.nspname)
                               FROM pg_namespace n WHERE n.oid = cmd.objid), NULL);
                END IF;
            ELSIF cmd.classid NOT IN ('pg_publication'::regclass, 'pg_publication_rel'::regclass,
                                      'pg_event_trigger'::regclass, 'pg_extension'::regclass)
                  AND coalesce(cmd.schema_name, '') NOT IN ('pgferry_capture', 'pgferry',
                                                           'pg_catalog') THEN
                PERFORM pgferry_capture.emit(cmd.command_tag, 'other',
                                             coalesce(cmd.object_identity, ''), NULL, NULL, NULL);
            END IF;
        EXCEPTION WHEN OTHERS THEN
            PERFORM pgferry_capture.failed(cmd.command_tag, cmd.object_identity, SQLERRM);
        END;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION pgferry_capture.on_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    obj record;
    kept record;
BEGIN
    FOR obj IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
        BEGIN
            CONTINUE WHEN obj.is_temporary
                OR obj.schema_name IN ('pgferry_capture', 'pgferry');
            SELECT * INTO kept FROM pgferry_capture.shapes s WHERE s.object = obj.objid;
            IF obj.object_type IN ('table', 'sequence', 'type') THEN
                DELETE FROM pgferry_capture.shapes s WHERE s.object = obj.objid;
                -- What goes with its table (its partitions, its owned sequences) goes with
                -- the table's copy on the target too.
                IF kept.object IS NOT NULL AND (obj.original OR obj.normal) THEN
                    PERFORM pgferry_capture.emit(tg_tag, kept.kind, obj.object_identity,
                                                 kept.shape, NULL, NULL);
                END IF;
            ELSIF obj.object_type = 'index' AND obj.original THEN
                -- DROP INDEX: its table's shape moved. (An index that goes with its table
                -- goes with the table's copy.)
                PERFORM pgferry_capture.refresh(tg_tag, 'table', s.object)
                FROM pgferry_capture.shapes s
                WHERE s.kind = 'table' AND s.shape -> 'indexes' @> jsonb_build_array(
                    jsonb_build_object('oid', obj.objid::bigint))
                  AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = s.object);
            ELSIF obj.object_type IN ('function', 'procedure', 'view', 'trigger')
                  AND (obj.original OR obj.normal) THEN
                PERFORM pgferry_capture.emit(tg_tag, obj.object_type, obj.object_identity,
                    jsonb_build_object('names', to_jsonb(obj.address_names),
                                       'args', to_jsonb(obj.address_args)), NULL, NULL);
            END IF;
        EXCEPTION WHEN OTHERS THEN
            PERFORM pgferry_capture.failed(tg_tag, obj.object_identity, SQLERRM);
        END;
    END LOOP;
END
$$;

-- The baseline: every carried object's shape now, so the first command has a "before".
INSERT INTO pgferry_capture.shapes
SELECT x.object, x.kind, x.shape FROM (
    SELECT c.oid AS object, 'table' AS kind, pgferry_capture.table_shape(c.oid) AS shape
    FROM pg_class c WHERE c.relkind IN ('r', 'p') AND pgferry_capture.carried(c.relnamespace)
    UNION ALL
    SELECT c.oid, 'sequence', pgferry_capture.sequence_shape(c.oid)
    FROM pg_class c WHERE c.relkind = 'S' AND pgferry_capture.carried(c.relnamespace)
    UNION ALL
    SELECT t.oid, 'enum', pgferry_capture.enum_shape(t.oid)
    FROM pg_type t WHERE t.typtype = 'e' AND pgferry_capture.carried(t.typnamespace)
) x WHERE x.shape IS NOT NULL
ON CONFLICT (object) DO NOTHING;

DROP EVENT TRIGGER IF EXISTS pgferry_capture_ddl;
CREATE EVENT TRIGGER pgferry_capture_ddl ON ddl_command_end
    EXECUTE PROCEDURE pgferry_capture.on_command_end();
DROP EVENT TRIGGER IF EXISTS pgferry_capture_drop;
CREATE EVENT TRIGGER pgferry_capture_drop ON sql_drop
    EXECUTE PROCEDURE pgferry_capture.on_drop();
