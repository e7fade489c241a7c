-- 1.3: roles (named scope bundles of one merchant) and usage rollups. Roles
-- widen a key's effective scopes at the next verification, never beyond
-- what the calling key holds; rollups sum exactly the request log.
-- The shared setup: test/fixture.sql (try(), the merchants :acme and :bolt, empty key tables).
\getenv abs_srcdir PG_ABS_SRCDIR
\set fixture :abs_srcdir '/test/fixture.sql'
\i :fixture

-- 1. Creating roles: names 1-100 characters, unique per merchant, scopes from the catalog.
SELECT flint_create_role(:acme, 'checkout', ARRAY['payments:write', 'refunds:read']) AS checkout \gset
SELECT name, scopes, merchant_id = :acme AS acme FROM flint.roles;
SELECT try($$SELECT flint_create_role('aaaaaaaa-0000-0000-0000-000000000001', 'checkout', ARRAY['refunds:read'])$$);
SELECT try($$SELECT flint_create_role('bbbbbbbb-0000-0000-0000-000000000002', 'checkout', ARRAY['refunds:read'])$$); -- another merchant: fine
SELECT try($$SELECT flint_create_role('aaaaaaaa-0000-0000-0000-000000000001', '', ARRAY['refunds:read'])$$);
SELECT try(format('SELECT flint_create_role(%L, %L, ARRAY[''refunds:read''])', :acme, repeat('r', 101)));
SELECT try(format('SELECT flint_create_role(%L, %L, ARRAY[''refunds:read''])', :acme, repeat('r', 100)));
SELECT try($$SELECT flint_create_role('aaaaaaaa-0000-0000-0000-000000000001', 'typo', ARRAY['refunds:reed'])$$);
SELECT try($$SELECT flint_create_role('aaaaaaaa-0000-0000-0000-000000000001', NULL, ARRAY['refunds:read'])$$);
SELECT try($$SELECT flint_create_role('cccccccc-0000-0000-0000-000000000003', 'nobody', ARRAY['refunds:read'])$$);

-- 2. A key's effective scopes are its own and its roles', from the next call on.
SELECT key_id AS k, secret AS s FROM flint_create_key(:acme, 'checkout server 1', ARRAY['customers:read']) \gset
SELECT code FROM flint_check_key(:'s', 'payments:write', :acme);
SELECT scopes, roles, effective_scopes FROM flint_grant_role(:'k', 'checkout');
SELECT code FROM flint_check_key(:'s', 'payments:write', :acme);
SELECT code FROM flint_check_key(:'s', 'payments:read', :acme);    -- write implies read
SELECT code FROM flint_check_key(:'s', 'customers:read', :acme);   -- its own scope stays
SELECT scopes FROM flint_authenticate(:'s');                        -- the context holds the effective scopes
-- granting twice is one grant, one event
SELECT roles FROM flint_grant_role(:'k', 'checkout');
-- 3. Changing a role changes every key holding it, at its next call.
SELECT key_id AS k2, secret AS s2 FROM flint_create_key(:acme, 'checkout server 2', ARRAY['customers:read']) \gset
SELECT roles FROM flint_grant_role(:'k2', 'checkout');
SELECT code FROM flint_check_key(:'s2', 'payments:write', :acme);
SELECT flint_update_role(:'checkout', ARRAY['payments:read']);
SELECT code FROM flint_check_key(:'s', 'payments:write', :acme);
SELECT code FROM flint_check_key(:'s2', 'payments:write', :acme);
SELECT code FROM flint_check_key(:'s2', 'payments:read', :acme);
SELECT effective_scopes FROM flint.key_info WHERE key_id = :'k2';
SELECT flint_update_role(:'checkout', ARRAY['payments:read']);      -- the same scopes: no event
SELECT try($$SELECT flint_update_role('00000000-0000-0000-0000-000000000000', ARRAY['payments:read'])$$);
SELECT try(format('SELECT flint_update_role(%L, ARRAY[''payments:rread''])', :'checkout'));
-- 4. Revoking a role, and roles of another merchant or unknown: the same no_data_found.
SELECT roles, effective_scopes FROM flint_revoke_role(:'k2', 'checkout');
SELECT code FROM flint_check_key(:'s2', 'payments:read', :acme);
SELECT roles FROM flint_revoke_role(:'k2', 'checkout');             -- not held: nothing to do
SELECT try(format('SELECT flint_grant_role(%L, %L)', :'k', 'no such role'));
SELECT flint_create_role(:bolt, 'bolt only', ARRAY['payments:write']) AS bolt_role \gset
SELECT try(format('SELECT flint_grant_role(%L, %L)', :'k', 'bolt only'));
-- 5. Dropping a held role is refused with the holders' count; a revoked key holds nothing.
SELECT roles FROM flint_grant_role(:'k2', 'checkout');
SELECT try(format('SELECT flint_drop_role(%L)', :'checkout'));
SELECT status FROM flint_revoke_key(:'k2', 'decommissioned');
SELECT try(format('SELECT flint_grant_role(%L, %L)', :'k2', 'checkout'));
SELECT try(format('SELECT flint_drop_role(%L)', :'checkout'));
SELECT roles FROM flint_revoke_role(:'k', 'checkout');
SELECT try(format('SELECT flint_drop_role(%L)', :'checkout'));
SELECT count(*) FROM flint.roles WHERE id = :'checkout';
SELECT try(format('SELECT flint_drop_role(%L)', :'checkout'));
-- 6. The audit trail: one event per grant, revocation and change; the role named in its data.
SELECT event, key_id = :'k' AS first_key, key_id = :'k2' AS second_key, new ->> 'role' AS role, new -> 'scopes' AS scopes
  FROM flint.key_events WHERE event LIKE 'role%' ORDER BY id;

