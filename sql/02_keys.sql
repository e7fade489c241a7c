-- Key management: create, list, get, update, revoke, rotate, and every bad argument.
-- The shared setup: test/fixture.sql (try(), the merchants :acme and :bolt, empty key tables).
\getenv abs_srcdir PG_ABS_SRCDIR
\set fixture :abs_srcdir '/test/fixture.sql'
\i :fixture

SELECT key_id AS k1, secret AS s1, display_prefix AS p1
  FROM flint_create_key(:acme, 'checkout server', ARRAY['refunds:read', 'payments:write', 'payments:write'],
                        metadata => '{"team": "checkout"}') \gset

-- The token shape: prefix, 61 base62 characters, display prefix = first 16.
SELECT :'s1' ~ '^fk_live_[0-9A-Za-z]{61}$' AS shape_ok, length(:'s1') AS length,
       :'p1' = left(:'s1', 16) AS prefix_ok;

-- Stored: the SHA-256 of the token (pgcrypto as oracle), never the token.
SELECT secret_hash = digest(:'s1', 'sha256') AS hash_is_sha256,
       scopes, mode, name, metadata, created_by = current_user AS created_by_me,
       expires_at IS NULL AS no_expiry, revoked_at IS NULL AS not_revoked
  FROM flint.api_keys WHERE id = :'k1';

-- Two keys never share a secret; a test-mode key has its own prefix.
SELECT key_id AS k2, secret AS s2 FROM flint_create_key(:acme, 'sandbox', ARRAY['payments:read'],
       expires_at => now() + interval '30 days', mode => 'test') \gset
SELECT :'s2' ~ '^fk_test_[0-9A-Za-z]{61}$' AS test_shape, :'s1' <> :'s2' AS distinct_secrets;

-- list and get
SELECT name, mode, scopes, status, metadata, key_id = :'k1' OR key_id = :'k2' AS known
  FROM flint_list_keys(:acme) ORDER BY name;
SELECT count(*) FROM flint_list_keys(:bolt);
SELECT name, status, display_prefix = :'p1' AS prefix_ok FROM flint_get_key(:'k1');
SELECT try(format('SELECT flint_get_key(%L)', 'cccccccc-0000-0000-0000-000000000000'));
SELECT try('SELECT flint_get_key(NULL)');

-- Bad arguments to create: each fails clearly and creates nothing.
SELECT count(*) AS keys_before FROM flint.api_keys \gset
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', 'cccccccc-0000-0000-0000-000000000000', 'x', '{payments:read}'));
SELECT try(format('SELECT flint_create_key(NULL, %L, %L)', 'x', '{payments:read}'));
SELECT try(format('SELECT flint_create_key(%L, NULL, %L)', :acme, '{payments:read}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, '', '{payments:read}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, '   ', '{payments:read}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, repeat('n', 201), '{payments:read}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'x', '{}'));
SELECT try(format('SELECT flint_create_key(%L, %L, NULL)', :acme, 'x'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'x', '{payments:read,NULL}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'x', '{payments:wirte}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'x', '{refund:read}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'x', '{nothing:close}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'x', '{payments}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'x', '{PAYMENTS:READ}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L)', :acme, 'x', '{payouts:*,bogus:*}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L, mode => %L)', :acme, 'x', '{payments:read}', 'prod'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L, mode => NULL)', :acme, 'x', '{payments:read}'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L, expires_at => now() - interval %L)', :acme, 'x', '{payments:read}', '1 second'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L, metadata => %L)', :acme, 'x', '{payments:read}', '[1,2]'));
SELECT try(format('SELECT flint_create_key(%L, %L, %L, metadata => NULL)', :acme, 'x', '{payments:read}'));
SELECT count(*) = :keys_before AS nothing_created FROM flint.api_keys;

-- A wildcard scope is accepted for a catalogued resource; 'infinity' means no expiry.
SELECT key_id AS k3 FROM flint_create_key(:bolt, 'ops', ARRAY['payouts:*'], expires_at => 'infinity') \gset
SELECT scopes, expires_at IS NULL AS no_expiry FROM flint_get_key(:'k3');

