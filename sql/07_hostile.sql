-- Hostile SQL users: an unprivileged role, and an application role holding a
-- key, try to read, change or forge what is not theirs. Each attempt fails
-- clearly and changes nothing.
-- The shared setup: test/fixture.sql (try(), the merchants :acme and :bolt, empty key tables).
\getenv abs_srcdir PG_ABS_SRCDIR
\set fixture :abs_srcdir '/test/fixture.sql'
\i :fixture

CREATE ROLE mallory;            -- no grants at all
CREATE ROLE mallory_app;        -- an application role, with a key for Acme
GRANT EXECUTE ON FUNCTION flint_verify_key(text, text, uuid), flint_check_key(text, text, uuid),
    flint_authenticate(text), flint_require_scope(text),
    flint_create_key(uuid, text, text[], timestamptz, text, jsonb), flint_list_keys(uuid, boolean),
    flint_get_key(uuid), flint_update_key(uuid, text, text[], timestamptz, jsonb),
    flint_revoke_key(uuid, text), flint_rotate_key(uuid, interval) TO mallory_app;
GRANT USAGE ON SCHEMA flint TO mallory_app;
GRANT SELECT ON flint.key_info, flint.request_log, flint.key_events TO mallory_app;
GRANT SELECT (id, merchant_id, name, mode, display_prefix, scopes, metadata, created_at, created_by, expires_at,
              revoked_at, revoked_reason, last_used_at, previous_secret_expires_at, disabled_at, disabled_reason,
              rate_limit, rate_window, remaining, refill_amount, refill_interval, allowed_ips)
    ON flint.api_keys TO mallory_app;
CREATE SCHEMA evil AUTHORIZATION mallory_app;
GRANT USAGE, CREATE ON SCHEMA evil TO mallory;
SELECT key_id AS mk, secret AS ms FROM flint_create_key(:acme, 'mallory', ARRAY['keys:write', 'payments:write']) \gset
SELECT key_id AS bk FROM flint_create_key(:bolt, 'bolt target', ARRAY['payments:read']) \gset
SELECT flint_flush_log();
CREATE TEMP TABLE before AS
SELECT (SELECT md5(string_agg((k.id, k.name, k.scopes, k.secret_hash, k.revoked_at, k.expires_at, k.merchant_id)::text, ',' ORDER BY id))
          FROM flint.api_keys k) AS keys,
       (SELECT count(*) FROM flint.key_events) AS events,
       (SELECT md5(string_agg(m::text, ',' ORDER BY id)) FROM flint.merchants m) AS merchants,
       (SELECT count(*) FROM flint.scopes) AS scopes;
GRANT SELECT ON before TO PUBLIC;

-- 1. No grants: nothing is callable or readable.
SET ROLE mallory;
SELECT try(x) FROM (VALUES
    (format('SELECT flint_verify_key(%L, %L, %L)', 'fk_live_x', 'payments:read', :acme)),
    (format('SELECT flint_check_key(%L, %L, %L)', 'fk_live_x', 'payments:read', :acme)),
    ('SELECT flint_authenticate(''fk_live_x'')'),
    (format('SELECT flint_create_key(%L, %L, %L)', :acme, 'x', '{payments:read}')),
    (format('SELECT flint_list_keys(%L)', :acme)),
    (format('SELECT flint_get_key(%L)', :'mk')),
    (format('SELECT flint_update_key(%L, name => %L)', :'mk', 'x')),
    (format('SELECT flint_revoke_key(%L)', :'mk')),
    (format('SELECT flint_rotate_key(%L)', :'mk')),
    ('SELECT flint_flush_log()'),
    ('SELECT flint_log_status()'),
    ('SELECT flint_purge_request_log(''1 day'')'),
    ('SELECT flint_protect_table(''before'')'),
    ('SELECT flint_require_scope(''payments:read'')'),
    ('SELECT * FROM flint.api_keys'),
    ('SELECT * FROM flint.request_log'),
    ('SELECT * FROM flint.key_events'),
    ('SELECT * FROM flint.key_info'),
    ('UPDATE flint.api_keys SET revoked_at = NULL'),
    ('DELETE FROM flint.request_log'),
    ('TRUNCATE flint.key_events'),
    ('INSERT INTO flint.scopes VALUES (''evil:write'', ''x'')'),
    ('UPDATE flint.merchants SET status = ''active'''),
    ('SELECT (flint._mint_token(''live'', gen_random_uuid())).secret'),
    ('SELECT flint._current_scopes()'),
    (format('SELECT flint._authorize(%L, %L)', :acme, 'keys:write')),
    ('SELECT flint_guard_write()'),
    ('CREATE FUNCTION evil.ctx() RETURNS uuid AS ''flint_keys'', ''flint_current_merchant'' LANGUAGE C'),
    ('LOAD ''flint_keys'''),
    ('SET flint.merchant = ''x''')
) AS attempts(x);
RESET ROLE;