-- 7. In a context: keys:write, the context's merchant only, and never a scope the key lacks.
SELECT key_id AS admin_key, secret AS admin FROM flint_create_key(:acme, 'acme key admin',
       ARRAY['keys:write', 'payments:read', 'logs:read']) \gset
SELECT key_id AS reader_key, secret AS reader FROM flint_create_key(:acme, 'acme reader', ARRAY['keys:read']) \gset
SELECT key_id AS wide_key FROM flint_create_key(:acme, 'acme wide', ARRAY['payments:read']) \gset
SELECT flint_create_role(:acme, 'refunder', ARRAY['refunds:write']) AS refunder \gset
SELECT roles FROM flint_grant_role(:'wide_key', 'refunder');
BEGIN;
SELECT key_id = :'admin_key' AS admin FROM flint_authenticate(:'admin');
SELECT try($$SELECT flint_create_role('aaaaaaaa-0000-0000-0000-000000000001', 'escalate', ARRAY['refunds:write'])$$);
SELECT try($$SELECT flint_create_role('bbbbbbbb-0000-0000-0000-000000000002', 'other', ARRAY['payments:read'])$$);
SELECT try($$SELECT flint_create_role('aaaaaaaa-0000-0000-0000-000000000001', 'readers', ARRAY['payments:read'])$$);
SELECT try(format('SELECT flint_grant_role(%L, %L)', :'reader_key', 'refunder'));     -- lacks refunds:write
SELECT try(format('SELECT flint_update_role(%L, ARRAY[''payments:read''])', :'refunder')); -- a role it could not create
SELECT try(format('SELECT flint_update_role(%L, ARRAY[''payments:read''])', :'bolt_role')); -- another merchant's
SELECT try(format('SELECT flint_rotate_key(%L)', :'wide_key'));  -- the key's role holds more than the caller
SELECT try(format('SELECT flint_grant_role(%L, %L)', :'reader_key', 'readers'));
ROLLBACK;
BEGIN;
SELECT key_id = :'reader_key' AS reader FROM flint_authenticate(:'reader');
SELECT try($$SELECT flint_create_role('aaaaaaaa-0000-0000-0000-000000000001', 'x', ARRAY['keys:read'])$$); -- needs keys:write
ROLLBACK;

