-- Verification: the happy path, every error code, the order of checks, and
-- malformed input of every shape.
-- The shared setup: test/fixture.sql (try(), the merchants :acme and :bolt, empty key tables).
\getenv abs_srcdir PG_ABS_SRCDIR
\set fixture :abs_srcdir '/test/fixture.sql'
\i :fixture

SELECT key_id AS k, secret AS s FROM flint_create_key(:acme, 'verify', ARRAY['payments:write', 'refunds:*']) \gset
CREATE TEMP TABLE v AS SELECT :'s'::text AS s, :'k'::uuid AS k;

-- ok: returns the key id; write implies read; the wildcard grants every action
SELECT flint_verify_key(s, 'payments:write', :acme) = k AS ok_write FROM v;
SELECT flint_verify_key(s, 'payments:read', :acme) = k AS write_implies_read FROM v;
SELECT flint_verify_key(s, 'refunds:write', :acme) = k AS wildcard_write,
       flint_verify_key(s, 'refunds:read', :acme) = k AS wildcard_read FROM v;

-- FK005 missing_scope, FK006 wrong_merchant, FK008 unknown_scope (with a suggestion)
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', s, 'customers:read', :acme)) FROM v;
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', s, 'payments:read', :bolt)) FROM v;
SELECT try(format('SELECT flint_verify_key(%L, %L, NULL)', s, 'payments:read')) FROM v;
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', s, 'payments:wirte', :acme)) FROM v;
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', s, 'payments:*', :acme)) FROM v;
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', s, 'not a scope', :acme)) FROM v;
SELECT try(format('SELECT flint_verify_key(%L, NULL, %L)', s, :acme)) FROM v;
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', s, '', :acme)) FROM v;

-- FK002 invalid_key: well-formed, but no such key / wrong secret / wrong mode
-- (a token built for a random id with a valid checksum)
CREATE FUNCTION pg_temp.forge(mode text, id uuid) RETURNS text LANGUAGE sql AS
$$ SELECT (flint._mint_token(mode, id)).secret $$;
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', pg_temp.forge('live', gen_random_uuid()), 'payments:read', :acme));
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', pg_temp.forge('live', k), 'payments:read', :acme)) FROM v;
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', pg_temp.forge('test', k), 'payments:read', :acme)) FROM v;

-- FK001 malformed_key: every shape is rejected before any table access
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', x.bad, 'payments:read', :acme)) AS result, x.label
  FROM v, LATERAL (VALUES
    (NULL, 'NULL'),
    ('', 'empty'),
    (repeat('a', 1000000), '1 MB'),
    ('fk_live_' || repeat('a', 1000000), '1 MB with prefix'),
    (left(s, 68), 'truncated by one'),
    (left(s, 20), 'truncated'),
    (s || 'x', 'extended'),
    (s || ' ', 'trailing space'),
    (' ' || s, 'leading space'),
    (s || E'\n', 'trailing newline'),
    (left(s, 67) || 'é', 'non-ASCII, same byte length'),
    (left(s, 68) || '€', 'non-ASCII'),
    (left(s, 40) || chr(43) || substr(s, 42), 'plus sign'),
    (overlay(s placing CASE WHEN substr(s, 40, 1) = 'a' THEN 'b' ELSE 'a' END from 40 for 1), 'one character flipped'),
    (overlay(s placing CASE WHEN substr(s, 69, 1) = 'a' THEN 'b' ELSE 'a' END from 69 for 1), 'checksum flipped'),
    ('fk_test_' || substr(s, 9), 'live/test swapped'),
    ('sk_live_' || substr(s, 9), 'wrong prefix'),
    ('FK_LIVE_' || substr(s, 9), 'upper-case prefix'),
    (upper(s), 'upper-cased'),
    ('fk_live_' || repeat('z', 61), 'out of range')
  ) AS x(bad, label);

