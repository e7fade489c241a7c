-- Incident response and key hygiene: leak reports, reversible disable,
-- the merchant's lifetime policy, and the hygiene views.
-- The shared setup: test/fixture.sql (try(), the merchants :acme and :bolt, empty key tables).
\getenv abs_srcdir PG_ABS_SRCDIR
\set fixture :abs_srcdir '/test/fixture.sql'
\i :fixture

-- 1. A secret scanner reports tokens: current and grace secrets revoke their
-- key at once; everything else is not_a_key and reveals nothing more.
SELECT key_id AS live_key, secret AS live_secret FROM flint_create_key(:acme, 'leaky', ARRAY['payments:read']) \gset
SELECT key_id AS test_key, secret AS test_secret FROM flint_create_key(:bolt, 'leaky test', ARRAY['payments:read'], mode => 'test') \gset
SELECT key_id AS rot_key, secret AS rot_old FROM flint_create_key(:acme, 'rotated', ARRAY['payments:read']) \gset
SELECT secret AS rot_new FROM flint_rotate_key(:'rot_key', grace => '1 hour') \gset
SELECT key_id AS dead_key, secret AS dead_old FROM flint_create_key(:acme, 'rotated at once', ARRAY['payments:read']) \gset
SELECT secret AS dead_new FROM flint_rotate_key(:'dead_key') \gset
SELECT key_id AS gone_key, secret AS gone_secret FROM flint_create_key(:acme, 'already gone', ARRAY['payments:read']) \gset
SELECT status FROM flint_revoke_key(:'gone_key', 'rotated out');
SELECT (flint._mint_token('live', gen_random_uuid())).secret AS unknown_token \gset
SELECT key_id AS wrong_key, secret AS wrong_secret FROM flint_create_key(:acme, 'wrong secret', ARRAY['payments:read']) \gset
SELECT (flint._mint_token('live', :'wrong_key')).secret AS forged_token \gset

SELECT ord, display_prefix = left(t, 16) AS prefix_shown, key_id IS NOT NULL AS has_key, outcome
  FROM flint_report_leaked(ARRAY[:'live_secret', :'test_secret', :'rot_old', :'dead_old', :'gone_secret',
                                 :'unknown_token', :'forged_token', 'not a token', NULL, :'live_secret'],
                           'github:acme/app') WITH ORDINALITY AS r(display_prefix, key_id, outcome, ord)
  JOIN unnest(ARRAY[:'live_secret', :'test_secret', :'rot_old', :'dead_old', :'gone_secret',
                    :'unknown_token', :'forged_token', 'not a token', NULL, :'live_secret']) WITH ORDINALITY AS u(t, o)
    ON u.o = r.ord
 ORDER BY ord;
SELECT name, status, revoked_reason FROM flint.key_info
 WHERE key_id IN (:'live_key', :'test_key', :'rot_key', :'dead_key', :'gone_key', :'wrong_key') ORDER BY name;
SELECT k.name, e.event, e.actor = current_user AS by_caller FROM flint.key_events e JOIN flint.api_keys k ON k.id = e.key_id
 WHERE e.event = 'leaked' ORDER BY k.name;
-- the reported keys fail at once, with their rotated sibling too
SELECT code FROM flint_check_key(:'rot_new', 'payments:read', :acme);
SELECT code FROM flint_check_key(:'dead_new', 'payments:read', :acme);
-- one log row per reported token, outcome as verification names it
SELECT flint_flush_log();
SELECT outcome, count(*) FROM flint.request_log WHERE source = 'report_leaked' GROUP BY outcome ORDER BY outcome;
-- bad input: nothing revoked
SELECT try('SELECT flint_report_leaked(NULL, ''x'')');
SELECT try(format('SELECT flint_report_leaked(ARRAY[%L], NULL)', :'wrong_secret'));
SELECT try(format('SELECT flint_report_leaked(ARRAY[%L], %L)', :'wrong_secret', '  '));
SELECT try('SELECT flint_report_leaked(array_fill(''x''::text, ARRAY[10001]), ''scanner'')');
SELECT count(*) AS empty_report FROM flint_report_leaked('{}', 'scanner');
SELECT status FROM flint_get_key(:'wrong_key');
-- a batch of 10,000 garbage and forged tokens: all not_a_key
SELECT outcome, count(*) FROM flint_report_leaked(
    ARRAY(SELECT CASE WHEN i % 2 = 0 THEN (flint._mint_token('test', gen_random_uuid())).secret ELSE 'fk_live_' || md5(i::text) END
            FROM generate_series(1, 10000) AS i), 'bulk scanner') GROUP BY outcome;