-- 8. Usage rollups: after a flush, flint_usage sums exactly the request-log rows.
SELECT key_id AS u, secret AS us FROM flint_create_key(:acme, 'usage', ARRAY['payments:read']) \gset
SELECT count(*) FROM generate_series(1, 7) g, LATERAL flint_check_key(:'us' || repeat('', g), 'payments:read', :acme);
SELECT count(*) FROM generate_series(1, 3) g, LATERAL flint_check_key(:'us' || repeat('', g), 'refunds:read', :acme);
SELECT count(*) FROM flint_verify_key(:'us', 'payments:read', :acme, NULL, 5);
SELECT code FROM flint_check_key('not a key', 'payments:read', :acme);
SELECT flint_flush_log();
SELECT outcome, requests, cost FROM flint_usage(:acme, now() - interval '1 hour', now() + interval '1 hour', 'hour', :'u');
-- the same window, each bucket size, against the log itself
SELECT b AS bucket,
       (SELECT sum(requests) FROM flint_usage(:acme, now() - interval '1 day', now() + interval '1 minute', b)) AS usage,
       (SELECT count(*) FROM flint.request_log WHERE merchant_id = :acme) AS log
  FROM unnest(ARRAY['minute', 'hour', 'day']) AS b;
-- So far (this minute) from the log; the worker's roll-up of the minute,
-- forced here, moves the sums into flint.usage.
SELECT flint._roll_up_usage(date_trunc('minute', now()) + interval '2 minutes') IS NOT NULL AS rolled_up;
SELECT (SELECT sum(requests) FROM flint.usage) = (SELECT count(*) FROM flint.request_log) AS all_rows_counted,
       (SELECT sum(cost) FROM flint.usage) = (SELECT sum(cost) FROM flint.request_log) AS all_cost_counted;
SELECT requests FROM flint.usage WHERE merchant_id IS NULL AND key_id IS NULL AND outcome = 'malformed_key';
SELECT outcome, requests, cost FROM flint_usage(:acme, now() - interval '1 hour', now() + interval '1 hour', 'hour', :'u');
-- A window that cuts a minute counts exactly the log rows inside it ([since, until)),
-- though the minute's rows are rolled up as one.
SELECT at AS cut FROM flint.request_log WHERE merchant_id = :acme ORDER BY at OFFSET 4 LIMIT 1 \gset
SELECT w, (SELECT coalesce(sum(requests), 0) FROM flint_usage(:acme, s, e, 'minute')) =
          (SELECT count(*) FROM flint.request_log WHERE merchant_id = :acme AND at >= s AND at < e) AS exact,
          (SELECT coalesce(sum(requests), 0) FROM flint_usage(:acme, s, e, 'minute')) > 0 AS some
  FROM (VALUES ('from the cut', :'cut'::timestamptz, now() + interval '1 hour'),
               ('to the cut', now() - interval '1 hour', :'cut'::timestamptz),
               ('the cut row alone', :'cut'::timestamptz, :'cut'::timestamptz + interval '1 microsecond')) AS v(w, s, e);
SELECT flint._roll_up_usage(now() - interval '1 hour') AS not_backwards;
-- Rows logged for a time already rolled up (here: all of them now) add their groups as they are inserted.
SELECT count(*) FROM generate_series(1, 3) g, LATERAL flint_check_key(:'us' || repeat('', g), 'payments:read', :acme);
SELECT flint_flush_log();
SELECT (SELECT sum(requests) FROM flint.usage) = (SELECT count(*) FROM flint.request_log) AS late_rows_counted;
SELECT outcome, requests, cost FROM flint_usage(:acme, now() - interval '1 hour', now() + interval '1 hour', 'hour', :'u');
-- buckets start at UTC boundaries
SELECT DISTINCT bucket_start = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS utc_midnight
  FROM flint_usage(:acme, now() - interval '1 day', now() + interval '1 minute', 'day');
-- an empty window, and bad arguments
SELECT count(*) FROM flint_usage(:acme, now() - interval '2 days', now() - interval '1 day');
SELECT try($$SELECT * FROM flint_usage('aaaaaaaa-0000-0000-0000-000000000001', now(), now(), 'week')$$);
SELECT try($$SELECT * FROM flint_usage('aaaaaaaa-0000-0000-0000-000000000001', now(), now() - interval '1 hour')$$);
SELECT try($$SELECT * FROM flint_usage(NULL, now(), now())$$);
-- the purge of the raw log leaves the rollups
SELECT sum(requests) AS before FROM flint.usage \gset
DELETE FROM flint.request_log;
SELECT sum(requests) = :before AS rollups_kept FROM flint.usage;
-- and never drops a day the rollups have not summed yet
BEGIN;
CREATE TABLE flint.request_log_20200101 PARTITION OF flint.request_log
    FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-01-02 00:00+00');
