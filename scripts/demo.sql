-- flint_keys in five minutes: run by scripts/demo.sh against a throwaway cluster.
\set QUIET on
\pset footer off
CREATE EXTENSION flint_keys;
\set QUIET off
\set acme '\'aaaaaaaa-0000-0000-0000-000000000001\''
\set bolt '\'bbbbbbbb-0000-0000-0000-000000000002\''

\echo '\n== 1. A merchant, and a key for its checkout server (the secret is shown once)'
INSERT INTO flint.merchants (id, name) VALUES (:acme, 'Acme Payments'), (:bolt, 'Bolt Shop');
SELECT key_id, secret, display_prefix
  FROM flint_create_key(:acme, 'checkout server', ARRAY['payments:write', 'refunds:read']) \gset
\echo secret: :secret
SELECT name, mode, display_prefix, scopes, status FROM flint_list_keys(:acme);

\echo '\n== 2. Verification: the key id, or a precise error (FK001..FK008; FK009..FK012 in part 4)'
SELECT flint_verify_key(:'secret', 'payments:read', :acme) AS verified_key_id;
SELECT flint_verify_key(left(:'secret', 68) || 'x', 'payments:read', :acme);   -- one typo
SELECT flint_verify_key('fk_live_' || repeat('0', 61), 'payments:read', :acme); -- garbage
SELECT flint_verify_key((flint._mint_token('live', gen_random_uuid())).secret,  -- well formed, but no such key
                        'payments:read', :acme);
SELECT flint_verify_key(:'secret', 'refunds:write', :acme);                    -- scope not held
SELECT flint_verify_key(:'secret', 'payments:read', :bolt);                    -- someone else's
SELECT flint_verify_key(:'secret', 'refunds:wirte', :acme);                    -- typo in the scope
SELECT * FROM flint_check_key(:'secret', 'customers:read', :acme);             -- the same, without raising

\echo '\n== 3. Rotation with a grace period, then revocation'
SELECT secret AS new_secret FROM flint_rotate_key(:'key_id', grace => '1 hour') \gset
SELECT flint_verify_key(:'secret', 'payments:read', :acme) IS NOT NULL AS old_secret_in_grace,
       flint_verify_key(:'new_secret', 'payments:read', :acme) IS NOT NULL AS new_secret_works;
SELECT status, revoked_reason FROM flint_revoke_key(:'key_id', 'laptop stolen');
SELECT flint_verify_key(:'new_secret', 'payments:read', :acme);
UPDATE flint.merchants SET status = 'suspended' WHERE id = :bolt;
SELECT secret AS bolt_secret FROM flint_create_key(:bolt, 'bolt', ARRAY['payments:read']) \gset
SELECT flint_verify_key(:'bolt_secret', 'payments:read', :bolt);
UPDATE flint.merchants SET status = 'active' WHERE id = :bolt;
SELECT secret AS short_secret, key_id AS short_key FROM flint_create_key(:acme, 'short grace', ARRAY['payments:read']) \gset
SELECT secret AS short_new FROM flint_rotate_key(:'short_key', grace => '0') \gset
SELECT flint_verify_key(:'short_secret', 'payments:read', :acme);                -- old secret, no grace left

\echo '\n== 4. Traffic controls and incident response: limits, an allowlist, disable/enable, a leak report'
SELECT key_id AS api_key, secret AS api_secret FROM flint_create_key(:acme, 'public api', ARRAY['payments:read']) \gset
SELECT status, rate_limit, rate_window, remaining, allowed_ips
  FROM flint_set_key_limits(:'api_key', rate_limit => 2, rate_window => '1 minute', remaining => 5,
                            allowed_ips => ARRAY['10.0.0.0/8']::cidr[]);
