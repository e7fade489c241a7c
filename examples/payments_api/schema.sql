-- The example application's schema and role (run as a superuser / the owner).
CREATE TABLE IF NOT EXISTS payments (
    id           bigserial PRIMARY KEY,
    merchant_id  uuid NOT NULL REFERENCES flint.merchants (id),
    amount_cents integer NOT NULL CHECK (amount_cents > 0),
    currency     text NOT NULL DEFAULT 'EUR',
    created_at   timestamptz NOT NULL DEFAULT now()
);
SELECT flint_protect_table('payments', 'merchant_id', read_scope => 'payments:read', write_scope => 'payments:write');

CREATE ROLE checkout_app LOGIN;  -- no BYPASSRLS: RLS applies
GRANT EXECUTE ON FUNCTION flint_authenticate(text) TO checkout_app;
-- The server authenticates with the traffic-control form: the end client's
-- address (checked against the key's allowlist, written to the request log)
-- and the request's cost against the key's quota. The one-argument form stays
-- granted for clients that use it directly (psql, other tools).
GRANT EXECUTE ON FUNCTION flint_authenticate(text, inet, integer) TO checkout_app;
GRANT SELECT, INSERT ON payments TO checkout_app;
GRANT USAGE ON SEQUENCE payments_id_seq TO checkout_app;
GRANT USAGE ON SCHEMA flint TO checkout_app;
GRANT SELECT ON flint.request_log TO checkout_app;

-- GET /dashboard: the merchant's keys and request log, confined by RLS. It
-- checks keys:read with flint_require_scope. flint.key_info is security_invoker,
-- so the role reads flint.api_keys itself: every column but the hashes.
GRANT EXECUTE ON FUNCTION flint_require_scope(text) TO checkout_app;
GRANT SELECT ON flint.key_info TO checkout_app;
DO $$
BEGIN
    EXECUTE (SELECT format('GRANT SELECT (%s) ON flint.api_keys TO checkout_app', string_agg(quote_ident(attname), ', '))
               FROM pg_attribute
              WHERE attrelid = 'flint.api_keys'::regclass AND attnum > 0 AND NOT attisdropped
                AND attname NOT IN ('secret_hash', 'previous_secret_hash'));
END
$$;

-- POST /secret-scanning (the secret scanning receiver): its own login role,
-- allowed to report leaked tokens and nothing else. The server connects as it
-- with FLINT_RECEIVER_DSN. flint_report_leaked needs no context: EXECUTE is
-- the whole permission, so no other role should hold it.
CREATE ROLE leak_receiver LOGIN;  -- no BYPASSRLS, no table privileges
GRANT EXECUTE ON FUNCTION flint_report_leaked(text[], text) TO leak_receiver;

-- The merchant console (GET /console): the keys and request log above, plus
-- in-context key management through the same SQL functions (each checks
-- keys:write and refuses escalation itself), charts from the usage rollups
-- (flint_usage checks logs:read), and this server's token buckets of a key
-- in its panel (flint_rate_limit_state: the context's merchant's keys only).
GRANT EXECUTE ON FUNCTION flint_create_key(uuid, text, text[], timestamptz, text, jsonb),
    flint_rotate_key(uuid, interval), flint_disable_key(uuid, text), flint_enable_key(uuid),
    flint_revoke_key(uuid, text), flint_usage(uuid, timestamptz, timestamptz, text, uuid),
    flint_rate_limit_state(uuid) TO checkout_app;
GRANT SELECT ON flint.usage TO checkout_app;

-- X-RateLimit-Limit on a 429 of a key the app has not seen yet: a refused
-- call sets no context, so RLS hides the key's row. This reads a key's own
-- rate limit and nothing else; the app calls it for a key whose secret flint
-- has just verified (a 429 comes after the secret checks), once per key.
CREATE OR REPLACE FUNCTION payments_rate_limit(key_id uuid) RETURNS TABLE (rate_limit integer, rate_window interval)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT k.rate_limit, k.rate_window FROM flint.api_keys AS k WHERE k.id = $1 $$;
REVOKE ALL ON FUNCTION payments_rate_limit(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION payments_rate_limit(uuid) TO checkout_app;

-- The merchant's name for the page header: only the context's merchant.
CREATE OR REPLACE VIEW merchant_profile AS
    SELECT id, name, status FROM flint.merchants WHERE id = flint_current_merchant();
GRANT SELECT ON merchant_profile TO checkout_app;

-- One row per HTTP request of a key (method, path, status, latency), written
-- by the app after each answer; the console joins it to flint's request-log
-- row of the same key and request id. A merchant's context reads the rows of
-- its own keys only (RLS through flint.api_keys, itself under RLS).
CREATE TABLE IF NOT EXISTS api_requests (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    key_id      uuid NOT NULL,
    request_id  text NOT NULL,
    method      text NOT NULL,
    path        text NOT NULL,
    status      smallint NOT NULL,
    latency_ms  real NOT NULL
);
CREATE INDEX IF NOT EXISTS api_requests_key_request_idx ON api_requests (key_id, request_id);
CREATE INDEX IF NOT EXISTS api_requests_request_idx ON api_requests (request_id);
CREATE INDEX IF NOT EXISTS api_requests_at_idx ON api_requests USING brin (at);  -- for purging old rows
ALTER TABLE api_requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_requests_insert ON api_requests FOR INSERT TO checkout_app WITH CHECK (true);
CREATE POLICY api_requests_read ON api_requests FOR SELECT TO checkout_app
    USING (EXISTS (SELECT 1 FROM flint.api_keys AS k WHERE k.id = api_requests.key_id));
GRANT SELECT, INSERT ON api_requests TO checkout_app;
GRANT USAGE ON SEQUENCE api_requests_id_seq TO checkout_app;