UPDATE flint.usage_watermark SET rolled_up_to = '2020-01-01 12:00+00';
SELECT flint_purge_request_log('1 day') AS dropped_while_not_rolled_up;
UPDATE flint.usage_watermark SET rolled_up_to = now();
SELECT flint_purge_request_log('1 day') AS dropped_once_rolled_up;
ROLLBACK;

-- 9. Rollups under RLS: an application role sees its context's merchant only; pg_monitor the totals.
CREATE ROLE flint_usage_app;
GRANT EXECUTE ON FUNCTION flint_authenticate(text), flint_usage(uuid, timestamptz, timestamptz, text, uuid),
    flint_require_scope(text) TO flint_usage_app;
GRANT USAGE ON SCHEMA flint TO flint_usage_app;
GRANT SELECT ON flint.usage, flint.request_log, flint.key_info TO flint_usage_app;
GRANT SELECT (id, merchant_id, name, mode, display_prefix, scopes, metadata, created_at, created_by, expires_at,
              revoked_at, revoked_reason, last_used_at, previous_secret_expires_at, disabled_at, disabled_reason,
              rate_limit, rate_window, remaining, refill_amount, refill_interval, allowed_ips)
    ON flint.api_keys TO flint_usage_app;
SELECT key_id AS bk, secret AS bs FROM flint_create_key(:bolt, 'bolt usage', ARRAY['payments:read', 'logs:read']) \gset
SELECT count(*) FROM generate_series(1, 4) g, LATERAL flint_check_key(:'bs' || repeat('', g), 'payments:read', :bolt);
SELECT flint_flush_log();
-- (the mark may have passed the minute set above meanwhile: roll up past these rows)
SELECT flint._roll_up_usage(date_trunc('minute', now()) + interval '2 minutes') IS NOT NULL AS rolled_up;
SET ROLE flint_usage_app;
SELECT count(*) AS outside_a_context FROM flint.usage;
-- (one snapshot: the authenticate's own row, inserted meanwhile, stays out of the sums)
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT merchant_id = :bolt AS bolt FROM flint_authenticate(:'bs');
SELECT DISTINCT merchant_id = :bolt AS only_bolt FROM flint.usage;
SELECT sum(requests) FROM flint_usage(:bolt, now() - interval '1 hour', now() + interval '1 hour');
SELECT try($$SELECT * FROM flint_usage('aaaaaaaa-0000-0000-0000-000000000001', now() - interval '1 hour', now())$$);
-- another merchant's key's roles stay hidden, even asked for by id
SELECT flint._key_role_names(:'wide_key') AS acme_roles_seen_by_bolt,
       flint._effective_scopes(:'wide_key', '{}') AS acme_scopes_seen_by_bolt;
ROLLBACK;
BEGIN;
SELECT merchant_id = :acme AS acme FROM flint_authenticate(:'s');   -- customers:read only: no logs:read
SELECT try($$SELECT * FROM flint_usage('aaaaaaaa-0000-0000-0000-000000000001', now() - interval '1 hour', now())$$);
-- its own merchant's keys show their roles (a role granted before 1.3's GRANTs: none needed)
SELECT name, roles, effective_scopes FROM flint.key_info WHERE roles <> '{}';
ROLLBACK;
-- outside a context, a role without BYPASSRLS sees no roles
SELECT flint._key_role_names(:'wide_key') AS roles_seen_without_context;
RESET ROLE;
SET ROLE pg_monitor;
SELECT sum(requests) > 0 AS totals FROM flint.usage_totals;
SELECT try('SELECT * FROM flint.usage');
RESET ROLE;

-- 10. The rollups' own retention.
SELECT name, setting, context FROM pg_settings WHERE name = 'flint.usage_retention';
INSERT INTO flint.usage VALUES (now() - interval '500 days', :acme, :'u', 'ok', 1, 1);
SELECT flint._prune_usage('400 days');
SELECT count(*) FROM flint.usage WHERE minute < now() - interval '400 days';