-- Every single-character change at every position is caught by the checksum.
SELECT count(*) AS variants, count(*) FILTER (WHERE c.ok) AS accepted,
       count(*) FILTER (WHERE c.code = 'malformed_key') AS malformed
  FROM v, generate_series(9, 69) AS pos,
       LATERAL (SELECT overlay(s placing CASE WHEN substr(s, pos, 1) = '7' THEN '8' ELSE '7' END from pos for 1) AS t) AS m,
       LATERAL flint_check_key(m.t, 'payments:read', :acme) AS c;

-- FK007 merchant_suspended, checked before merchant and scope
UPDATE flint.merchants SET status = 'suspended' WHERE id = :acme;
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', s, 'customers:read', :bolt)) FROM v;
UPDATE flint.merchants SET status = 'active' WHERE id = :acme;
SELECT flint_verify_key(s, 'payments:read', :acme) = k AS active_again FROM v;

-- FK004 key_expired, checked before suspension
UPDATE flint.api_keys SET expires_at = now() - interval '1 second' WHERE id = :'k';
UPDATE flint.merchants SET status = 'suspended' WHERE id = :acme;
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', s, 'customers:read', :bolt)) FROM v;
UPDATE flint.merchants SET status = 'active' WHERE id = :acme;

-- FK003 key_revoked, checked before expiry
SELECT status FROM flint_revoke_key(:'k', 'test');
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', s, 'customers:read', :bolt)) FROM v;
-- ...but a wrong secret for a revoked key is still only invalid_key
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', pg_temp.forge('live', k), 'payments:read', :acme)) FROM v;

-- flint_check_key: the same checks, never raising
SELECT ok, key_id = v.k AS key_matches, code, sqlstate FROM v, flint_check_key(s, 'payments:read', :acme);
SELECT ok, key_id, code, sqlstate FROM flint_check_key(NULL, NULL, NULL);
SELECT ok, key_id IS NOT NULL AS has_key, code, sqlstate FROM flint_check_key(pg_temp.forge('live', gen_random_uuid()), 'payments:read', :acme);

-- Rotation: both secrets work during the grace, only the new one after it.
SELECT key_id AS rk, secret AS old_secret FROM flint_create_key(:bolt, 'rotating', ARRAY['payouts:read']) \gset
SELECT secret AS new_secret FROM flint_rotate_key(:'rk', '1 hour') \gset
SELECT flint_verify_key(:'old_secret', 'payouts:read', :bolt) = :'rk' AS old_in_grace,
       flint_verify_key(:'new_secret', 'payouts:read', :bolt) = :'rk' AS new_works;
UPDATE flint.api_keys SET previous_secret_expires_at = now() - interval '1 second' WHERE id = :'rk';
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', :'old_secret', 'payouts:read', :bolt));
SELECT flint_verify_key(:'new_secret', 'payouts:read', :bolt) = :'rk' AS new_still_works;
-- a zero grace ends the old secret at once
SELECT secret AS third_secret FROM flint_rotate_key(:'rk') \gset
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', :'new_secret', 'payouts:read', :bolt));
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', :'old_secret', 'payouts:read', :bolt));
SELECT flint_verify_key(:'third_secret', 'payouts:read', :bolt) = :'rk' AS third_works;

-- Changes made earlier in the same transaction are seen at once.
BEGIN;
SELECT flint_verify_key(:'third_secret', 'payouts:read', :bolt) = :'rk' AS before_revoke;
SELECT status FROM flint_revoke_key(:'rk');
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', :'third_secret', 'payouts:read', :bolt));
ROLLBACK;
SELECT flint_verify_key(:'third_secret', 'payouts:read', :bolt) = :'rk' AS revoke_rolled_back;

-- A transaction that changed keys cannot be prepared (caches could not learn of it).
BEGIN;
SELECT name FROM flint_update_key(:'rk', name => 'renamed');
PREPARE TRANSACTION 'flint';
SELECT name FROM flint_get_key(:'rk');

-- Errors name the key by display prefix and never contain the secret.
SELECT try(format('SELECT flint_verify_key(%L, %L, %L)', :'third_secret', 'payouts:write', :bolt))
       LIKE '%' || substr(:'third_secret', 17) || '%' AS message_has_secret;
