-- The request log: exactly one row per verification, whatever the outcome,
-- surviving ROLLBACK, the verification's own error and subtransaction aborts.
-- The shared setup: test/fixture.sql (try(), the merchants :acme and :bolt, empty key tables).
\getenv abs_srcdir PG_ABS_SRCDIR
\set fixture :abs_srcdir '/test/fixture.sql'
\i :fixture

SELECT key_id AS k, secret AS s FROM flint_create_key(:acme, 'logged', ARRAY['payments:read']) \gset
SELECT flint_flush_log();
TRUNCATE flint.request_log;

SET flint.request_id = 'req-0001';
SET application_name = 'checkout-api';
SELECT flint_verify_key(:'s', 'payments:read', :acme) = :'k' AS ok;
RESET flint.request_id;
-- the failing call raises in the caller, and is logged all the same
\set VERBOSITY sqlstate
SELECT flint_verify_key(:'s', 'refunds:read', :acme);
-- a rolled-back transaction keeps its log rows
BEGIN;
SELECT flint_verify_key(:'s', 'payments:read', :bolt);
ROLLBACK;
BEGIN;
SELECT flint_verify_key(:'s', 'payments:read', :acme) = :'k' AS ok_then_rollback;
ROLLBACK;
-- a subtransaction that rolls back keeps them too
BEGIN;
SAVEPOINT a;
SELECT ok, code FROM flint_check_key(:'s', 'payments:wirte', :acme);
ROLLBACK TO SAVEPOINT a;
COMMIT;
SELECT flint_verify_key('fk_live_garbage', 'payments:read', :acme);
SELECT flint_verify_key(NULL, 'payments:read', :acme);
RESET application_name;
\set VERBOSITY default

SELECT flint_flush_log();
SELECT source, outcome, sqlstate, scope, key_id = :'k' AS key_ok, merchant_id = :acme AS merchant_ok,
       requested_merchant, display_prefix = left(:'s', 16) AS prefix_ok, request_id, application_name,
       backend_pid = pg_backend_pid() AS pid_ok, client_addr
  FROM flint.request_log ORDER BY at;

-- last_used_at follows the log stream (written by the worker, not by verify)
SELECT last_used_at IS NOT NULL AS used, last_used_at <= now() AS not_future FROM flint.api_keys WHERE id = :'k';

-- Per-key and per-outcome views for support
SELECT outcome, requests FROM flint.request_summary WHERE key_id = :'k' ORDER BY outcome;
SELECT count(*) FROM flint.recent_requests WHERE key_id = :'k';

-- One row per call, also at volume and across outcomes
TRUNCATE flint.request_log;
SELECT count(*) FILTER (WHERE c.ok) AS ok, count(*) FILTER (WHERE NOT c.ok) AS failed
  FROM generate_series(1, 500) AS i,
       LATERAL flint_check_key(:'s', CASE WHEN i % 2 = 0 THEN 'payments:read' ELSE 'payouts:read' END, :acme) AS c;
SELECT flint_flush_log();
SELECT outcome, count(*) FROM flint.request_log GROUP BY outcome ORDER BY outcome;

-- Partitions: daily, created ahead; purge drops whole old partitions
SELECT flint._maintain_request_log('2026-01-01');
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'flint.request_log'::regclass AND c.relname LIKE 'request_log_2026010%' ORDER BY 1;
-- each day: the readers' two indexes, and statistics that say a key has one merchant
SELECT indexdef FROM pg_indexes WHERE schemaname = 'flint' AND tablename = 'request_log_20260101' ORDER BY 1;
SELECT stxname, stxkind FROM pg_statistic_ext WHERE stxrelid = 'flint.request_log_20260101'::regclass;
INSERT INTO flint.request_log (at, outcome, sqlstate, backend_pid, source)
VALUES ('2026-01-01 12:00+00', 'ok', '00000', 1, 'verify'), ('2026-01-02 12:00+00', 'ok', '00000', 1, 'verify');
SELECT tableoid::regclass, count(*) FROM flint.request_log WHERE at < '2026-02-01' GROUP BY 1 ORDER BY 1;
-- purge judges by the real UTC date: the January partitions are long past
SELECT flint_purge_request_log('1 day');
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'flint.request_log'::regclass AND c.relname LIKE 'request_log_2026010%' ORDER BY 1;
SELECT count(*) FROM flint.request_log WHERE at < '2026-02-01';
SELECT try('SELECT flint_purge_request_log(NULL)');
SELECT try('SELECT flint_purge_request_log(''-1 day'')');
-- nonsense days are refused, not obeyed: infinity would drop every partition
SELECT try('SELECT flint_purge_request_log(''1 day'', today => ''infinity'')');
SELECT try('SELECT flint_purge_request_log(''1 day'', today => current_date + 30)');
SELECT try('SELECT flint_purge_request_log(''1 day'', today => NULL)');
-- maintenance with a retention creates ahead and purges behind
SELECT flint._maintain_request_log('2026-01-05');
SELECT flint._maintain_request_log((now() AT TIME ZONE 'UTC')::date, '2 days');
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'flint.request_log'::regclass AND c.relname LIKE 'request_log_202601%' ORDER BY 1;
