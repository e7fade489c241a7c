-- flint_keys 1.0 -> 1.1: a support helper for failing keys.
\echo Use "ALTER EXTENSION flint_keys UPDATE TO '1.1'" to load this file. \quit

-- Failures of one merchant's keys since a moment ago, grouped by key and
-- outcome, newest first: what support looks at when a merchant says "our
-- requests are being refused". Runs as the caller, so row-level security
-- applies: an application role sees only its authenticated merchant.
CREATE FUNCTION flint_recent_failures(merchant uuid, since interval DEFAULT '1 hour')
    RETURNS TABLE (key_id uuid, display_prefix text, outcome text, requests bigint, last_at timestamptz)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT l.key_id, min(l.display_prefix), l.outcome, count(*), max(l.at)
      FROM flint.request_log AS l
     WHERE l.merchant_id = $1 AND l.outcome <> 'ok' AND l.at > now() - $2
     GROUP BY l.key_id, l.outcome
     ORDER BY max(l.at) DESC
$$;
REVOKE ALL ON FUNCTION flint_recent_failures(uuid, interval) FROM PUBLIC;
