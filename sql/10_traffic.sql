-- Traffic controls: rate limits per key and per merchant, usage quotas with
-- refill and cost, IP allowlists; the check order; bad input; who may set them.
-- The shared setup: test/fixture.sql (try(), the merchants :acme and :bolt, empty key tables).
\getenv abs_srcdir PG_ABS_SRCDIR
\set fixture :abs_srcdir '/test/fixture.sql'
\i :fixture

-- 1. Rate limit: a burst of rate_limit, then rate_limited with a retry time; refused calls spend nothing.
SELECT key_id AS rk, secret AS rs FROM flint_create_key(:acme, 'rated', ARRAY['payments:read']) \gset
SELECT rate_limit, rate_window FROM flint_set_key_limits(:'rk', rate_limit => 3, rate_window => '1 hour');
SELECT code, count(*) FROM generate_series(1, 5) g,
       LATERAL flint_check_key(:'rs' || repeat('', g), 'payments:read', :acme) GROUP BY code ORDER BY code NULLS FIRST;
SELECT set_config('test.rs', :'rs', false) IS NOT NULL AS set;
DO $$
BEGIN
    PERFORM flint_verify_key(current_setting('test.rs'), 'payments:read', 'aaaaaaaa-0000-0000-0000-000000000001');
EXCEPTION WHEN SQLSTATE 'FK009' THEN
    DECLARE d text;
    BEGIN
        GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
        RAISE NOTICE 'FK009, detail "retry after N ms" with N around 20 minutes: %',
            (regexp_match(d, '^retry after (\d+) ms$'))[1]::bigint BETWEEN 1000 * 60 * 19 AND 1000 * 60 * 21;
    END;
END
$$;
-- a changed limit keeps what was spent (1.3): the 3 spent count against the
-- new 5 an hour, 2 are left; a failure before the rate check (wrong scope) consumes nothing
SELECT rate_limit IS NULL AS cleared FROM flint_clear_key_limits(:'rk', ARRAY['rate']);
SELECT rate_limit FROM flint_set_key_limits(:'rk', rate_limit => 5, rate_window => '1 hour');
SELECT code FROM flint_check_key(:'rs', 'refunds:read', :acme);
SELECT code FROM flint_check_key(:'rs', 'payments:read', :acme);
SELECT code FROM flint_check_key(:'rs', 'payments:read', :acme);
SELECT code FROM flint_check_key(:'rs', 'payments:read', :acme);

-- 2. Merchant rate limit: all of a merchant's keys together.
SELECT secret AS m1 FROM flint_create_key(:bolt, 'one', ARRAY['payments:read']) \gset
SELECT secret AS m2 FROM flint_create_key(:bolt, 'two', ARRAY['payments:read']) \gset
SELECT flint_set_merchant_limits(:bolt, 3, '1 minute');
SELECT rate_limit, rate_window FROM flint.merchants WHERE id = :bolt;
SELECT code FROM flint_check_key(:'m1', 'payments:read', :bolt);
SELECT code FROM flint_check_key(:'m2', 'payments:read', :bolt);
SELECT code FROM flint_check_key(:'m1', 'payments:read', :bolt);
SELECT code FROM flint_check_key(:'m2', 'payments:read', :bolt);
-- NULL leaves a part as it is (as for key limits); no limit at all removes it (1.2), with a NOTICE
SELECT flint_set_merchant_limits(:bolt, 10);
SELECT rate_limit, rate_window FROM flint.merchants WHERE id = :bolt;
SELECT flint_set_merchant_limits(:bolt, rate_window => '1 hour');
SELECT rate_limit, rate_window FROM flint.merchants WHERE id = :bolt;
SELECT flint_set_merchant_limits(:bolt);
SELECT code FROM flint_check_key(:'m2', 'payments:read', :bolt);
-- the explicit clear
SELECT flint_set_merchant_limits(:bolt, 3, '1 minute');
SELECT flint_clear_merchant_limits(:bolt);
SELECT rate_limit, rate_window FROM flint.merchants WHERE id = :bolt;
SELECT try(format('SELECT flint_clear_merchant_limits(%L)', gen_random_uuid()));
SELECT try('SELECT flint_clear_merchant_limits(NULL)');