SELECT flint_verify_key(:'api_secret', 'payments:read', :acme, '10.1.2.3', 1) IS NOT NULL AS first_call_ok;
SELECT flint_verify_key(:'api_secret', 'payments:read', :acme, '192.0.2.7', 1);      -- outside the allowlist
SELECT flint_verify_key(:'api_secret', 'payments:read', :acme, '10.1.2.3', 1) IS NOT NULL AS second_call_ok;
SELECT flint_verify_key(:'api_secret', 'payments:read', :acme, '10.1.2.3', 1);       -- third call this minute
SELECT status FROM flint_clear_key_limits(:'api_key', ARRAY['rate']);
SELECT flint_verify_key(:'api_secret', 'payments:read', :acme, '10.1.2.3', 5);       -- costs more than is left
SELECT status, disabled_reason FROM flint_disable_key(:'api_key', 'fraud review');
SELECT flint_verify_key(:'api_secret', 'payments:read', :acme, '10.1.2.3', 1);       -- paused
SELECT status FROM flint_enable_key(:'api_key');
SELECT * FROM flint_report_leaked(ARRAY[:'api_secret'], 'github');                   -- found in a public repo: revoked
SELECT flint_verify_key(:'api_secret', 'payments:read', :acme, '10.1.2.3', 1);

\echo '\n== 5. Every verification left a request-log row (flushed by the log worker), and every change an event'
SELECT flint_flush_log();
SELECT to_char(at, 'HH24:MI:SS.MS') AS at, display_prefix, scope, outcome, sqlstate, source
  FROM flint.request_log ORDER BY at;
SELECT outcome, requests FROM flint.request_summary WHERE key_id = :'key_id' ORDER BY requests DESC;
SELECT event, actor, old,
       CASE WHEN event = 'created' THEN jsonb_build_object('name', new -> 'name', 'scopes', new -> 'scopes') ELSE new END AS new
  FROM flint.key_events WHERE key_id = :'key_id' ORDER BY id;

\echo '\n== 6. Row-level security: authenticate once per transaction, see only your merchant'
CREATE TABLE payments (id serial PRIMARY KEY, merchant_id uuid NOT NULL, amount_cents integer NOT NULL);
INSERT INTO payments (merchant_id, amount_cents) VALUES (:acme, 1250), (:acme, 990), (:bolt, 50000);
SELECT flint_protect_table('payments', 'merchant_id', read_scope => 'payments:read', write_scope => 'payments:write');
CREATE ROLE checkout_app;
GRANT EXECUTE ON FUNCTION flint_authenticate(text) TO checkout_app;
GRANT SELECT, INSERT ON payments TO checkout_app;
GRANT USAGE ON SEQUENCE payments_id_seq TO checkout_app;
SELECT secret AS app_secret FROM flint_create_key(:acme, 'checkout app', ARRAY['payments:write']) \gset
SELECT secret AS reader_secret FROM flint_create_key(:acme, 'dashboard', ARRAY['payments:read']) \gset
SET ROLE checkout_app;
SELECT count(*) AS visible_without_a_key FROM payments;
BEGIN;
SELECT merchant_id, scopes FROM flint_authenticate(:'app_secret');
SELECT merchant_id, amount_cents FROM payments;
INSERT INTO payments (merchant_id, amount_cents) VALUES (:acme, 4200);
INSERT INTO payments (merchant_id, amount_cents) VALUES (:bolt, 1);            -- wrong_merchant
ROLLBACK;
BEGIN;
SELECT scopes FROM flint_authenticate(:'reader_secret');
INSERT INTO payments (merchant_id, amount_cents) VALUES (:acme, 1);            -- missing_scope
ROLLBACK;
SELECT flint_current_merchant() AS context_after_the_transaction;
RESET ROLE;

\echo '\n== 7. Roles: one scope bundle for all checkout servers, changed once; usage per key for billing'
SELECT flint_create_role(:acme, 'checkout', ARRAY['payments:write', 'refunds:read']) AS role_id \gset
SELECT key_id AS server_key, secret AS server_secret FROM flint_create_key(:acme, 'checkout server 2', ARRAY['customers:read']) \gset
SELECT name, scopes, roles, effective_scopes FROM flint_grant_role(:'server_key', 'checkout');
SELECT flint_verify_key(:'server_secret', 'refunds:read', :acme) = :'server_key' AS refunds_through_the_role;
SELECT flint_update_role(:'role_id', ARRAY['payments:write']);                   -- every holder, from its next call
SELECT flint_verify_key(:'server_secret', 'refunds:read', :acme);                 -- missing_scope now
SELECT flint_flush_log();
SELECT u.bucket_start::date AS day, i.name AS key, u.outcome, u.requests, u.cost
  FROM flint_usage(:acme, now() - interval '1 day', now() + interval '1 minute', 'day') AS u
  JOIN flint.key_info AS i USING (key_id) ORDER BY i.name, u.outcome;
\echo '\n(the cluster is removed when the demo ends)'