-- 2. An application role with a key, on a malicious search_path: shadow
--    pg_catalog functions and operators every SECURITY DEFINER function might use.
SET ROLE mallory_app;
CREATE TABLE evil.calls (fn text);
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO evil.calls VALUES ('now'); RETURN 'infinity'; END $$;
CREATE FUNCTION evil.sha256(bytea) RETURNS bytea LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO evil.calls VALUES ('sha256'); RETURN '\x00'; END $$;
CREATE FUNCTION evil.left(text, integer) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO evil.calls VALUES ('left:' || $1); RETURN $1; END $$;
CREATE FUNCTION evil.convert_to(text, name) RETURNS bytea LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO evil.calls VALUES ('convert_to:' || $1); RETURN '\x00'; END $$;
CREATE FUNCTION evil.format(text, text) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO evil.calls VALUES ('format'); RETURN 'x'; END $$;
CREATE FUNCTION evil.jsonb_typeof(jsonb) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO evil.calls VALUES ('jsonb_typeof'); RETURN 'object'; END $$;
CREATE FUNCTION evil.length(text) RETURNS integer LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO evil.calls VALUES ('length'); RETURN 5; END $$;
CREATE FUNCTION evil.gen_random_uuid() RETURNS uuid LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO evil.calls VALUES ('gen_random_uuid'); RETURN 'aaaaaaaa-0000-0000-0000-000000000001'; END $$;
CREATE FUNCTION evil.uuid_eq_any(uuid, uuid) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO evil.calls VALUES ('uuid ='); RETURN true; END $$;
CREATE OPERATOR evil.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = evil.uuid_eq_any);
CREATE FUNCTION evil.text_ne_any(text, text) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO evil.calls VALUES ('text <>'); RETURN false; END $$;
CREATE OPERATOR evil.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_ne_any);
-- The statements to attempt are built before the search_path turns hostile.
RESET ROLE;
SELECT format('SELECT flint_rotate_key(%L)', :'bk') AS rotate_bolt,
       format('SELECT flint_update_key(%L, name => %L)', :'bk', 'pwned') AS update_bolt,
       format('SELECT flint_create_key(%L, %L, %L)', :bolt, 'x', '{payments:read}') AS create_bolt,
       format('SELECT flint_create_key(%L, %L, %L)', :acme, 'x', '{keys:write,refunds:write}') AS create_wider,
       format('SELECT flint_create_key(%L, %L, %L, expires_at => %L)', :acme, 'x', '{payments:read}', '2000-01-01') AS create_expired \gset
SET ROLE mallory_app;
BEGIN;
SET LOCAL search_path = evil, pg_catalog, public;
SELECT count(*) FROM flint_authenticate(:'ms');
SELECT pg_catalog.left(secret, 8) AS created FROM flint_create_key(:acme, 'minted', ARRAY['payments:read']);
SELECT count(*) AS own_keys FROM flint_list_keys(:acme);
SELECT status FROM flint_revoke_key((SELECT key_id FROM flint_list_keys(:acme) WHERE name = 'minted'));
SELECT try(:'rotate_bolt');
SELECT try(:'update_bolt');
SELECT try(:'create_bolt');
SELECT try(:'create_wider');
SELECT try(:'create_expired');
SELECT ok, code FROM flint_check_key(:'ms', 'payments:read', :acme);
RESET search_path;
SELECT fn FROM evil.calls;  -- none of the shadows was ever called by flint_keys
-- other merchants' rows stay invisible, whatever the WHERE clause
SELECT count(*) AS bolt_keys FROM flint.key_info WHERE merchant_id = :bolt;
SELECT count(*) AS bolt_events FROM flint.key_events WHERE merchant_id = :bolt;
SELECT count(*) AS bolt_log FROM flint.request_log WHERE merchant_id = :bolt;
SELECT try('SELECT secret_hash FROM flint.api_keys');
SELECT try('UPDATE flint.api_keys SET scopes = ''{payments:write}''');
ROLLBACK;
RESET ROLE;

-- 3. Nothing changed.
SELECT (SELECT md5(string_agg((k.id, k.name, k.scopes, k.secret_hash, k.revoked_at, k.expires_at, k.merchant_id)::text, ',' ORDER BY id))
          FROM flint.api_keys k) = b.keys AS keys_unchanged,
       (SELECT count(*) FROM flint.key_events) = b.events AS events_unchanged,
       (SELECT md5(string_agg(m::text, ',' ORDER BY id)) FROM flint.merchants m) = b.merchants AS merchants_unchanged,
       (SELECT count(*) FROM flint.scopes) = b.scopes AS scopes_unchanged
  FROM before b;