-- update: NULL leaves a field unchanged
SELECT name, scopes, metadata FROM flint_update_key(:'k1', name => 'checkout v2');
SELECT name, scopes FROM flint_update_key(:'k1', scopes => ARRAY['refunds:write', 'payments:read']);
SELECT expires_at > now() AS has_expiry FROM flint_update_key(:'k1', expires_at => now() + interval '1 day');
SELECT expires_at IS NULL AS expiry_removed FROM flint_update_key(:'k1', expires_at => 'infinity');
SELECT metadata FROM flint_update_key(:'k1', metadata => '{"team": "payments"}');
SELECT name, scopes, metadata FROM flint_update_key(:'k1');

-- Bad arguments to update change nothing.
SELECT api_keys::text AS k1_before FROM flint.api_keys WHERE id = :'k1' \gset
SELECT try(format('SELECT flint_update_key(%L, scopes => %L)', :'k1', '{}'));
SELECT try(format('SELECT flint_update_key(%L, scopes => %L)', :'k1', '{refunds:wrte}'));
SELECT try(format('SELECT flint_update_key(%L, name => %L)', :'k1', ''));
SELECT try(format('SELECT flint_update_key(%L, expires_at => now() - interval %L)', :'k1', '1 day'));
SELECT try(format('SELECT flint_update_key(%L, metadata => %L)', :'k1', '"text"'));
SELECT try(format('SELECT flint_update_key(%L, name => %L)', 'cccccccc-0000-0000-0000-000000000000', 'x'));
SELECT try('SELECT flint_update_key(NULL, name => ''x'')');
SELECT api_keys::text = :'k1_before' AS unchanged FROM flint.api_keys WHERE id = :'k1';

-- revoke: once, with a reason; a second revoke keeps the first
SELECT status, revoked_reason FROM flint_revoke_key(:'k3', 'laptop lost');
SELECT revoked_at AS first_revoked_at FROM flint.api_keys WHERE id = :'k3' \gset
SELECT status, revoked_reason, revoked_at = :'first_revoked_at' AS same_time FROM flint_revoke_key(:'k3', 'again');
SELECT try(format('SELECT flint_revoke_key(%L)', 'cccccccc-0000-0000-0000-000000000000'));
-- A revoked key can be neither changed nor rotated.
SELECT try(format('SELECT flint_update_key(%L, name => %L)', :'k3', 'y'));
SELECT try(format('SELECT flint_rotate_key(%L)', :'k3'));
-- nor its limits set or cleared
SELECT try(format('SELECT flint_set_key_limits(%L, rate_limit => 5, rate_window => %L)', :'k3', '1 minute'));
SELECT try(format('SELECT flint_clear_key_limits(%L)', :'k3'));
-- list hides revoked keys unless asked
SELECT count(*) FROM flint_list_keys(:bolt);
SELECT count(*) FROM flint_list_keys(:bolt, include_revoked => true);

-- rotate: same id, new secret; bad grace changes nothing
SELECT try(format('SELECT flint_rotate_key(%L, %L)', :'k1', '-1 hour'));
SELECT try(format('SELECT flint_rotate_key(%L, %L)', :'k1', '31 days'));
SELECT try(format('SELECT flint_rotate_key(%L, NULL)', :'k1'));
SELECT try(format('SELECT flint_rotate_key(%L)', 'cccccccc-0000-0000-0000-000000000000'));
SELECT secret_hash = digest(:'s1', 'sha256') AS still_old_secret FROM flint.api_keys WHERE id = :'k1';
SELECT key_id = :'k1' AS same_id, secret AS s1_new, secret <> :'s1' AS new_secret, display_prefix = :'p1' AS same_prefix
  FROM flint_rotate_key(:'k1', '1 hour') \gset
SELECT :'same_id', :'new_secret', :'same_prefix';
SELECT secret_hash = digest(:'s1_new', 'sha256') AS new_hash, previous_secret_hash = digest(:'s1', 'sha256') AS old_hash,
       previous_secret_expires_at BETWEEN now() + interval '59 minutes' AND now() + interval '61 minutes' AS grace_hour
  FROM flint.api_keys WHERE id = :'k1';
SELECT status, previous_secret_expires_at IS NOT NULL AS in_grace FROM flint_get_key(:'k1');

-- An expired key cannot be rotated.
SELECT key_id AS k4 FROM flint_create_key(:acme, 'short', ARRAY['logs:read'], expires_at => now() + interval '1 hour') \gset
UPDATE flint.api_keys SET expires_at = now() - interval '1 second' WHERE id = :'k4';
SELECT status FROM flint_get_key(:'k4');
SELECT try(format('SELECT flint_rotate_key(%L)', :'k4'));
