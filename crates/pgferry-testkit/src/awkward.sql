-- The awkward database: every type family with its edge values, identifiers that break
-- naive quoting, and the schema shapes that trip migration tools. pgferry's end-to-end
-- tests migrate it and compare every row.

CREATE EXTENSION hstore;
CREATE EXTENSION citext;

CREATE SCHEMA "Weird ""Schema""";
COMMENT ON SCHEMA "Weird ""Schema""" IS 'a schema whose name needs quoting';

CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'it''s complicated');
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
CREATE DOMAIN us_zip AS text CHECK (VALUE ~ '^\d{5}$');
CREATE TYPE address AS (street text, zip integer, tags text[]);
CREATE TYPE feeling AS (who text, how mood);
CREATE TYPE floatrange AS RANGE (subtype = float8, subtype_diff = float8mi);

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW."Updated At" := now();
    RETURN NEW;
END
$$;

-- Every common type family, with edge values in the rows below.
CREATE TABLE "Weird ""Schema"""."Awkward Types" (
    id bigint PRIMARY KEY,
    n numeric,
    n_fixed numeric(12, 4),
    f8 double precision,
    f4 real,
    i2 smallint,
    ts timestamp,
    tstz timestamptz,
    d date,
    t time,
    ttz timetz,
    iv interval,
    arr_int integer[],
    arr_text text[],
    arr_2d integer[][],
    e mood,
    e_arr mood[],
    dom positive_int,
    zip us_zip,
    comp address,
    comp_enum feeling,
    comp_arr address[],
    r int4range,
    tr tstzrange,
    fr floatrange,
    mr int4multirange,
    j json,
    jb jsonb,
    b bytea,
    txt text,
    ch char(5),
    vc varchar(12),
    bits bit varying(16),
    u uuid,
    ip inet,
    net cidr,
    mac macaddr,
    pt point,
    bx box,
    tsv tsvector,
    hs hstore,
    hs_arr hstore[],
    ci citext,
    flag boolean,
    cash money,
    x xml,
    "select" integer,
    "Mixed Case" text,
    "with space" text,
    "quote""col" text,
    "Updated At" timestamptz
);
COMMENT ON TABLE "Weird ""Schema"""."Awkward Types" IS 'edge values of every type family';
COMMENT ON COLUMN "Weird ""Schema"""."Awkward Types".b IS 'large values go to TOAST';

INSERT INTO "Weird ""Schema"""."Awkward Types" VALUES
(1, 'NaN', 0, 'NaN', 'NaN', 32767,
 'infinity', '-infinity', 'infinity', '24:00:00', '00:00:00+1459', '178000000 years',
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 'empty', 'empty', 'empty', '{}', 'null', 'null', ''::bytea, '', '', '', B'', NULL,
 '::1', '::/0', '00:00:00:00:00:00', '(0,0)', '(0,0),(0,0)', '', '', NULL, '', false, 0,
 '<a/>', 0, '', '', '', now()),
(2, 'Infinity', -99999999.9999, 'Infinity', '-Infinity', -32768,
 '-infinity', 'infinity', '-infinity', '00:00:00', '23:59:59.999999-1459', '-1 day -00:00:01',
 '{}', '{}', '{}', 'sad', '{}', 1, '00000',
 ROW(NULL, NULL, NULL)::address, ROW('', 'ok')::feeling, '{}',
 '[1,2)', '[-infinity,infinity]', '(,)', '{[1,3),[5,7)}',
 '[]', '{}', '\x00'::bytea, 'NULL', 'a', 'NULL', B'0', '00000000-0000-0000-0000-000000000000',
 '0.0.0.0', '0.0.0.0/0', 'ff:ff:ff:ff:ff:ff', '(-1e308,1e308)', '(1,1),(-1,-1)', 'a:1 b:2',
 'a=>NULL, "b c"=>"d\"e"', ARRAY['x=>1'::hstore, NULL], 'MiXeD', true, -92233720368547758.08,
 '<!-- c --><b>ü</b>', -1, 'Mixed', 'with space', 'quote"d', now()),
