-- The installed extension: schema, tables, seeded scope catalog, privileges.
-- pg_regress --load-extension=flint_keys ran CREATE EXTENSION flint_keys in
-- this database before any test; this file checks what it installed.

SELECT extname, extversion, extrelocatable FROM pg_extension WHERE extname = 'flint_keys';
-- (The daily request_log partitions come and go with the date: not listed.)
SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'flint' AND c.relkind IN ('r', 'p', 'v') AND c.relname !~ '^request_log_[0-9]{8}$' ORDER BY 1;
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

-- What PUBLIC may execute: only reading its own auth context (and whether its
-- own backend is writing bookkeeping, which key-event triggers ask of anyone).
SELECT p.oid::regprocedure AS public_may_execute
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'flint_keys'
 WHERE has_function_privilege('public', p.oid, 'EXECUTE') ORDER BY 1::text;

-- Nothing in schema flint is readable or writable by PUBLIC.
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'flint' AND c.relkind IN ('r', 'p', 'v')
   AND (has_table_privilege('public', c.oid, 'SELECT') OR has_table_privilege('public', c.oid, 'INSERT')
        OR has_table_privilege('public', c.oid, 'UPDATE') OR has_table_privilege('public', c.oid, 'DELETE'));