-- 3. Quota: never more successes than remaining; cost weighs; cost 0 is free.
SELECT key_id AS qk, secret AS qs FROM flint_create_key(:acme, 'metered', ARRAY['payments:read']) \gset
SELECT remaining FROM flint_set_key_limits(:'qk', remaining => 10);
SELECT code, count(*) FROM generate_series(1, 6) g,
       LATERAL flint_check_key(:'qs' || repeat('', g), 'payments:read', :acme, NULL, 1) GROUP BY code ORDER BY code NULLS FIRST;
SELECT code FROM flint_check_key(:'qs', 'payments:read', :acme, NULL, 5);    -- 4 left: refused, spends nothing
SELECT code FROM flint_check_key(:'qs', 'payments:read', :acme, NULL, 4);    -- exactly what is left
SELECT code FROM flint_check_key(:'qs', 'payments:read', :acme, NULL, 1);
SELECT code FROM flint_check_key(:'qs', 'payments:read', :acme, NULL, 0);    -- a free check passes
SELECT code FROM flint_check_key(:'qs', 'payments:read', :acme);             -- the old form costs 1
SELECT try(format('SELECT flint_verify_key(%L, %L, %L, NULL, 1)', :'qs', 'payments:read', :acme));
-- an admin grants more: a new quota; the old lease is never spent
SELECT remaining FROM flint_set_key_limits(:'qk', remaining => 2);
SELECT code FROM flint_check_key(:'qs', 'payments:read', :acme);
SELECT code FROM flint_check_key(:'qs', 'payments:read', :acme);
SELECT code FROM flint_check_key(:'qs', 'payments:read', :acme);
-- refill: a period that began after the stored one refills to refill_amount
SELECT remaining, refill_amount, refill_interval FROM flint_set_key_limits(:'qk', remaining => 1, refill_amount => 3, refill_interval => 'day');
SELECT code FROM flint_check_key(:'qs', 'payments:read', :acme);
SELECT code FROM flint_check_key(:'qs', 'payments:read', :acme);
UPDATE flint.api_keys SET quota_period_start = quota_period_start - interval '1 day' WHERE id = :'qk';  -- "yesterday"
SELECT code, count(*) FROM generate_series(1, 4) g,
       LATERAL flint_check_key(:'qs' || repeat('', g), 'payments:read', :acme) GROUP BY code ORDER BY code NULLS FIRST;
-- a refill that is due survives an unrelated limit change (the period is kept)
UPDATE flint.api_keys SET quota_period_start = quota_period_start - interval '1 day' WHERE id = :'qk';
SELECT rate_limit FROM flint_set_key_limits(:'qk', rate_limit => 100, rate_window => '1 minute');
SELECT code, count(*) FROM generate_series(1, 4) g,
       LATERAL flint_check_key(:'qs' || left(g::text, 0), 'payments:read', :acme) GROUP BY code ORDER BY code NULLS FIRST;
SET TIME ZONE 'UTC';
SELECT flint._quota_period_start('day', '2026-11-28 23:59:59+00') AS day_late, flint._quota_period_start('day', '2026-11-29 00:00:01+00') AS day_early,
       flint._quota_period_start('month', '2026-11-29 00:00:01+00') AS month;
RESET TIME ZONE;

-- 4. IP allowlists: the client_ip argument, else the connection's address (none here: a Unix socket).
SELECT key_id AS ik, secret AS ips FROM flint_create_key(:acme, 'office only', ARRAY['payments:read']) \gset
SELECT allowed_ips FROM flint_set_key_limits(:'ik', allowed_ips => '{10.1.0.0/16, 2001:db8::/32}');
SELECT ip, (flint_check_key(:'ips', 'payments:read', :acme, ip)).code
  FROM unnest(ARRAY['10.1.2.3', '10.2.0.1', '2001:db8::1', '2001:db9::1', '::ffff:10.1.2.3']::inet[]) AS ip;
