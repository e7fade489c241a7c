-- Merchant isolation: the transaction's auth context, row-level security on
-- the flint tables and on a protected application table, and key
-- management confined by scope. As a role without BYPASSRLS.
-- The shared setup: test/fixture.sql (try(), the merchants :acme and :bolt, empty key tables).
\getenv abs_srcdir PG_ABS_SRCDIR
\set fixture :abs_srcdir '/test/fixture.sql'
\i :fixture

CREATE ROLE flint_app;  -- what an application connects as: no BYPASSRLS
GRANT EXECUTE ON FUNCTION flint_verify_key(text, text, uuid), flint_check_key(text, text, uuid),
    flint_authenticate(text), flint_require_scope(text),
    flint_create_key(uuid, text, text[], timestamptz, text, jsonb), flint_list_keys(uuid, boolean),
    flint_get_key(uuid), flint_update_key(uuid, text, text[], timestamptz, jsonb),
    flint_revoke_key(uuid, text), flint_rotate_key(uuid, interval) TO flint_app;
GRANT USAGE ON SCHEMA flint TO flint_app;
GRANT SELECT ON flint.key_info, flint.key_events, flint.request_log, flint.recent_requests,
    flint.request_summary TO flint_app;
GRANT SELECT (id, merchant_id, name, mode, display_prefix, scopes, metadata, created_at, created_by, expires_at,
              revoked_at, revoked_reason, last_used_at, previous_secret_expires_at, disabled_at, disabled_reason,
              rate_limit, rate_window, remaining, refill_amount, refill_interval, allowed_ips)
    ON flint.api_keys TO flint_app;

SELECT key_id AS acme_key, secret AS acme_secret FROM flint_create_key(:acme, 'acme full',
       ARRAY['payments:write', 'keys:write', 'customers:read']) \gset
SELECT key_id AS acme_ro_key, secret AS acme_ro FROM flint_create_key(:acme, 'acme refunds only', ARRAY['refunds:read']) \gset
SELECT key_id AS acme_reader_key, secret AS acme_reader FROM flint_create_key(:acme, 'acme reader',
       ARRAY['payments:read', 'keys:read']) \gset
SELECT key_id AS bolt_key, secret AS bolt_secret FROM flint_create_key(:bolt, 'bolt full', ARRAY['payments:write']) \gset
SELECT key_id AS acme_test_key, secret AS acme_test FROM flint_create_key(:acme, 'acme test', ARRAY['keys:write', 'payments:write'], mode => 'test') \gset
-- Traffic from both merchants in the request log.
SELECT x.m = :acme AS acme, c.ok
  FROM (VALUES (:'acme_secret', :acme), (:'bolt_secret', :bolt)) AS x(s, m), LATERAL flint_check_key(x.s, 'payments:read', x.m::uuid) AS c;
SELECT flint_flush_log();

-- An application table, protected.
CREATE TABLE payments (id serial PRIMARY KEY, merchant_id uuid NOT NULL, amount integer NOT NULL);
INSERT INTO payments (merchant_id, amount) VALUES (:acme, 100), (:acme, 200), (:bolt, 999);
GRANT SELECT, INSERT, UPDATE, DELETE ON payments TO flint_app;
GRANT USAGE ON SEQUENCE payments_id_seq TO flint_app;
SELECT flint_protect_table('payments', 'merchant_id', 'payments:read', 'payments:write');
SELECT flint_protect_table('payments', 'merchant_id', 'payments:read', 'payments:write');  -- twice is harmless
SELECT polname, polcmd FROM pg_policy WHERE polrelid = 'payments'::regclass ORDER BY 1;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'payments'::regclass AND NOT tgisinternal;
SELECT indexdef FROM pg_indexes WHERE tablename = 'payments' AND indexdef LIKE '%merchant_id%';
-- bad arguments
SELECT try('SELECT flint_protect_table(''payments'', ''nope'')');
SELECT try('SELECT flint_protect_table(''payments'', ''amount'')');
SELECT try('SELECT flint_protect_table(''payments'', ''merchant_id'', ''payments:reed'')');
SELECT try('SELECT flint_protect_table(''payments'', ''merchant_id'', ''payments:*'')');
SELECT try('SELECT flint_protect_table(''flint.api_keys'')');

