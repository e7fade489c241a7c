-- The audit trail in flint.key_events, and secrets absent from every table.
-- The shared setup: test/fixture.sql (try(), the merchants :acme and :bolt, empty key tables).
\getenv abs_srcdir PG_ABS_SRCDIR
\set fixture :abs_srcdir '/test/fixture.sql'
\i :fixture

SELECT coalesce(max(id), 0) AS last_event FROM flint.key_events \gset
SELECT key_id AS k, secret AS s FROM flint_create_key(:acme, 'audited', ARRAY['customers:read']) \gset
SELECT name FROM flint_update_key(:'k', name => 'audited v2', metadata => '{"a": 1}');
SELECT secret AS s2 FROM flint_rotate_key(:'k', '10 minutes') \gset
SELECT status FROM flint_revoke_key(:'k', 'rotation drill');
-- last_used_at alone is not an event
UPDATE flint.api_keys SET last_used_at = now() WHERE id = :'k';
DELETE FROM flint.api_keys WHERE id = :'k';

SELECT event, actor = current_user AS actor_ok, merchant_id = :acme AS merchant_ok,
       CASE WHEN event IN ('created', 'deleted') THEN NULL ELSE old END AS old,
       CASE WHEN event IN ('created', 'deleted') THEN NULL
            ELSE new - 'previous_secret_expires_at' - 'revoked_at' END AS new,
       (coalesce(old, new) ? 'secret_hash') OR (coalesce(old, new) ? 'previous_secret_hash') AS has_hash
  FROM flint.key_events WHERE id > :last_event AND key_id = :'k' ORDER BY id;

-- created and deleted carry the whole row, minus the hashes
SELECT event, new ->> 'name' AS name, new -> 'scopes' AS scopes, old ->> 'revoked_reason' AS reason
  FROM flint.key_events WHERE key_id = :'k' AND event IN ('created', 'deleted') ORDER BY id;

-- The actor is the role as SET ROLE left it, not the function owner.
CREATE ROLE flint_test_admin BYPASSRLS;
GRANT EXECUTE ON FUNCTION flint_create_key(uuid, text, text[], timestamptz, text, jsonb) TO flint_test_admin;
SET ROLE flint_test_admin;
SELECT key_id AS k3 FROM flint_create_key(:acme, 'by admin', ARRAY['logs:read']) \gset
RESET ROLE;
SELECT actor, created_by FROM flint.key_events e JOIN flint.api_keys k ON k.id = e.key_id WHERE e.key_id = :'k3';

-- No secret, nor its random part, appears in any flint table, the request
-- log included: attempts with both secrets put rows there.
SELECT x.secret = :'s' AS first_secret, c.code
  FROM (VALUES (:'s'), (:'s2')) AS x(secret), LATERAL flint_check_key(x.secret, 'customers:read', :acme) AS c;
SELECT flint_flush_log();
SELECT t.table_name, count(r.row_text) > 0 AS has_rows,
       count(*) FILTER (WHERE r.row_text LIKE '%' || substr(x.secret, 17) || '%') AS rows_with_secret
  FROM (VALUES (:'s'), (:'s2')) AS x(secret)
 CROSS JOIN (VALUES ('api_keys'), ('key_events'), ('request_log'), ('merchants'), ('scopes')) AS t(table_name)
  LEFT JOIN LATERAL (SELECT a::text AS row_text FROM flint.api_keys a WHERE t.table_name = 'api_keys'
                     UNION ALL SELECT e::text FROM flint.key_events e WHERE t.table_name = 'key_events'
                     UNION ALL SELECT l::text FROM flint.request_log l WHERE t.table_name = 'request_log'
                     UNION ALL SELECT m::text FROM flint.merchants m WHERE t.table_name = 'merchants'
                     UNION ALL SELECT s::text FROM flint.scopes s WHERE t.table_name = 'scopes') AS r ON true
 GROUP BY t.table_name ORDER BY 1;