SELECT code FROM flint_check_key(:'ips', 'payments:read', :acme);   -- no address to check: refused
SELECT try(format('SELECT flint_verify_key(%L, %L, %L, %L)', :'ips', 'payments:read', :acme, '10.9.9.9'));
-- the order: IP before scope
SELECT code FROM flint_check_key(:'ips', 'refunds:read', :acme, '10.9.9.9');
-- authenticate takes client_ip and cost too
BEGIN;
SELECT count(*) FROM flint_authenticate(:'ips', '10.1.0.7');
ROLLBACK;
SELECT try(format('SELECT flint_authenticate(%L, %L)', :'ips', '192.0.2.1'));

-- 5. The log: every outcome, the address checked, the cost.
SELECT flint_flush_log();
SELECT outcome, client_addr, cost FROM flint.request_log WHERE key_id = :'ik' ORDER BY at, outcome;
SELECT outcome, count(*), sum(cost) FROM flint.request_log WHERE key_id = :'qk' GROUP BY outcome ORDER BY outcome;

-- 6. Bad input: clear errors, nothing changed.
SELECT try(format('SELECT flint_set_key_limits(%L, rate_limit => 0, rate_window => %L)', :'rk', '1 minute'));
SELECT try(format('SELECT flint_set_key_limits(%L, rate_limit => -5, rate_window => %L)', :'rk', '1 minute'));
SELECT try(format('SELECT flint_set_key_limits(%L, rate_limit => 5, rate_window => %L)', :'rk', '500 milliseconds'));
SELECT try(format('SELECT flint_set_key_limits(%L, rate_limit => 5, rate_window => %L)', :'rk', '2 days'));
SELECT try(format('SELECT flint_set_key_limits(%L, rate_limit => 5, rate_window => %L)', :'qk', '1 month -29 days 23 hours'));
SELECT try(format('SELECT flint_set_key_limits(%L, rate_limit => 5)', :'qk'));
SELECT try(format('SELECT flint_set_key_limits(%L, remaining => -1)', :'qk'));
SELECT try(format('SELECT flint_set_key_limits(%L, refill_amount => 5)', :'ik'));
SELECT try(format('SELECT flint_set_key_limits(%L, refill_amount => 5, refill_interval => %L)', :'ik', 'week'));
SELECT try(format('SELECT flint_set_key_limits(%L, allowed_ips => %L)', :'ik', '{}'));
SELECT try(format('SELECT flint_set_key_limits(%L, allowed_ips => ARRAY[NULL]::cidr[])', :'ik'));
SELECT try(format('SELECT flint_set_key_limits(%L, allowed_ips => %L)', :'ik', '{10.0.0.1/8}'));
SELECT try(format('SELECT flint_set_key_limits(%L, allowed_ips => %L)', :'ik', '{not-an-ip}'));
SELECT try(format('SELECT flint_clear_key_limits(%L, %L)', :'ik', '{speed}'));
SELECT try(format('SELECT flint_clear_key_limits(%L, NULL)', :'ik'));
SELECT try(format('SELECT flint_set_merchant_limits(%L, 5)', :bolt));
SELECT try(format('SELECT flint_set_merchant_limits(%L, 0, %L)', :bolt, '1 minute'));
SELECT try(format('SELECT flint_set_merchant_limits(%L, 5, %L)', gen_random_uuid(), '1 minute'));
SELECT try(format('SELECT flint_check_key(%L, %L, %L, NULL, -1)', :'qs', 'payments:read', :acme));
SELECT try(format('SELECT flint_check_key(%L, %L, %L, NULL, NULL)', :'qs', 'payments:read', :acme));
SELECT rate_limit, remaining, refill_amount, allowed_ips FROM flint.key_info WHERE key_id IN (:'rk', :'qk', :'ik') ORDER BY name;

-- 7. In a context: keys:write sets limits on keys it may manage; no key loosens its own; merchant limits are admin-only.
CREATE ROLE traffic_app;
GRANT EXECUTE ON FUNCTION flint_authenticate(text, inet, integer), flint_set_key_limits(uuid, integer, interval, bigint, bigint, text, cidr[]),
    flint_clear_key_limits(uuid, text[]), flint_set_merchant_limits(uuid, integer, interval) TO traffic_app;