SET ROLE flint_app;

-- No context: nothing is visible, and the context functions say so.
SELECT flint_current_merchant(), flint_current_key(), flint_has_scope('payments:read');
SELECT (SELECT count(*) FROM payments) AS payments, (SELECT count(*) FROM flint.key_info) AS keys,
       (SELECT count(*) FROM flint.api_keys) AS api_keys, (SELECT count(*) FROM flint.key_events) AS events,
       (SELECT count(*) FROM flint.request_log) AS log;
-- ...and the hashes are not readable at all
SELECT try('SELECT secret_hash FROM flint.api_keys');
SELECT try('UPDATE flint.api_keys SET revoked_at = NULL');
SELECT try('INSERT INTO flint.merchants (name) VALUES (''mine'')');
-- writes without a context are refused with the flint code, and logged
SELECT try(format('INSERT INTO payments (merchant_id, amount) VALUES (%L, 1)', :acme));
-- management outside a context is for admins only
SELECT try(format('SELECT flint_list_keys(%L)', :acme));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'x', '{payments:read}'));

-- The context cannot be forged with SET or set_config.
SELECT try(format('SET flint.current_merchant = %L', :acme));
SELECT try(format('SELECT set_config(%L, %L, false)', 'flint.merchant_id', :acme));
SELECT flint_current_merchant() IS NULL AS still_unauthenticated;

-- Authenticated as Acme: only Acme's rows, everywhere.
BEGIN;
SELECT merchant_id = :acme AS acme, mode, scopes FROM flint_authenticate(:'acme_secret');
SELECT flint_current_merchant() = :acme AS merchant_ok, flint_current_key() = :'acme_key' AS key_ok,
       flint_has_scope('payments:read') AS read, flint_has_scope('payments:write') AS write,
       flint_has_scope('refunds:read') AS refunds;
SELECT merchant_id = :acme AS acme, amount FROM payments ORDER BY amount;
SELECT count(*) AS keys, bool_and(merchant_id = :acme) AS all_acme FROM flint.key_info;
SELECT count(*) > 0 AS some_events, bool_and(merchant_id = :acme) AS all_acme FROM flint.key_events;
SELECT bool_and(merchant_id = :acme) AS all_acme FROM flint.request_log;
INSERT INTO payments (merchant_id, amount) VALUES (:acme, 300);
UPDATE payments SET amount = amount + 1 WHERE amount = 300;
-- another merchant's rows: invisible to UPDATE/DELETE, refused on INSERT and on a move
UPDATE payments SET amount = 0 WHERE amount = 999;
SELECT try(format('INSERT INTO payments (merchant_id, amount) VALUES (%L, 5)', :bolt));
SELECT try(format('UPDATE payments SET merchant_id = %L WHERE amount = 301', :bolt));
SELECT try('INSERT INTO payments (merchant_id, amount) VALUES (NULL, 5)');
SELECT flint_require_scope('payments:write');
SELECT try('SELECT flint_require_scope(''refunds:write'')');
SELECT try('SELECT flint_require_scope(''refunds:wirte'')');
COMMIT;
-- The context ends with the transaction.
SELECT flint_current_merchant() IS NULL AS ended, (SELECT count(*) FROM payments) AS visible;

-- A key without the read scope sees no rows; without the write scope it cannot write (FK005, logged).
BEGIN;
SELECT scopes FROM flint_authenticate(:'acme_ro');
SELECT count(*) FROM payments;
SELECT try(format('INSERT INTO payments (merchant_id, amount) VALUES (%L, 7)', :acme));
ROLLBACK;
BEGIN;
SELECT scopes FROM flint_authenticate(:'acme_reader');
SELECT count(*) FROM payments;
SELECT try('UPDATE payments SET amount = 1');
SELECT try('DELETE FROM payments');
SELECT try(format('INSERT INTO payments (merchant_id, amount) VALUES (%L, 7)', :acme));
ROLLBACK;

