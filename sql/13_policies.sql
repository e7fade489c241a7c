-- Policies that hold inside a merchant and numbers that are true (1.3): a
-- changed rate limit keeps what was spent, key_info.remaining counts leased
-- units as unspent, and a disable is undone only by a caller at least as
-- privileged as the one who disabled the key.
-- The shared setup: test/fixture.sql (try(), the merchants :acme and :bolt, empty key tables).
\getenv abs_srcdir PG_ABS_SRCDIR
\set fixture :abs_srcdir '/test/fixture.sql'
\i :fixture

-- 1. Changing a limit's window or size never hands out a fresh bucket.
SELECT key_id AS rk, secret AS rs FROM flint_create_key(:acme, 'limited', ARRAY['payments:read', 'keys:write']) \gset
SELECT rate_limit FROM flint_set_key_limits(:'rk', rate_limit => 3, rate_window => '1 minute');
SELECT code, count(*) FROM generate_series(1, 4) g,
       LATERAL flint_check_key(:'rs' || repeat('', g), 'payments:read', :acme) GROUP BY code ORDER BY code NULLS FIRST;
SELECT rate_window FROM flint_set_key_limits(:'rk', rate_window => '59 seconds');
SELECT code FROM flint_check_key(:'rs', 'payments:read', :acme);
SELECT rate_window FROM flint_set_key_limits(:'rk', rate_window => '1 minute');
SELECT code FROM flint_check_key(:'rs', 'payments:read', :acme);
-- a key of the merchant, in its context, may tighten the window: still nothing left
SELECT secret AS ms FROM flint_create_key(:acme, 'manager', ARRAY['payments:read', 'keys:write']) \gset
BEGIN;
SELECT count(*) FROM flint_authenticate(:'ms');
SELECT rate_window FROM flint_set_key_limits(:'rk', rate_window => '2 minutes');
COMMIT;
SELECT code FROM flint_check_key(:'rs', 'payments:read', :acme);
-- a larger limit: what was spent counts against it
SELECT rate_limit FROM flint_set_key_limits(:'rk', rate_limit => 5, rate_window => '2 minutes');
SELECT code, count(*) FROM generate_series(1, 3) g,
       LATERAL flint_check_key(:'rs' || repeat('', g), 'payments:read', :acme) GROUP BY code ORDER BY code NULLS FIRST;

-- 2. key_info.remaining: units leased to this server but not spent are not spent.
SELECT key_id AS qk, secret AS qs FROM flint_create_key(:acme, 'metered', ARRAY['payments:read']) \gset
SELECT remaining FROM flint_set_key_limits(:'qk', remaining => 5);
SELECT code, count(*) FROM generate_series(1, 2) g,
       LATERAL flint_check_key(:'qs' || repeat('', g), 'payments:read', :acme) GROUP BY code ORDER BY code NULLS FIRST;
SELECT flint_flush_log();
SELECT remaining AS key_info_remaining FROM flint.key_info WHERE key_id = :'qk';
SELECT remaining AS stored_remaining FROM flint.api_keys WHERE id = :'qk';  -- the lease took them from the table
SELECT remaining FROM flint_get_key(:'qk');
SELECT code FROM flint_check_key(:'qs', 'payments:read', :acme, NULL, 3);
SELECT remaining FROM flint_get_key(:'qk');
SELECT code FROM flint_check_key(:'qs', 'payments:read', :acme);
SELECT remaining FROM flint_get_key(:'qk');
-- a new quota: the old lease is void and shows nowhere
SELECT remaining FROM flint_set_key_limits(:'qk', remaining => 7);
SELECT remaining FROM flint_get_key(:'qk');

-- 3. Enable only by a caller at least as privileged as the disabler.
SELECT key_id AS target, secret AS ts FROM flint_create_key(:acme, 'target', ARRAY['payments:read']) \gset
SELECT key_id AS boss, secret AS bs FROM flint_create_key(:acme, 'boss', ARRAY['keys:write', 'payments:read', 'refunds:write']) \gset
SELECT key_id AS clerk, secret AS cs FROM flint_create_key(:acme, 'clerk', ARRAY['keys:write', 'payments:read']) \gset
-- an admin's disable (fraud): no context may undo it
SELECT status FROM flint_disable_key(:'target', 'fraud');
BEGIN;
SELECT count(*) FROM flint_authenticate(:'bs');
SELECT try(format('SELECT flint_enable_key(%L)', :'target'));
ROLLBACK;
SELECT code FROM flint_check_key(:'ts', 'payments:read', :acme);
SELECT status FROM flint_enable_key(:'target');                    -- the admin may
-- a context key's disable: undone by a key holding its scopes, not by one with fewer
BEGIN;
SELECT count(*) FROM flint_authenticate(:'bs');
SELECT status FROM flint_disable_key(:'target', 'boss says');
COMMIT;
SELECT disabled_by_scopes FROM flint.api_keys WHERE id = :'target';
BEGIN;
SELECT count(*) FROM flint_authenticate(:'cs');
SELECT try(format('SELECT flint_enable_key(%L)', :'target'));
ROLLBACK;
BEGIN;
SELECT count(*) FROM flint_authenticate(:'bs');
SELECT try(format('SELECT flint_enable_key(%L)', :'target'));
COMMIT;
SELECT code FROM flint_check_key(:'ts', 'payments:read', :acme);
-- a context's disable that an admin repeats becomes the admin's
BEGIN;
SELECT count(*) FROM flint_authenticate(:'cs');
SELECT status FROM flint_disable_key(:'target');
COMMIT;
SELECT status FROM flint_disable_key(:'target', 'admin takes over');
SELECT disabled_by_scopes IS NULL AS by_admin, disabled_reason FROM flint.api_keys WHERE id = :'target';
BEGIN;
SELECT count(*) FROM flint_authenticate(:'bs');
SELECT try(format('SELECT flint_enable_key(%L)', :'target'));
ROLLBACK;
SELECT event FROM flint.key_events WHERE key_id = :'target' AND event IN ('disabled', 'enabled') ORDER BY id;

