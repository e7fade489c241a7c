-- Installing the extension: schema, tables, seeded scope catalog, privileges.
CREATE EXTENSION flint_keys;
CREATE EXTENSION pgcrypto;  -- an independent SHA-256 oracle for the tests

SELECT extname, extversion, extrelocatable FROM pg_extension WHERE extname = 'flint_keys';
SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'flint' AND c.relkind IN ('r', 'p', 'v') ORDER BY 1;
SELECT name, description FROM flint.scopes ORDER BY name;

-- Tables that hold users' data are dumped by pg_dump (seeded scopes are not).
SELECT c.relname, x.cfg
  FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS x(oid, cfg)
  JOIN pg_class c ON c.oid = x.oid
 WHERE e.extname = 'flint_keys' ORDER BY 1;

-- Every SECURITY DEFINER function pins search_path.
SELECT p.oid::regprocedure AS definer_without_search_path
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'flint_keys'
 WHERE p.prosecdef AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false);

-- What PUBLIC may execute: only reading its own auth context.
SELECT p.oid::regprocedure AS public_may_execute
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'flint_keys'
 WHERE has_function_privilege('public', p.oid, 'EXECUTE') ORDER BY 1;

-- Nothing in schema flint is readable or writable by PUBLIC.
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'flint' AND c.relkind IN ('r', 'p', 'v')
   AND (has_table_privilege('public', c.oid, 'SELECT') OR has_table_privilege('public', c.oid, 'INSERT')
        OR has_table_privilege('public', c.oid, 'UPDATE') OR has_table_privilege('public', c.oid, 'DELETE'));

-- A helper for the tests: run a statement, return 'ok' or its SQLSTATE and
-- message, with the random part of display prefixes and random uuids masked.
CREATE FUNCTION public.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    hint text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
    RETURN SQLSTATE || ' ' || regexp_replace(regexp_replace(SQLERRM, 'fk_(live|test)_[0-9A-Za-z]{8}', 'fk_\1_XXXXXXXX', 'g'),
                                             '[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}', '<random uuid>', 'g')
        || CASE WHEN hint = '' THEN '' ELSE ' (hint: ' || hint || ')' END;
END
$$;

-- Two merchants used throughout.
INSERT INTO flint.merchants (id, name) VALUES
    ('aaaaaaaa-0000-0000-0000-000000000001', 'Acme Payments'),
    ('bbbbbbbb-0000-0000-0000-000000000002', 'Bolt Shop');