-- Bolt sees only Bolt.
BEGIN;
SELECT merchant_id = :bolt AS bolt FROM flint_authenticate(:'bolt_secret');
SELECT merchant_id = :bolt AS bolt, amount FROM payments;
SELECT count(*) AS keys FROM flint.key_info;
ROLLBACK;

-- A failed authentication leaves no context; so does a rolled-back subtransaction.
BEGIN;
SELECT try(format('SELECT flint_authenticate(%L)', 'fk_live_nope'));
SELECT flint_current_merchant() IS NULL AS no_context;
SAVEPOINT s;
SELECT merchant_id = :acme AS acme FROM flint_authenticate(:'acme_secret');
ROLLBACK TO SAVEPOINT s;
SELECT flint_current_merchant() IS NULL AS no_context_after_rollback_to;
SAVEPOINT s2;
SELECT merchant_id = :acme AS acme FROM flint_authenticate(:'acme_secret');
RELEASE SAVEPOINT s2;
SELECT flint_current_merchant() = :acme AS kept_after_release;
ROLLBACK;
-- A revoked key cannot authenticate.
RESET ROLE;
SELECT key_id AS gone_key, secret AS gone FROM flint_create_key(:acme, 'gone', ARRAY['payments:read']) \gset
SELECT status FROM flint_revoke_key(:'gone_key');
SET ROLE flint_app;
SELECT try(format('SELECT flint_authenticate(%L)', :'gone'));

-- Key management inside a context: its own merchant only, never beyond its own scopes.
BEGIN;
SELECT scopes FROM flint_authenticate(:'acme_secret');
SELECT count(*) AS acme_keys FROM flint_list_keys(:acme);
SELECT try(format('SELECT flint_list_keys(%L)', :bolt));
SELECT try(format('SELECT flint_get_key(%L)', :'bolt_key'));
SELECT try(format('SELECT flint_revoke_key(%L)', :'bolt_key'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :bolt, 'x', '{payments:read}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'wider', '{refunds:write}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'wild', '{payments:*}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L, mode => %L)', :acme, 'test', '{payments:read}', 'test'));
SELECT try(format('SELECT flint_update_key(%L, scopes => %L)', :'acme_ro_key', '{refunds:read,payouts:read}'));
SELECT try(format('SELECT flint_rotate_key(%L)', :'acme_ro_key'));
SELECT display_prefix IS NOT NULL AS created FROM flint_create_key(:acme, 'narrower', ARRAY['payments:read']);
SELECT name, scopes FROM flint_update_key(:'acme_reader_key', scopes => ARRAY['payments:read', 'keys:read', 'keys:read']);
COMMIT;
BEGIN;
SELECT scopes FROM flint_authenticate(:'acme_reader');
SELECT count(*) AS acme_keys FROM flint_list_keys(:acme);
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'x', '{payments:read}'));
ROLLBACK;
BEGIN;
SELECT mode FROM flint_authenticate(:'acme_test');
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'live from test', '{payments:read}'));
SELECT try(format('SELECT flint_revoke_key(%L)', :'acme_key'));
SELECT left(secret, 8) AS prefix FROM flint_create_key(:acme, 'test child', ARRAY['payments:read'], mode => 'test');
ROLLBACK;
RESET ROLE;

-- The guarded writes were logged, allowed and refused alike.
SELECT flint_flush_log();
SELECT source, outcome, scope, key_id IS NOT NULL AS has_key, requested_merchant
  FROM flint.request_log WHERE source IN ('guarded_write', 'require_scope') ORDER BY at;

-- Unprotecting removes policies and trigger.
SELECT flint_unprotect_table('payments');
SELECT count(*) FROM pg_policy WHERE polrelid = 'payments'::regclass;
SELECT relrowsecurity FROM pg_class WHERE oid = 'payments'::regclass;
-- Only the owner may protect or unprotect.
CREATE TABLE others (merchant_id uuid);
CREATE ROLE flint_rls_admin BYPASSRLS;
GRANT EXECUTE ON FUNCTION flint_protect_table(regclass, name, text, text) TO flint_rls_admin;
SET ROLE flint_rls_admin;
SELECT try('SELECT flint_protect_table(''others'')');
RESET ROLE;
