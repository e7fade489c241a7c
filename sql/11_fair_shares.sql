-- 1.3: what no merchant, routine or load can do to another, as far as one
-- session shows it (the concurrent cases are TAP 018): ALWAYS triggers, the
-- settings of the fair shares and the refusal summary, every outcome
-- counted, forwarded last_used_at that bad input cannot move.
-- The shared setup: test/fixture.sql (try(), the merchants :acme and :bolt, empty key tables).
\getenv abs_srcdir PG_ABS_SRCDIR
\set fixture :abs_srcdir '/test/fixture.sql'
\i :fixture

-- 1. Cache invalidation and key events fire whatever session_replication_role is.
SELECT c.relname, t.tgname, t.tgenabled
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'flint' AND NOT t.tgisinternal ORDER BY 1, 2;
SELECT key_id AS k, secret AS s FROM flint_create_key(:acme, 'replica', ARRAY['payments:read']) \gset
SELECT flint_verify_key(:'s', 'payments:read', :acme) = :'k' AS verifies;
SET session_replication_role = replica;
SELECT status FROM flint_revoke_key(:'k', 'data fix');
RESET session_replication_role;
SELECT code FROM flint_check_key(:'s', 'payments:read', :acme);
SELECT event FROM flint.key_events WHERE key_id = :'k' ORDER BY id;

-- 2. The settings (defaults).
SELECT name, setting, context FROM pg_settings
 WHERE name IN ('flint.merchant_share', 'flint.log_refusals', 'flint.refusal_summary_interval') ORDER BY name;

-- 3. Every outcome is counted, the 1.2 refusals too.
SELECT key_id AS rk, secret AS rs FROM flint_create_key(:acme, 'counted', ARRAY['payments:read']) \gset
SELECT rate_limit FROM flint_set_key_limits(:'rk', rate_limit => 1, rate_window => '1 hour');
SELECT total AS before FROM flint.verification_counts WHERE outcome = 'rate_limited' \gset
SELECT code FROM generate_series(1, 2) g, LATERAL flint_check_key(:'rs' || repeat('', g), 'payments:read', :acme)
 ORDER BY code NULLS FIRST;
SELECT total - :before AS rate_limited_counted FROM flint.verification_counts WHERE outcome = 'rate_limited';
SELECT array_agg(outcome ORDER BY outcome) FILTER (WHERE outcome IN ('rate_limited', 'usage_exceeded', 'ip_not_allowed'))
       AS the_1_2_outcomes FROM flint.verification_counts;

-- 4. Forwarded last_used_at: arrays of different lengths are refused, NULLs skipped.
SELECT key_id AS lk FROM flint_create_key(:acme, 'forwarded', ARRAY['payments:read']) \gset
SELECT try(format('SELECT flint._receive_last_used(ARRAY[%L]::uuid[], ARRAY[]::bigint[])', :'lk'));
SELECT try(format('SELECT flint._receive_last_used(ARRAY[%L]::uuid[], NULL)', :'lk'));
SELECT flint._receive_last_used(ARRAY[:'lk']::uuid[], ARRAY[NULL]::bigint[]);
SELECT last_used_at IS NULL AS still_never_used FROM flint.api_keys WHERE id = :'lk';
SELECT flint._receive_last_used(ARRAY[:'lk']::uuid[],
       ARRAY[((extract(epoch FROM now() - interval '1 hour') - 946684800) * 1000000)::bigint]);
SELECT last_used_at BETWEEN now() - interval '61 minutes' AND now() - interval '59 minutes' AS moved_to_that_use
  FROM flint.api_keys WHERE id = :'lk';