-- 4. Limits an admin set hold inside the merchant: a key made in a context
-- inherits its maker's rate limit and allowlist, and no context makes any
-- key's limits looser than its own.
SELECT key_id AS pk, secret AS ps FROM flint_create_key(:acme, 'parent', ARRAY['keys:write', 'payments:read']) \gset
SELECT rate_limit, allowed_ips FROM flint_set_key_limits(:'pk', rate_limit => 100, rate_window => '1 minute',
                                                          allowed_ips => '{10.0.0.0/8}');
BEGIN;
SELECT count(*) FROM flint_authenticate(:'ps', '10.1.1.1');
SELECT key_id AS ck, secret AS cs2 FROM flint_create_key(:acme, 'child', ARRAY['payments:read']) \gset
SELECT rate_limit, rate_window, allowed_ips FROM flint.key_info WHERE key_id = :'ck';
SELECT try(format('SELECT flint_clear_key_limits(%L)', :'ck'));
SELECT try(format('SELECT flint_set_key_limits(%L, allowed_ips => %L)', :'ck', '{0.0.0.0/0}'));
SELECT try(format('SELECT flint_set_key_limits(%L, rate_limit => 1000)', :'ck'));
SELECT try(format('SELECT flint_clear_key_limits(%L)', :'pk'));
SELECT rate_limit, allowed_ips FROM flint_set_key_limits(:'ck', rate_limit => 2, allowed_ips => '{10.1.0.0/16}');
COMMIT;
SELECT code FROM flint_check_key(:'cs2', 'payments:read', :acme, '192.168.1.1', 1);
SELECT code FROM flint_check_key(:'cs2', 'payments:read', :acme, '10.1.2.3', 1);
-- a key with a quota makes no keys: they would not count against it
SELECT key_id AS qpk, secret AS qps FROM flint_create_key(:acme, 'metered parent', ARRAY['keys:write', 'payments:read']) \gset
SELECT remaining FROM flint_set_key_limits(:'qpk', remaining => 100);
BEGIN;
SELECT count(*) FROM flint_authenticate(:'qps');
SELECT try(format('SELECT key_id FROM flint_create_key(%L, %L, %L)', :acme, 'escape', '{payments:read}'));
ROLLBACK;
-- an admin is bound by nothing here
SELECT rate_limit IS NULL AS cleared FROM flint_clear_key_limits(:'ck');

-- 5. A leak report is not a use: its own source and outcome, and last_used_at stays.
SELECT key_id AS lk, secret AS ls FROM flint_create_key(:acme, 'never used', ARRAY['payments:read']) \gset
SELECT outcome FROM flint_report_leaked(ARRAY[:'ls'], 'pastebin');
SELECT flint_flush_log();
SELECT source, outcome, sqlstate FROM flint.request_log WHERE key_id = :'lk';
SELECT last_used_at IS NULL AS never_used, status FROM flint.key_info WHERE key_id = :'lk';
SELECT total > 0 AS counted FROM flint.verification_counts WHERE outcome = 'leak_reported';

-- 6. An unknown key id costs an uncached lookup the same page reads as an existing one
--    (the timing itself is measured by test/bench/run.sh, section 9): each reads a
--    merchant row, for an unknown id the merchant of a real key it decodes instead.
SELECT key_id AS tk FROM flint_create_key(:bolt, 'probed', ARRAY['payments:read']) \gset
CREATE TEMP TABLE probes AS
SELECT 'unknown' AS kind, (flint._mint_token('live', gen_random_uuid())).secret AS tok FROM generate_series(1, 20)
UNION ALL
SELECT 'another merchant''s', (flint._mint_token('live', :'tk')).secret FROM generate_series(1, 20);
-- Pending statistics reach shared memory when the backend goes idle after a
-- forced flush: one statement to flush, the next to read.
CREATE FUNCTION pg_temp.merchant_reads() RETURNS bigint LANGUAGE sql AS $$
    SELECT pg_stat_clear_snapshot();
    SELECT heap_blks_hit + heap_blks_read FROM pg_statio_all_tables WHERE relid = 'flint.merchants'::regclass $$;
SET flint.key_cache = off;
SELECT pg_stat_force_next_flush() \gset
SELECT pg_temp.merchant_reads() AS before \gset
SELECT count(*) FROM probes, LATERAL flint_check_key(tok, 'payments:read', :acme) c WHERE kind = 'unknown' AND NOT c.ok;
SELECT pg_stat_force_next_flush() \gset
SELECT pg_temp.merchant_reads() AS after_unknown \gset
SELECT count(*) FROM probes, LATERAL flint_check_key(tok, 'payments:read', :acme) c WHERE kind <> 'unknown' AND NOT c.ok;
SELECT pg_stat_force_next_flush() \gset
SELECT pg_temp.merchant_reads() AS after_known \gset
SELECT :after_unknown - :before AS merchant_reads_for_20_unknown_ids, :after_known - :after_unknown AS for_20_existing_ids;
RESET flint.key_cache;