-- only roles granted it may report
CREATE ROLE leak_receiver;
SET ROLE leak_receiver;
SELECT try('SELECT flint_report_leaked(ARRAY[''x''], ''s'')');
RESET ROLE;
GRANT EXECUTE ON FUNCTION flint_report_leaked(text[], text) TO leak_receiver;
SET ROLE leak_receiver;
SELECT outcome FROM flint_report_leaked(ARRAY['x'], 's');
RESET ROLE;

-- 2. Disable is reversible; revocation is final.
SELECT key_id AS d_key, secret AS d_secret FROM flint_create_key(:acme, 'pausable', ARRAY['payments:read']) \gset
SELECT status, disabled_reason FROM flint_disable_key(:'d_key', 'suspicious traffic');
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', :'d_secret', 'payments:read', :acme));
SELECT ok, code, sqlstate FROM flint_check_key(:'d_secret', 'payments:read', :acme);
SELECT try(format('SELECT flint_authenticate(%L)', :'d_secret'));
SELECT status FROM flint_disable_key(:'d_key');   -- twice: unchanged
SELECT status, disabled_at IS NULL AS cleared FROM flint_enable_key(:'d_key');
SELECT ok FROM flint_check_key(:'d_secret', 'payments:read', :acme);
SELECT status FROM flint_disable_key(:'d_key');
SELECT status FROM flint_revoke_key(:'d_key', 'confirmed compromise');
SELECT code FROM flint_check_key(:'d_secret', 'payments:read', :acme);
SELECT try(format('SELECT flint_enable_key(%L)', :'d_key'));
SELECT try(format('SELECT flint_disable_key(%L)', :'d_key'));
SELECT try('SELECT flint_disable_key(NULL)');
SELECT try(format('SELECT flint_enable_key(%L)', gen_random_uuid()));
SELECT event FROM flint.key_events WHERE key_id = :'d_key' ORDER BY id;

-- 3. max_key_lifetime: new management obeys it; older keys keep working and are listed.
SELECT key_id AS old_key, secret AS old_secret FROM flint_create_key(:bolt, 'predates policy', ARRAY['payments:read']) \gset
UPDATE flint.merchants SET max_key_lifetime = '90 days' WHERE id = :bolt;
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :bolt, 'forever', '{payments:read}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L, expires_at => now() + interval %L)', :bolt, 'too long', '{payments:read}', '91 days'));
SELECT count(*) AS within_policy FROM flint_create_key(:bolt, 'ok', ARRAY['payments:read'], expires_at => now() + interval '89 days');
SELECT try(format('SELECT flint_update_key(%L, expires_at => %L)', :'old_key', 'infinity'));
SELECT try(format('SELECT flint_rotate_key(%L)', :'old_key'));
SELECT ok FROM flint_check_key(:'old_secret', 'payments:read', :bolt);
SELECT name, max_key_lifetime FROM flint.keys_beyond_policy WHERE key_id = :'old_key';
SELECT status FROM flint_update_key(:'old_key', expires_at => now() + interval '30 days');
SELECT count(*) AS beyond_now FROM flint.keys_beyond_policy WHERE key_id = :'old_key';
SELECT count(*) AS rotates_now FROM flint_rotate_key(:'old_key');
SELECT try(format('UPDATE flint.merchants SET max_key_lifetime = %L WHERE id = %L', '-1 day', :bolt));
UPDATE flint.merchants SET max_key_lifetime = NULL WHERE id = :bolt;

-- 4. Hygiene views.
SELECT key_id AS soon_key FROM flint_create_key(:acme, 'expiring soon', ARRAY['payments:read'], expires_at => now() + interval '3 days') \gset
SELECT key_id AS idle_key FROM flint_create_key(:acme, 'idle', ARRAY['payments:read']) \gset
UPDATE flint.api_keys SET created_at = now() - interval '200 days', last_used_at = now() - interval '100 days' WHERE id = :'idle_key';
SELECT name FROM flint.expiring_keys WHERE key_id IN (:'soon_key', :'idle_key');
SELECT name FROM flint.unused_keys WHERE key_id IN (:'soon_key', :'idle_key');
