-- A merchant holding a valid key tries to outlive its revocation, keep a
-- leaked grace secret useful, stretch lifetimes, probe other merchants, and
-- smuggle secrets or huge values into tables. Each attempt fails clearly.
-- The shared setup: test/fixture.sql (try(), the merchants :acme and :bolt, empty key tables).
\getenv abs_srcdir PG_ABS_SRCDIR
\set fixture :abs_srcdir '/test/fixture.sql'
\i :fixture

CREATE ROLE hostile_app;
GRANT EXECUTE ON FUNCTION flint_authenticate(text), flint_require_scope(text),
    flint_create_key(uuid, text, text[], timestamptz, text, jsonb), flint_get_key(uuid),
    flint_update_key(uuid, text, text[], timestamptz, jsonb), flint_revoke_key(uuid, text),
    flint_rotate_key(uuid, interval), flint_disable_key(uuid, text) TO hostile_app;
CREATE TABLE hostile_orders (id serial PRIMARY KEY, merchant_id uuid NOT NULL, item text);
SELECT flint_protect_table('hostile_orders', read_scope => 'payments:read', write_scope => 'payments:write');
GRANT SELECT, INSERT ON hostile_orders TO hostile_app;
GRANT USAGE ON SEQUENCE hostile_orders_id_seq TO hostile_app;
INSERT INTO hostile_orders (merchant_id, item) VALUES (:acme, 'acme-1');

-- 1. A context dies with its key: expiry reached inside the transaction.
-- (The expiry is moved into the past inside the transaction, so the test
-- does not depend on how fast the server runs, under valgrind too.)
SELECT key_id AS short_key, secret AS short_secret
  FROM flint_create_key(:acme, 'short', ARRAY['keys:write', 'payments:write'], expires_at => now() + interval '1 hour') \gset
SET ROLE hostile_app;
BEGIN;
SELECT count(*) FROM flint_authenticate(:'short_secret');
SELECT flint_has_scope('payments:write') AS before_expiry;
RESET ROLE;
UPDATE flint.api_keys SET expires_at = clock_timestamp() - interval '1 second' WHERE id = :'short_key';
SET ROLE hostile_app;
SELECT try('SELECT flint_has_scope(''payments:write'')');
SELECT try('SELECT count(*) FROM hostile_orders');
SELECT try('INSERT INTO hostile_orders (merchant_id, item) VALUES (' || quote_literal(:acme) || ', ''late'')');
SELECT try('SELECT flint_require_scope(''payments:read'')');
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'minted after expiry', '{payments:read}'));
ROLLBACK;
RESET ROLE;
SELECT count(*) AS minted_after_expiry FROM flint.api_keys WHERE name = 'minted after expiry';

-- The same for a revoke made inside the transaction itself.
SELECT key_id AS self_key, secret AS self_secret FROM flint_create_key(:acme, 'self', ARRAY['keys:write', 'payments:write']) \gset
SET ROLE hostile_app;
BEGIN;
SELECT count(*) FROM flint_authenticate(:'self_secret');
SELECT status FROM flint_revoke_key(:'self_key');
SELECT try('SELECT flint_current_merchant()');
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'after self-revoke', '{payments:read}'));
ROLLBACK;
RESET ROLE;

-- 2. A pre-rotation (grace) secret verifies but cannot manage keys.
SELECT key_id AS rot_key, secret AS old_secret FROM flint_create_key(:acme, 'rotating', ARRAY['keys:write', 'payments:write']) \gset
SELECT secret AS new_secret FROM flint_rotate_key(:'rot_key', grace => '1 hour') \gset
SET ROLE hostile_app;
BEGIN;
SELECT count(*) FROM flint_authenticate(:'old_secret');
SELECT flint_has_scope('payments:write') AS grace_still_verifies;
SELECT try(format('SELECT flint_rotate_key(%L, grace => %L)', :'rot_key', '0'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'via grace', '{payments:read}'));
SELECT try(format('SELECT flint_update_key(%L, name => %L)', :'rot_key', 'renamed'));
SELECT try(format('SELECT flint_revoke_key(%L)', :'rot_key'));
ROLLBACK;
BEGIN;
SELECT count(*) FROM flint_authenticate(:'new_secret');
SELECT count(*) AS new_secret_manages FROM flint_update_key(:'rot_key', name => 'renamed');
ROLLBACK;
RESET ROLE;