(3, '-0.000000000000000000000000000001', 12345678.1234, '-0', '1.17549435e-38', 0,
 '2000-02-29 12:34:56.789012', '1999-12-31 23:59:59.999999+14', '4713-01-01 BC', '12:00',
 '12:00+00', '1 year 2 mons 3 days 04:05:06.789',
 '{NULL,1,-2147483648,2147483647}', '{"","NULL",NULL,"a,b","c\"d","e\\f","{}"," lead"}',
 '{{1,2},{3,4}}', 'it''s complicated', '{happy,NULL,sad}', 2147483647, '99999',
 ROW('1 "Main" St, Apt\2', 12345, '{a,"b c",NULL}')::address,
 ROW('me', 'it''s complicated')::feeling,
 ARRAY[ROW('x', 1, '{}')::address, NULL, ROW(NULL, NULL, '{NULL}')::address],
 '(,5]', '["2020-01-01 00:00+00","2020-01-02 00:00+00")', '[1.5,2.5]', '{(,1),[10,)}',
 '{"a": [1, 2.5e300, null, true, "\u00e9\ud83d\ude00"], "b": {"": ""}}',
 '{"nested": {"deep": [[], {}, 1e-300]}, "dup": 2, "zero": -0.0}',
 '\xdeadbeef00ff'::bytea, E'tab\there, newline\nhere, backslash \\ and quote '' and NUL-free',
 'ab', 'x''y"z', B'1010101010101010', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
 '2001:db8::1/64', '10.0.0.0/8', '08:00:2b:01:02:03', '(1.5,-2.25)', '(3,4),(1,2)',
 'the:1 quick:2 brown:3 fox', '"k"=>"v", "ü"=>"ß"', '{}', 'Straße', NULL, 42.42,
 '<doc attr="v">text &amp; more</doc>', 7, E'\u00c5ngstr\u00f6m', 'x y', 'y"z', now()),