SELECT key_id AS ck, secret AS cs FROM flint_create_key(:acme, 'manager', ARRAY['keys:write', 'payments:read']) \gset
SELECT rate_limit FROM flint_set_key_limits(:'ck', rate_limit => 100, rate_window => '1 minute', remaining => 1000, allowed_ips => '{0.0.0.0/0}');
SELECT key_id AS other FROM flint_create_key(:acme, 'managed', ARRAY['payments:read']) \gset
SET ROLE traffic_app;
BEGIN;
SELECT count(*) FROM flint_authenticate(:'cs', '10.0.0.1', 0);
SELECT rate_limit FROM flint_set_key_limits(:'other', rate_limit => 5, rate_window => '1 minute');
SELECT rate_limit FROM flint_set_key_limits(:'ck', rate_limit => 50);                         -- tighter: fine
SELECT try(format('SELECT flint_set_key_limits(%L, rate_limit => 500)', :'ck'));
SELECT try(format('SELECT flint_set_key_limits(%L, rate_window => %L)', :'ck', '1 second'));
SELECT try(format('SELECT flint_set_key_limits(%L, remaining => 5000)', :'ck'));
SELECT try(format('SELECT flint_set_key_limits(%L, allowed_ips => %L)', :'ck', '{::/0}'));
SELECT try(format('SELECT flint_clear_key_limits(%L)', :'ck'));
SELECT try(format('SELECT flint_set_merchant_limits(%L, 5, %L)', :acme, '1 minute'));
ROLLBACK;
RESET ROLE;
SET ROLE traffic_app;
SELECT try(format('SELECT flint_set_merchant_limits(%L, 5, %L)', :acme, '1 minute'));
RESET ROLE;

-- 8. (1.3) flint_rate_limit_state: this server's buckets, read without taking.
SELECT key_id AS sk, secret AS ss FROM flint_create_key(:acme, 'state', ARRAY['payments:read']) \gset
SELECT rate_limit FROM flint_set_key_limits(:'sk', rate_limit => 5, rate_window => '1 hour');
SELECT flint_set_merchant_limits(:acme, 1000, '1 hour');
SELECT applies_to, rate_limit, rate_window, tokens, full_at <= clock_timestamp() AS full FROM flint_rate_limit_state(:'sk');
SELECT count(*) FROM generate_series(1, 3) g, LATERAL flint_check_key(:'ss' || repeat('', g), 'payments:read', :acme);
SELECT applies_to, tokens, full_at > clock_timestamp() + interval '35 minutes' AS full_in_about_36_min
  FROM flint_rate_limit_state(:'sk');
SELECT tokens FROM flint_rate_limit_state(:'sk') WHERE applies_to = 'key';  -- reading took nothing
SELECT applies_to AS a_key_without_its_own_limit FROM flint_rate_limit_state(:'other');
SELECT flint_clear_merchant_limits(:acme);
-- in a context: its own merchant's keys only; PUBLIC has no EXECUTE
GRANT EXECUTE ON FUNCTION flint_rate_limit_state(uuid) TO traffic_app;
SELECT key_id AS bk FROM flint_create_key(:bolt, 'bolt rated', ARRAY['payments:read']) \gset
SELECT rate_limit FROM flint_set_key_limits(:'bk', rate_limit => 5, rate_window => '1 hour');
SET ROLE traffic_app;
BEGIN;
SELECT count(*) FROM flint_authenticate(:'cs', '10.0.0.1', 0);
SELECT applies_to, tokens FROM flint_rate_limit_state(:'sk');
SELECT count(*) AS another_merchants_key FROM flint_rate_limit_state(:'bk');
ROLLBACK;
RESET ROLE;
SELECT has_function_privilege('public', 'flint_rate_limit_state(uuid)', 'EXECUTE') AS public_may_call,
       has_function_privilege('public', 'flint._rate_bucket(uuid, boolean, integer, interval)', 'EXECUTE') AS public_may_read_buckets;