-- 3. Grace is bounded by where it lands, not by the interval's parts.
SELECT try(format('SELECT flint_rotate_key(%L, grace => %L)', :'rot_key', '1200 months -35990 days'));
SELECT try(format('SELECT flint_rotate_key(%L, grace => %L)', :'rot_key', '1 month -40 days'));
SELECT try(format('SELECT flint_rotate_key(%L, grace => %L)', :'rot_key', '31 days'));
SELECT previous_secret_expires_at < now() + interval '2 hours' AS grace_unchanged FROM flint.api_keys WHERE id = :'rot_key';

-- 4. No management leaves a key living longer than the calling key.
SELECT key_id AS hour_key, secret AS hour_secret
  FROM flint_create_key(:acme, 'hour', ARRAY['keys:write', 'payments:write'], expires_at => now() + interval '1 hour') \gset
SELECT key_id AS forever_key FROM flint_create_key(:acme, 'forever', ARRAY['payments:read']) \gset
SET ROLE hostile_app;
BEGIN;
SELECT count(*) FROM flint_authenticate(:'hour_secret');
SELECT try(format('SELECT flint_update_key(%L, expires_at => %L)', :'hour_key', 'infinity'));
SELECT try(format('SELECT flint_update_key(%L, expires_at => now() + interval %L)', :'hour_key', '2 hours'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'no expiry', '{payments:read}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L, expires_at => now() + interval %L)', :acme, 'longer', '{payments:read}', '1 day'));
SELECT try(format('SELECT flint_rotate_key(%L)', :'forever_key'));
SELECT count(*) AS within_own_lifetime
  FROM flint_create_key(:acme, 'shorter', ARRAY['payments:read'], expires_at => now() + interval '30 minutes');
ROLLBACK;
RESET ROLE;
-- update may not bring an expired key back, even for an admin
SELECT key_id AS dead_key FROM flint_create_key(:acme, 'dead', ARRAY['payments:read'], expires_at => now() + interval '1 hour') \gset
UPDATE flint.api_keys SET expires_at = now() - interval '1 minute' WHERE id = :'dead_key';
SELECT try(format('SELECT flint_update_key(%L, expires_at => %L)', :'dead_key', 'infinity'));
SELECT try(format('SELECT flint_update_key(%L, expires_at => now() + interval %L)', :'dead_key', '1 day'));
SELECT status FROM flint_get_key(:'dead_key');

-- 5. Another merchant's key id looks exactly like an unknown one, in a
-- context and outside (where a non-admin is refused before any lookup).
SELECT key_id AS bolt_key FROM flint_create_key(:bolt, 'bolt', ARRAY['payments:read']) \gset
SET ROLE hostile_app;
BEGIN;
SELECT count(*) FROM flint_authenticate(:'hour_secret');
SELECT try(format('SELECT flint_get_key(%L)', :'bolt_key')) = replace(try(format('SELECT flint_get_key(%L)', '6f1c2a44-0d6e-4c3b-9f7a-2b5e8d9c1a00')), '6f1c2a44-0d6e-4c3b-9f7a-2b5e8d9c1a00', '<random uuid>') AS get_same;
SELECT try(format('SELECT flint_revoke_key(%L)', :'bolt_key'));
SELECT try(format('SELECT flint_disable_key(%L)', :'bolt_key'));
SELECT try(format('SELECT flint_update_key(%L, name => %L)', :'bolt_key', 'x'));
ROLLBACK;
SELECT try(format('SELECT flint_get_key(%L)', :'bolt_key'));
SELECT try(format('SELECT flint_get_key(%L)', gen_random_uuid()));
RESET ROLE;
SELECT revoked_at IS NULL AND disabled_at IS NULL AS bolt_untouched FROM flint.api_keys WHERE id = :'bolt_key';

-- 6. Client text never stores a secret: application_name, names, reasons, metadata.
SELECT key_id AS scrub_key, secret AS scrub_secret FROM flint_create_key(:acme, 'scrub', ARRAY['payments:read']) \gset
SELECT set_config('application_name', 'app ' || left(:'scrub_secret', 50), false) IS NOT NULL AS set;
SELECT ok FROM flint_check_key(:'scrub_secret', 'payments:read', :acme);
RESET application_name;
SELECT flint_flush_log();
SELECT position(substr(:'scrub_secret', 17, 20) IN application_name) = 0 AS app_name_scrubbed,
       application_name LIKE 'app ' || left(:'scrub_secret', 16) || '*%' AS keeps_prefix
  FROM flint.request_log WHERE key_id = :'scrub_key' ORDER BY at DESC LIMIT 1;