(4, '123456789012345678901234567890.123456789012345678901234567890', NULL, 1.7976931348623157e308,
 3.4028235e38, NULL, '1970-01-01 00:00:00', '1970-01-01 00:00:00+00', '2038-01-19', NULL, NULL,
 '0', '{{{1}},{{2}}}', ARRAY['日本語', 'עברית', 'e' || chr(769), '👩‍👩‍👧'], '{{NULL,NULL}}',
 'happy', '{}', 3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 '"just a string"', '[1, "two", {"3": [4]}]', NULL,
 repeat('unicode ✓ 漢字 🚀 ', 200), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

-- bytea and text values far above the TOAST threshold (about 2 kB), incompressible.
INSERT INTO "Weird ""Schema"""."Awkward Types" (id, b, txt, jb)
SELECT 100 + g,
       (SELECT string_agg(decode(md5(g::text || ':' || i::text), 'hex'), ''::bytea)
          FROM generate_series(1, 20000) AS i),
       (SELECT string_agg(md5(i::text || g::text), '') FROM generate_series(1, 3000) AS i),
       jsonb_build_object('blob', (SELECT string_agg(md5(i::text), '')
                                     FROM generate_series(1, 200) AS i))
FROM generate_series(1, 5) AS g;

CREATE TRIGGER "touch ""updated"" at" BEFORE UPDATE ON "Weird ""Schema"""."Awkward Types"
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Identifiers with capitals, spaces, quotes and keywords, related by foreign keys.
CREATE TABLE "Weird ""Schema"""."order" (
    "group" integer,
    "Order ID" integer,
    "user" text NOT NULL,
    PRIMARY KEY ("group", "Order ID")
);
CREATE TABLE "Weird ""Schema"""."has space ""and quotes""" (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "group" integer,
    "Order ID" integer,
    "from" text UNIQUE,
    FOREIGN KEY ("group", "Order ID") REFERENCES "Weird ""Schema"""."order" ON DELETE CASCADE
);
INSERT INTO "Weird ""Schema"""."order" SELECT g % 7, g, 'user ' || g FROM generate_series(1, 500) g;
INSERT INTO "Weird ""Schema"""."has space ""and quotes""" ("group", "Order ID", "from")
SELECT g % 7, g, 'from ' || g FROM generate_series(1, 500) g;

-- A partitioned table: rows live in the partitions, indexes and keys span them.
CREATE TABLE measurements (
    id bigint NOT NULL,
    logdate date NOT NULL,
    reading numeric(8, 3),
    PRIMARY KEY (id, logdate)
) PARTITION BY RANGE (logdate);
CREATE TABLE measurements_2024 PARTITION OF measurements
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE measurements_2025 PARTITION OF measurements
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_other PARTITION OF measurements DEFAULT;
CREATE INDEX measurements_reading ON measurements (reading);
INSERT INTO measurements
SELECT g, date '2023-06-01' + (g % 1000), (g * 7 % 10000) / 3.0 FROM generate_series(1, 3000) g;

-- No primary key, and exact duplicate rows.
CREATE TABLE no_pk (a integer, b text, c jsonb);
INSERT INTO no_pk VALUES (1, 'dup', '{"k": 1}'), (1, 'dup', '{"k": 1}'), (2, NULL, NULL),
                         (NULL, NULL, NULL), (NULL, NULL, NULL);

-- Generated columns are computed on the target, never copied.
CREATE TABLE line_items (
    id serial PRIMARY KEY,
    qty integer NOT NULL CHECK (qty > 0),
    unit_price numeric(10, 2) NOT NULL,
    total numeric(12, 2) GENERATED ALWAYS AS (qty * unit_price) STORED,
    during tstzrange,
    EXCLUDE USING gist (during WITH &&)
);
INSERT INTO line_items (qty, unit_price, during)
SELECT g, g * 1.25, tstzrange(timestamptz '2024-01-01' + g * interval '1 hour',
                              timestamptz '2024-01-01' + (g + 1) * interval '1 hour')
FROM generate_series(1, 200) g;

-- A sequence counting down, used a few times.
CREATE SEQUENCE countdown INCREMENT BY -3 MINVALUE -1000000 MAXVALUE 100 START WITH 100;
SELECT nextval('countdown') FROM generate_series(1, 5);
CREATE SEQUENCE never_used START WITH 42;

-- Inheritance (not partitioning): the parent has rows of its own.
CREATE TABLE animals (id integer PRIMARY KEY, name text);
CREATE TABLE dogs (good boolean DEFAULT true) INHERITS (animals);
INSERT INTO animals VALUES (1, 'generic');
INSERT INTO dogs VALUES (2, 'rex', true), (3, 'fido', false);

-- Unlogged tables carry data too.
CREATE UNLOGGED TABLE scratchpad (k text PRIMARY KEY, v text);
INSERT INTO scratchpad VALUES ('a', 'b');

-- A table big enough to be split into several chunks with a small chunk_size.
CREATE TABLE big (id integer PRIMARY KEY, payload text, amount numeric);
INSERT INTO big SELECT g, md5(g::text) || repeat('x', 200), g / 7.0 FROM generate_series(1, 40000) g;
CREATE INDEX big_amount ON big (amount);

-- Views and a materialized view with an index, over the migrated tables.
CREATE VIEW big_summary AS SELECT count(*) AS n, sum(amount) AS total FROM big;
CREATE MATERIALIZED VIEW measurement_days AS
    SELECT logdate, count(*) AS n FROM measurements GROUP BY logdate;
CREATE UNIQUE INDEX measurement_days_logdate ON measurement_days (logdate);
CREATE MATERIALIZED VIEW never_refreshed AS SELECT 1 AS one WITH NO DATA;

ANALYZE;