-- A doubled prefix ('fk_live_' || secret, cut to 63 bytes in application_name)
-- and a secret without its prefix are found by the token's body and checksum.
SET client_min_messages = warning;  -- the NOTICE that the name is cut (the client's own text)
SELECT set_config('application_name', 'fk_live_' || :'scrub_secret', false) IS NOT NULL AS set;
RESET client_min_messages;
SELECT ok FROM flint_check_key(:'scrub_secret', 'payments:read', :acme);
RESET application_name;
SELECT flint_flush_log();
SELECT position(substr(:'scrub_secret', 31, 10) IN application_name) = 0 AS doubled_prefix_scrubbed
  FROM flint.request_log WHERE key_id = :'scrub_key' ORDER BY at DESC LIMIT 1;
SELECT position(substr(:'scrub_secret', 17) IN flint._scrub('x fk_live_' || :'scrub_secret')) = 0 AS doubled_scrubbed,
       position(substr(:'scrub_secret', 17) IN flint._scrub('body ' || substr(:'scrub_secret', 9))) = 0 AS body_scrubbed;
SELECT position(substr(:'scrub_secret', 17) IN u.name || u.metadata::text || k.name || k.metadata::text) = 0 AS row_scrubbed
  FROM flint_update_key(:'scrub_key', name => 'leaked ' || :'scrub_secret',
                        metadata => jsonb_build_object('note', :'scrub_secret')) AS u
  JOIN flint.api_keys k ON k.id = u.key_id;
SELECT position(substr(:'scrub_secret', 17) IN revoked_reason) = 0 AS reason_scrubbed
  FROM flint_revoke_key(:'scrub_key', 'pasted ' || :'scrub_secret');
SELECT count(*) AS secret_in_events FROM flint.key_events WHERE position(substr(:'scrub_secret', 17) IN old::text || new::text) > 0;

-- 7. Messages show the real 16-character display prefix and nothing after it.
DO $$
DECLARE
    s text := (SELECT secret FROM flint_create_key('aaaaaaaa-0000-0000-0000-000000000001', 'msg', ARRAY['payments:read']));
BEGIN
    PERFORM flint_verify_key(s, 'refunds:read', 'aaaaaaaa-0000-0000-0000-000000000001');
EXCEPTION WHEN SQLSTATE 'FK005' THEN
    RAISE NOTICE 'shows the display prefix: %, nothing after it: %',
        SQLERRM LIKE '%key ' || left(s, 16) || '…%', position(substr(s, 17, 8) IN SQLERRM) = 0;
END
$$;

-- 8. Size limits: clear errors, nothing changed.
SELECT key_id AS big_key FROM flint_create_key(:acme, 'big', ARRAY['payments:read']) \gset
SELECT try(format('SELECT flint_revoke_key(%L, %L)', :'big_key', repeat('x', 1001)));
SELECT try(format('SELECT flint_disable_key(%L, %L)', :'big_key', repeat('x', 1001)));
SELECT try(format('SELECT flint_update_key(%L, metadata => jsonb_build_object(%L, repeat(%L, 9000)))', :'big_key', 'k', 'x'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L, metadata => jsonb_build_object(%L, repeat(%L, 100000)))', :acme, 'huge', '{payments:read}', 'k', 'x'));
SELECT try(format('SELECT flint_update_key(%L, name => %L)', :'big_key', repeat('n', 201)));
SELECT status, metadata FROM flint_get_key(:'big_key');

-- 9. Protected tables: partitioned tables and partitions are refused; test
-- keys neither see nor write live rows.
CREATE TABLE hostile_parted (merchant_id uuid NOT NULL, item text) PARTITION BY LIST (item);
CREATE TABLE hostile_parted_a PARTITION OF hostile_parted FOR VALUES IN ('a');
SELECT try('SELECT flint_protect_table(''hostile_parted'')');
SELECT try('SELECT flint_protect_table(''hostile_parted_a'')');
SELECT relrowsecurity FROM pg_class WHERE relname IN ('hostile_parted', 'hostile_parted_a') ORDER BY relname;
SELECT secret AS test_secret FROM flint_create_key(:acme, 'sandbox', ARRAY['payments:write'], mode => 'test') \gset
SET ROLE hostile_app;
BEGIN;
SELECT mode FROM flint_authenticate(:'test_secret');
SELECT count(*) AS live_rows_seen_by_test_key FROM hostile_orders;
SELECT try('INSERT INTO hostile_orders (merchant_id, item) VALUES (' || quote_literal(:acme) || ', ''test'')');
ROLLBACK;
RESET ROLE;
SELECT count(*) AS orders FROM hostile_orders;

-- The refusals made by checks (require_scope, guarded writes) left log rows.
SELECT flint_flush_log();
SELECT outcome, count(*) > 0 AS logged FROM flint.request_log
 WHERE key_id IN (:'short_key', :'self_key') AND outcome <> 'ok' GROUP BY outcome ORDER BY outcome;
