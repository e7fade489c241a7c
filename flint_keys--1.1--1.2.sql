-- flint_keys 1.1 -> 1.2: hostile-tenant hardening (a context dies with its
-- key, grace secrets cannot manage keys, lifetimes bounded by the caller and
-- the merchant's policy, size limits, no cross-merchant oracles), the log's
-- indexes for RLS readers, and incident response (leak reports, reversible
-- disable, key-event notifications, hygiene views).
\echo Use "ALTER EXTENSION flint_keys UPDATE TO '1.2'" to load this file. \quit

------------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------------

-- Reversible disable (revocation stays final).
ALTER TABLE flint.api_keys ADD COLUMN disabled_at timestamptz, ADD COLUMN disabled_reason text;
-- Traffic controls (README "Traffic controls"): a token-bucket rate limit,
-- a usage quota with refill, an IP allowlist. `remaining` is what has not
-- been leased yet to a server's shared memory; quota_version moves whenever
-- an admin sets the quota, so no older lease is spent after it.
ALTER TABLE flint.api_keys
    ADD COLUMN rate_limit integer CHECK (rate_limit BETWEEN 1 AND 1000000),
    ADD COLUMN rate_window interval CHECK (rate_window BETWEEN interval '1 second' AND interval '1 day'),
    ADD COLUMN remaining bigint CHECK (remaining >= 0),
    ADD COLUMN refill_amount bigint CHECK (refill_amount >= 0),
    ADD COLUMN refill_interval text CHECK (refill_interval IN ('day', 'month')),
    ADD COLUMN allowed_ips cidr[] CHECK (cardinality(allowed_ips) BETWEEN 1 AND 16 AND array_position(allowed_ips, NULL) IS NULL),
    ADD COLUMN quota_version bigint NOT NULL DEFAULT 0,
    ADD COLUMN quota_period_start timestamptz,
    ADD CONSTRAINT api_keys_rate_check CHECK ((rate_limit IS NULL) = (rate_window IS NULL)),
    ADD CONSTRAINT api_keys_refill_check CHECK ((refill_amount IS NULL) = (refill_interval IS NULL)
                                                AND (refill_amount IS NULL OR remaining IS NOT NULL));
-- The units a call weighed against its key's quota (1 for the forms without cost).
ALTER TABLE flint.request_log ADD COLUMN cost integer;
-- The server that verified (its cluster_name, or the system identifier):
-- standbys forward their rows here (README "Read replicas").
ALTER TABLE flint.request_log ADD COLUMN server text;
ALTER TABLE flint.merchants
    ADD COLUMN rate_limit integer CHECK (rate_limit BETWEEN 1 AND 1000000),
    ADD COLUMN rate_window interval CHECK (rate_window BETWEEN interval '1 second' AND interval '1 day'),
    ADD CONSTRAINT merchants_rate_check CHECK ((rate_limit IS NULL) = (rate_window IS NULL));
-- key_info (security_invoker) reads the new columns: every role that may
-- read the key's display columns may read these too, so GRANTs made for 1.1
-- keep working.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee FROM pg_attribute att, aclexplode(att.attacl) a
              WHERE att.attrelid = 'flint.api_keys'::regclass AND att.attname = 'display_prefix'
                AND a.privilege_type = 'SELECT' LOOP
        EXECUTE format('GRANT SELECT (disabled_at, disabled_reason, rate_limit, rate_window, remaining, refill_amount, '
                       'refill_interval, allowed_ips) ON flint.api_keys TO %s',
                       CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE r.grantee::regrole::text END);
    END LOOP;
END
$$;
-- NULL: no policy. Otherwise no create, update or rotation may leave a key
-- of this merchant without an expiry or expiring later than now() + it.
ALTER TABLE flint.merchants ADD COLUMN max_key_lifetime interval
    CHECK (max_key_lifetime > interval '0');

ALTER TABLE flint.key_events DROP CONSTRAINT key_events_event_check;
ALTER TABLE flint.key_events ADD CONSTRAINT key_events_event_check
    CHECK (event IN ('created', 'updated', 'rotated', 'revoked', 'deleted', 'leaked', 'disabled', 'enabled'));

-- RLS readers (an application in a context) read "my merchant's newest rows":
-- index every row by merchant, not only failures; and "one key's newest
-- rows", with statistics that say a key has one merchant. Partitions made
-- from now on get them from _maintain_request_log; existing ones get them here.
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'flint.request_log'::regclass LOOP
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON flint.%I (merchant_id, at)', p.relname || '_merchant_idx',
                       p.relname);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON flint.%I (key_id, merchant_id, at)',
                       p.relname || '_key_merchant_idx', p.relname);
        EXECUTE format('CREATE STATISTICS IF NOT EXISTS flint.%I (dependencies) ON key_id, merchant_id FROM flint.%I',
                       p.relname || '_key_merchant_stats', p.relname);
    END LOOP;
END
$$;

------------------------------------------------------------------------------
-- C functions
------------------------------------------------------------------------------

-- The context's mode ('live' or 'test'), NULL outside a context. For the
-- policies of protected tables (test keys do not see live data).
CREATE FUNCTION flint_current_mode() RETURNS text
    AS 'MODULE_PATHNAME', 'flint_current_mode' LANGUAGE C STABLE PARALLEL RESTRICTED;

-- True when the context was opened with a pre-rotation secret in its grace.
CREATE FUNCTION flint._context_via_grace() RETURNS boolean
    AS 'MODULE_PATHNAME', 'flint_context_via_grace' LANGUAGE C STABLE PARALLEL RESTRICTED;

-- A new token for a key: the secret (returned once, never stored), its
-- display prefix and the SHA-256 digest verification compares, made in one
-- place (the C token format) so SQL never slices or hashes it itself.
CREATE FUNCTION flint._mint_token(mode text, key_id uuid, OUT secret text, OUT display_prefix text, OUT secret_hash bytea)
    AS 'MODULE_PATHNAME', 'flint_mint_token' LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Client text on its way into a table: any flint token in it masked after
-- its display prefix (the scrubber the server log uses).
CREATE FUNCTION flint._scrub(t text) RETURNS text
    AS 'MODULE_PATHNAME', 'flint_scrub' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- For a leak report: the key whose current secret, or pre-rotation secret
-- still in its grace, the token is (checked as verification checks it:
-- shape, CRC, SHA-256 compared in constant time), else NULL. Logs one
-- request-log row (source 'report_leaked').
CREATE FUNCTION flint._leaked_key(token text, OUT key_id uuid, OUT display_prefix text)
    AS 'MODULE_PATHNAME', 'flint_leaked_key' LANGUAGE C VOLATILE PARALLEL UNSAFE;

------------------------------------------------------------------------------
-- Audit trail: new events, NOTIFY at commit, and no column silently skipped
------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION flint._key_events_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_row jsonb;
    new_row jsonb;
    kind    text;
    at      timestamptz := clock_timestamp();
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_row := to_jsonb(OLD) - 'secret_hash' - 'previous_secret_hash';
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        new_row := to_jsonb(NEW) - 'secret_hash' - 'previous_secret_hash';
    END IF;
    -- pg_dump's scripts run with check_function_bodies off: rows it restores
    -- already have their events in the dump. flint_create_key pins it on.
    IF TG_OP = 'INSERT' AND current_setting('check_function_bodies') = 'off' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        kind := 'created';
    ELSIF TG_OP = 'DELETE' THEN
        kind := 'deleted';
    ELSE
        IF NEW.secret_hash IS DISTINCT FROM OLD.secret_hash THEN
            kind := 'rotated';
        ELSIF OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL THEN
            kind := CASE WHEN NEW.revoked_reason LIKE 'leaked via %' THEN 'leaked' ELSE 'revoked' END;
        ELSIF OLD.disabled_at IS NULL AND NEW.disabled_at IS NOT NULL THEN
            kind := 'disabled';
        ELSIF OLD.disabled_at IS NOT NULL AND NEW.disabled_at IS NULL THEN
            kind := 'enabled';
        ELSE
            kind := 'updated';
        END IF;
        -- Keep only what changed; the worker's bookkeeping alone is not an event.
        SELECT jsonb_object_agg(o.key, o.value), jsonb_object_agg(o.key, new_row -> o.key)
          INTO old_row, new_row
          FROM jsonb_each(old_row) AS o
         WHERE o.key NOT IN ('last_used_at', 'quota_period_start')
           AND (new_row -> o.key) IS DISTINCT FROM o.value;
        IF old_row IS NULL AND kind = 'updated' THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO flint.key_events (at, key_id, merchant_id, event, actor, old, new)
    VALUES (at, COALESCE(NEW.id, OLD.id), COALESCE(NEW.merchant_id, OLD.merchant_id), kind,
            flint._actor(), old_row, new_row);
    -- Delivered to listeners at commit only; never a secret or a hash.
    PERFORM pg_notify('flint_key_events',
                      json_build_object('key_id', COALESCE(NEW.id, OLD.id),
                                        'merchant_id', COALESCE(NEW.merchant_id, OLD.merchant_id),
                                        'event', kind, 'at', at)::text);
    RETURN NULL;
END
$$;

-- Every column but the log worker's bookkeeping (last_used_at, and the
-- quota units it leases: remaining, quota_period_start) counts: a column
-- added later is never silently skipped. An admin's quota change moves
-- quota_version, so it is an event.
DROP TRIGGER key_events_update ON flint.api_keys;
CREATE TRIGGER key_events_update AFTER UPDATE ON flint.api_keys
    FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'last_used_at' - 'remaining' - 'quota_period_start')
          IS DISTINCT FROM (to_jsonb(NEW) - 'last_used_at' - 'remaining' - 'quota_period_start'))
    EXECUTE FUNCTION flint._key_events_trigger();

------------------------------------------------------------------------------
-- The key as a DBA reads it: disabled status, and who is beyond policy
------------------------------------------------------------------------------

CREATE OR REPLACE VIEW flint.key_info WITH (security_invoker = true) AS
SELECT k.id AS key_id, k.merchant_id, k.name, k.mode, k.display_prefix, k.scopes, k.metadata,
       CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked'
            WHEN k.expires_at <= now() THEN 'expired'
            WHEN k.disabled_at IS NOT NULL THEN 'disabled'
            ELSE 'active' END AS status,
       k.created_at, k.created_by, k.expires_at, k.revoked_at, k.revoked_reason, k.last_used_at,
       k.previous_secret_expires_at, k.disabled_at, k.disabled_reason,
       k.rate_limit, k.rate_window, k.remaining, k.refill_amount, k.refill_interval, k.allowed_ips
  FROM flint.api_keys k;

-- Active keys expiring within 14 days: rotate them.
CREATE VIEW flint.expiring_keys WITH (security_invoker = true) AS
SELECT * FROM flint.key_info i
 WHERE i.status = 'active' AND i.expires_at < now() + interval '14 days';

-- Active keys not used for 90 days (never used: created 90 days ago): revoke them.
CREATE VIEW flint.unused_keys WITH (security_invoker = true) AS
SELECT * FROM flint.key_info i
 WHERE i.status = 'active' AND COALESCE(i.last_used_at, i.created_at) < now() - interval '90 days';

-- Active keys made before their merchant's max_key_lifetime that break it
-- (no expiry, or later than now() + max): they keep working; plan their rotation.
CREATE VIEW flint.keys_beyond_policy WITH (security_invoker = true) AS
SELECT i.*, m.max_key_lifetime FROM flint.key_info i JOIN flint.merchants m ON m.id = i.merchant_id
 WHERE i.status IN ('active', 'disabled') AND m.max_key_lifetime IS NOT NULL
   AND (i.expires_at IS NULL OR i.expires_at > now() + m.max_key_lifetime);

------------------------------------------------------------------------------
-- Authorization
------------------------------------------------------------------------------

-- Who may manage keys at all: outside a context an admin (BYPASSRLS or
-- superuser); inside one, a context whose key is alive (checked by the
-- context readers) and was opened with its current secret.
CREATE FUNCTION flint._authorize_caller() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.pg_is_in_recovery() THEN
        RAISE EXCEPTION 'key management is not possible on a standby (this server is in recovery)'
            USING ERRCODE = 'read_only_sql_transaction',
                  HINT = 'Manage keys on the primary; verification works here.';
    END IF;
    IF @extschema@.flint_current_key() IS NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = flint._actor() AND (r.rolsuper OR r.rolbypassrls)) THEN
            RAISE EXCEPTION 'key management outside an authenticated transaction needs an admin role'
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Call flint_authenticate(secret) with a key holding keys:read or keys:write, or use a role with BYPASSRLS.';
        END IF;
        RETURN;
    END IF;
    IF flint._context_via_grace() THEN
        RAISE EXCEPTION 'a pre-rotation secret cannot manage keys'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Authenticate with the key''s current secret.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION flint._authorize(merchant uuid, needed text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM flint._authorize_caller();
    IF @extschema@.flint_current_key() IS NULL THEN
        RETURN;
    END IF;
    PERFORM @extschema@.flint_require_scope(needed);
    -- No merchant id in the message: another merchant's id and an unknown
    -- one must look the same.
    IF merchant IS DISTINCT FROM @extschema@.flint_current_merchant() THEN
        RAISE EXCEPTION USING ERRCODE = 'FK006',
            MESSAGE = 'wrong_merchant: the authenticated key acts only for its own merchant';
    END IF;
END
$$;

-- Revoked keys cannot be changed, rotated, disabled or enabled: the one
-- refusal every management function gives, `what` finishing its message.
CREATE FUNCTION flint._refuse_revoked(k flint.api_keys, what text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF k.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'key % is revoked%', k.display_prefix, what USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
END
$$;

-- The key, locked, after the caller is authorized. In a context only the
-- context's merchant's keys are looked at (and locked): another merchant's
-- key id gives the same error as an unknown one.
CREATE OR REPLACE FUNCTION flint._key_for_update(key_id uuid, needed text) RETURNS flint.api_keys
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k flint.api_keys;
BEGIN
    IF key_id IS NULL THEN
        RAISE EXCEPTION 'key_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM flint._authorize_caller();
    SELECT * INTO k FROM flint.api_keys AS a
     WHERE a.id = _key_for_update.key_id
       AND (@extschema@.flint_current_key() IS NULL OR a.merchant_id = @extschema@.flint_current_merchant())
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no key with id %', key_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM flint._authorize_key(k, needed);
    RETURN k;
END
$$;

-- The latest expiry a key of `merchant` may be left with by the caller:
-- the calling key's own expiry (in a context) and now() + the merchant's
-- max_key_lifetime, whichever is sooner; NULL when neither applies.
CREATE FUNCTION flint._expiry_bound(merchant uuid, OUT bound timestamptz, OUT why text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    caller_expiry timestamptz;
    policy        interval;
BEGIN
    IF @extschema@.flint_current_key() IS NOT NULL THEN
        SELECT k.expires_at INTO caller_expiry FROM flint.api_keys k WHERE k.id = @extschema@.flint_current_key();
        IF caller_expiry IS NOT NULL THEN
            bound := caller_expiry;
            why := 'the authenticated key''s own expiry';
        END IF;
    END IF;
    SELECT m.max_key_lifetime INTO policy FROM flint.merchants m WHERE m.id = merchant;
    IF policy IS NOT NULL AND (bound IS NULL OR now() + policy < bound) THEN
        bound := now() + policy;
        why := format('the merchant''s max_key_lifetime (%s)', policy);
    END IF;
END
$$;

-- Refuses an expiry (NULL: none) that outlives the bound for `merchant`.
CREATE FUNCTION flint._check_lifetime(merchant uuid, expiry timestamptz) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b record;
BEGIN
    SELECT * INTO b FROM flint._expiry_bound(merchant);
    IF b.bound IS NOT NULL AND (expiry IS NULL OR expiry > b.bound) THEN
        RAISE EXCEPTION 'the key would live beyond %', b.why
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('expires_at must be set and no later than %s.', b.bound);
    END IF;
END
$$;

-- Client text bound for a table: bounded, and scrubbed of tokens.
CREATE FUNCTION flint._checked_text(what text, value text, max_chars integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF length(value) > max_chars THEN
        RAISE EXCEPTION '% is too long (% characters; at most %)', what, length(value), max_chars
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN flint._scrub(value);
END
$$;

CREATE FUNCTION flint._checked_metadata(metadata jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF metadata IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(metadata::text) > 8192 THEN
        RAISE EXCEPTION 'metadata is too large (% bytes as text; at most 8192)', octet_length(metadata::text)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN flint._scrub(metadata::text)::jsonb;
END
$$;

------------------------------------------------------------------------------
-- Management
------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION flint_create_key(merchant uuid, name text, scopes text[],
                                 expires_at timestamptz DEFAULT NULL, mode text DEFAULT 'live',
                                 metadata jsonb DEFAULT '{}')
    RETURNS TABLE (key_id uuid, secret text, display_prefix text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET check_function_bodies = on AS $$
DECLARE
    new_id     uuid := gen_random_uuid();
    minted     record;
    key_scopes text[];
    expiry     timestamptz;
BEGIN
    IF merchant IS NULL OR name IS NULL OR mode IS NULL OR metadata IS NULL THEN
        RAISE EXCEPTION 'merchant, name, scopes, mode and metadata must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM flint._authorize(merchant, 'keys:write');
    IF NOT EXISTS (SELECT 1 FROM flint.merchants AS m WHERE m.id = merchant) THEN
        RAISE EXCEPTION 'no merchant with id %', merchant USING ERRCODE = 'no_data_found';
    END IF;
    IF length(btrim(name)) = 0 OR length(name) > 200 THEN
        RAISE EXCEPTION 'a key name must have 1 to 200 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF mode NOT IN ('live', 'test') THEN
        RAISE EXCEPTION 'unknown key mode "%"', left(mode, 20) USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use ''live'' or ''test''.';
    END IF;
    metadata := flint._checked_metadata(metadata);
    key_scopes := flint._check_scopes(scopes);
    PERFORM flint._check_grantable(key_scopes);
    IF @extschema@.flint_current_key() IS NOT NULL AND mode <> flint._current_mode() THEN
        RAISE EXCEPTION USING ERRCODE = 'FK005',
            MESSAGE = format('missing_scope: a %s key cannot create %s keys', flint._current_mode(), mode);
    END IF;
    expiry := flint._checked_expiry(expires_at);
    PERFORM flint._check_lifetime(merchant, expiry);
    SELECT * INTO minted FROM flint._mint_token(mode, new_id);
    INSERT INTO flint.api_keys AS k (id, merchant_id, name, mode, scopes, metadata, display_prefix,
                                     secret_hash, created_by, expires_at)
    VALUES (new_id, merchant, flint._scrub(name), mode, key_scopes, metadata, minted.display_prefix,
            minted.secret_hash, flint._actor(), expiry);
    key_id := new_id;
    secret := minted.secret;
    display_prefix := minted.display_prefix;
    RETURN NEXT;
END
$$;

CREATE OR REPLACE FUNCTION flint_list_keys(merchant uuid, include_revoked boolean DEFAULT false)
    RETURNS SETOF flint.key_info
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM flint._authorize(merchant, 'keys:read');
    RETURN QUERY SELECT * FROM flint.key_info AS i
                  WHERE i.merchant_id = merchant AND (include_revoked OR i.revoked_at IS NULL)
                  ORDER BY i.created_at, i.key_id;
END
$$;

CREATE OR REPLACE FUNCTION flint_get_key(key_id uuid) RETURNS flint.key_info
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    info flint.key_info;
BEGIN
    IF key_id IS NULL THEN
        RAISE EXCEPTION 'key_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM flint._authorize_caller();
    IF @extschema@.flint_current_key() IS NOT NULL THEN
        PERFORM @extschema@.flint_require_scope('keys:read');
    END IF;
    SELECT * INTO info FROM flint.key_info AS i
     WHERE i.key_id = flint_get_key.key_id
       AND (@extschema@.flint_current_key() IS NULL OR i.merchant_id = @extschema@.flint_current_merchant());
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no key with id %', key_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN info;
END
$$;

CREATE OR REPLACE FUNCTION flint_update_key(key_id uuid, name text DEFAULT NULL, scopes text[] DEFAULT NULL,
                                 expires_at timestamptz DEFAULT NULL, metadata jsonb DEFAULT NULL)
    RETURNS flint.key_info
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k          flint.api_keys := flint._key_for_update(key_id, 'keys:write');
    key_scopes text[];
    expiry     timestamptz;
    info       flint.key_info;
BEGIN
    PERFORM flint._refuse_revoked(k, ' and cannot be changed');
    IF name IS NOT NULL AND (length(btrim(name)) = 0 OR length(name) > 200) THEN
        RAISE EXCEPTION 'a key name must have 1 to 200 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    flint_update_key.metadata := flint._checked_metadata(flint_update_key.metadata);
    IF scopes IS NOT NULL THEN
        key_scopes := flint._check_scopes(scopes);
        PERFORM flint._check_grantable(key_scopes);
    END IF;
    expiry := k.expires_at;
    IF expires_at IS NOT NULL THEN
        -- An expired key stays expired: create a new one instead.
        IF k.expires_at <= now() THEN
            RAISE EXCEPTION 'key % has expired; its expiry cannot be changed', k.display_prefix
                USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Create a new key.';
        END IF;
        expiry := flint._checked_expiry(expires_at);
    END IF;
    PERFORM flint._check_lifetime(k.merchant_id, expiry);
    UPDATE flint.api_keys AS a
       SET name = COALESCE(flint._scrub(flint_update_key.name), a.name),
           scopes = COALESCE(key_scopes, a.scopes),
           expires_at = expiry,
           metadata = COALESCE(flint_update_key.metadata, a.metadata)
     WHERE a.id = k.id;
    SELECT * INTO info FROM flint.key_info AS i WHERE i.key_id = k.id;
    RETURN info;
END
$$;

CREATE OR REPLACE FUNCTION flint_revoke_key(key_id uuid, reason text DEFAULT NULL) RETURNS flint.key_info
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k    flint.api_keys := flint._key_for_update(key_id, 'keys:write');
    info flint.key_info;
BEGIN
    reason := flint._checked_text('reason', reason, 1000);
    -- Revoking twice keeps the first revocation: time and reason stay as they were.
    IF k.revoked_at IS NULL THEN
        UPDATE flint.api_keys AS a SET revoked_at = now(), revoked_reason = reason WHERE a.id = k.id;
    END IF;
    SELECT * INTO info FROM flint.key_info AS i WHERE i.key_id = k.id;
    RETURN info;
END
$$;

CREATE OR REPLACE FUNCTION flint._rotate_key(target uuid, grace interval)
    RETURNS TABLE (key_id uuid, secret text, display_prefix text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k      flint.api_keys := flint._key_for_update(target, 'keys:write');
    minted record;
BEGIN
    -- Bound the resulting moment, not the interval's parts: '1 month -29 days'
    -- and '-1 day 100 years' are judged by where they land.
    IF grace IS NULL OR now() + grace < now() OR now() + grace > now() + interval '30 days' THEN
        RAISE EXCEPTION 'grace must be between 0 and 30 days' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM flint._refuse_revoked(k, ' and cannot be rotated');
    IF k.expires_at <= now() THEN
        RAISE EXCEPTION 'key % has expired and cannot be rotated', k.display_prefix
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Create a new key.';
    END IF;
    PERFORM flint._check_lifetime(k.merchant_id, k.expires_at);
    SELECT * INTO minted FROM flint._mint_token(k.mode, k.id);
    -- Only the secret just replaced stays valid for the grace; an older one ends now.
    UPDATE flint.api_keys AS a
       SET previous_secret_hash = a.secret_hash,
           previous_secret_expires_at = now() + grace,
           secret_hash = minted.secret_hash,
           display_prefix = minted.display_prefix
     WHERE a.id = k.id;
    key_id := k.id;
    secret := minted.secret;
    display_prefix := minted.display_prefix;
    RETURN NEXT;
END
$$;

------------------------------------------------------------------------------
-- Traffic controls
------------------------------------------------------------------------------

-- A rate limit's bounds (a NULL part is not checked): 1 to 1,000,000 calls
-- per 1 second to 1 day, judged by where the window lands.
CREATE FUNCTION flint._check_rate(rate_limit integer, rate_window interval) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF rate_limit NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'rate_limit must be between 1 and 1000000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF now() + rate_window < now() + interval '1 second' OR now() + rate_window > now() + interval '1 day' THEN
        RAISE EXCEPTION 'rate_window must be between 1 second and 1 day' USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Sets a key's limits; a NULL argument leaves that setting unchanged. In a
-- context: keys:write over a key the caller may manage, and a key never
-- loosens its own limits.
CREATE FUNCTION flint_set_key_limits(key_id uuid, rate_limit integer DEFAULT NULL, rate_window interval DEFAULT NULL,
                                     remaining bigint DEFAULT NULL, refill_amount bigint DEFAULT NULL,
                                     refill_interval text DEFAULT NULL, allowed_ips cidr[] DEFAULT NULL)
    RETURNS flint.key_info
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k    flint.api_keys := flint._key_for_update(key_id, 'keys:write');
    n    flint.api_keys;
BEGIN
    PERFORM flint._refuse_revoked(k, ' and cannot be changed');
    PERFORM flint._check_rate(rate_limit, rate_window);
    IF remaining < 0 OR refill_amount < 0 THEN
        RAISE EXCEPTION 'remaining and refill_amount must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF refill_interval NOT IN ('day', 'month') THEN
        RAISE EXCEPTION 'refill_interval must be day or month' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(allowed_ips) = 0 OR cardinality(allowed_ips) > 16 OR array_position(allowed_ips, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'allowed_ips must list 1 to 16 networks'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'NULL leaves the allowlist unchanged; flint_clear_key_limits(key, ARRAY[''ips'']) removes it.';
    END IF;
    n := k;
    n.rate_limit := COALESCE(rate_limit, k.rate_limit);
    n.rate_window := COALESCE(rate_window, k.rate_window);
    n.remaining := COALESCE(remaining, k.remaining);
    n.refill_amount := COALESCE(refill_amount, k.refill_amount);
    n.refill_interval := COALESCE(refill_interval, k.refill_interval);
    n.allowed_ips := COALESCE(allowed_ips, k.allowed_ips);
    IF (n.rate_limit IS NULL) <> (n.rate_window IS NULL) THEN
        RAISE EXCEPTION 'a rate limit needs both rate_limit and rate_window' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (n.refill_amount IS NULL) <> (n.refill_interval IS NULL) THEN
        RAISE EXCEPTION 'a refill needs both refill_amount and refill_interval' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n.refill_amount IS NOT NULL AND n.remaining IS NULL THEN
        n.remaining := n.refill_amount;  -- a refilling quota starts full
    END IF;
    RETURN flint._store_limits(k, n);
END
$$;

-- Removes limits of the named kinds: rate, quota, ips.
CREATE FUNCTION flint_clear_key_limits(key_id uuid, kinds text[] DEFAULT ARRAY['rate', 'quota', 'ips'])
    RETURNS flint.key_info
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k    flint.api_keys := flint._key_for_update(key_id, 'keys:write');
    n    flint.api_keys;
BEGIN
    IF kinds IS NULL OR cardinality(kinds) = 0 OR array_position(kinds, NULL) IS NOT NULL
       OR NOT kinds <@ ARRAY['rate', 'quota', 'ips'] THEN
        RAISE EXCEPTION 'kinds must list some of rate, quota, ips' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    n := k;
    IF 'rate' = ANY (kinds) THEN n.rate_limit := NULL; n.rate_window := NULL; END IF;
    IF 'quota' = ANY (kinds) THEN n.remaining := NULL; n.refill_amount := NULL; n.refill_interval := NULL; END IF;
    IF 'ips' = ANY (kinds) THEN n.allowed_ips := NULL; END IF;
    RETURN flint._store_limits(k, n);
END
$$;

-- Stores a key's new limits (after _check_not_looser) and returns the key.
-- A changed quota gets a new quota_version (units leased from the old one
-- are never spent) and starts in the current period; an unchanged one keeps
-- its period, so a refill that is due still happens.
CREATE FUNCTION flint._store_limits(old flint.api_keys, new flint.api_keys) RETURNS flint.key_info
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    quota_changed boolean := (new.remaining, new.refill_amount, new.refill_interval)
                             IS DISTINCT FROM (old.remaining, old.refill_amount, old.refill_interval);
    info          flint.key_info;
BEGIN
    PERFORM flint._check_not_looser(old, new);
    UPDATE flint.api_keys AS a
       SET rate_limit = new.rate_limit, rate_window = new.rate_window, remaining = new.remaining,
           refill_amount = new.refill_amount, refill_interval = new.refill_interval, allowed_ips = new.allowed_ips,
           quota_version = a.quota_version + CASE WHEN quota_changed THEN 1 ELSE 0 END,
           quota_period_start = CASE WHEN new.refill_interval IS NULL THEN NULL
                                     WHEN quota_changed THEN flint._quota_period_start(new.refill_interval, now())
                                     ELSE a.quota_period_start END
     WHERE a.id = old.id;
    SELECT * INTO info FROM flint.key_info AS i WHERE i.key_id = old.id;
    RETURN info;
END
$$;

-- In a context a key may tighten its own limits, never loosen them.
CREATE FUNCTION flint._check_not_looser(old flint.api_keys, new flint.api_keys) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF @extschema@.flint_current_key() IS DISTINCT FROM old.id THEN
        RETURN;
    END IF;
    IF (old.rate_limit IS NOT NULL AND (new.rate_limit IS NULL OR new.rate_limit > old.rate_limit
                                        OR new.rate_limit::float8 / extract(epoch FROM new.rate_window)
                                           > old.rate_limit::float8 / extract(epoch FROM old.rate_window)))
       OR (old.remaining IS NOT NULL AND (new.remaining IS NULL OR new.remaining > old.remaining))
       OR (old.refill_amount IS NULL AND new.refill_amount IS NOT NULL)
       OR (old.refill_amount IS NOT NULL AND (new.refill_amount IS NULL OR new.refill_amount > old.refill_amount
                                              OR (old.refill_interval = 'month' AND new.refill_interval = 'day')))
       OR (old.allowed_ips IS NOT NULL AND (new.allowed_ips IS NULL
                                            OR EXISTS (SELECT 1 FROM unnest(new.allowed_ips) AS a(net)
                                                        WHERE NOT a.net <<= ANY (old.allowed_ips)))) THEN
        RAISE EXCEPTION USING ERRCODE = 'FK005', MESSAGE = 'missing_scope: a key cannot loosen its own limits';
    END IF;
END
$$;

-- One limit for all of a merchant's keys together; NULL removes it. Admins only.
CREATE FUNCTION flint_set_merchant_limits(merchant uuid, rate_limit integer DEFAULT NULL,
                                          rate_window interval DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF @extschema@.flint_current_key() IS NOT NULL THEN
        RAISE EXCEPTION 'merchant limits are set by admins, outside an authenticated transaction'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM flint._authorize_caller();
    IF merchant IS NULL THEN
        RAISE EXCEPTION 'merchant must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF (rate_limit IS NULL) <> (rate_window IS NULL) THEN
        RAISE EXCEPTION 'give both rate_limit and rate_window, or neither to remove the limit'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM flint._check_rate(rate_limit, rate_window);
    UPDATE flint.merchants AS m SET rate_limit = flint_set_merchant_limits.rate_limit,
                                    rate_window = flint_set_merchant_limits.rate_window
     WHERE m.id = merchant;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no merchant with id %', merchant USING ERRCODE = 'no_data_found';
    END IF;
END
$$;

-- The start (UTC) of the quota period holding `at`.
CREATE FUNCTION flint._quota_period_start(refill_interval text, at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT date_trunc(refill_interval, at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;

-- The log worker leases quota units to this server's shared memory, in a
-- committed transaction, before any of them is spent: a crash can forfeit
-- leased units, never grant extra. Refills first when a new period began.
-- Returns the units granted (0: none left), or -1 when the quota changed
-- (version) or is gone.
CREATE FUNCTION flint._lease_quota(key_id uuid, version bigint, period timestamptz, want bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k       flint.api_keys;
    granted bigint;
BEGIN
    SELECT * INTO k FROM flint.api_keys AS a WHERE a.id = key_id FOR UPDATE;
    IF NOT FOUND OR k.quota_version <> version OR k.remaining IS NULL THEN
        RETURN -1;
    END IF;
    IF k.refill_interval IS NOT NULL AND period IS NOT NULL
       AND (k.quota_period_start IS NULL OR k.quota_period_start < period) THEN
        k.remaining := k.refill_amount;   -- a new period: what was left (and leased) of the last one is gone
        k.quota_period_start := period;
    END IF;
    IF k.refill_interval IS NOT NULL AND k.quota_period_start > period THEN
        RETURN 0;                         -- a caller behind the table's period gets nothing
    END IF;
    granted := least(want, k.remaining);
    UPDATE flint.api_keys AS a SET remaining = k.remaining - granted, quota_period_start = k.quota_period_start
     WHERE a.id = key_id;
    RETURN granted;
END
$$;

-- Traffic-control forms: the address to check against the key's allowlist
-- (NULL: the connection's) and the call's weight against its quota. The
-- three-argument forms behave as client_ip => NULL, cost => 1.
CREATE FUNCTION flint_verify_key(secret text, scope text, merchant uuid, client_ip inet, cost integer DEFAULT 1)
    RETURNS uuid
    AS 'MODULE_PATHNAME', 'flint_verify_key' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION flint_check_key(secret text, scope text, merchant uuid, client_ip inet, cost integer DEFAULT 1)
    RETURNS TABLE (ok boolean, key_id uuid, code text, sqlstate text)
    AS 'MODULE_PATHNAME', 'flint_check_key' LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;
CREATE FUNCTION flint_authenticate(secret text, client_ip inet, cost integer DEFAULT 1)
    RETURNS TABLE (key_id uuid, merchant_id uuid, mode text, scopes text[])
    AS 'MODULE_PATHNAME', 'flint_authenticate' LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;
REVOKE ALL ON FUNCTION flint_verify_key(text, text, uuid, inet, integer), flint_check_key(text, text, uuid, inet, integer),
    flint_authenticate(text, inet, integer), flint_set_key_limits(uuid, integer, interval, bigint, bigint, text, cidr[]),
    flint_clear_key_limits(uuid, text[]), flint_set_merchant_limits(uuid, integer, interval) FROM PUBLIC;

-- Reversible: a disabled key fails with key_disabled until enabled. In a
-- context the same rules as revoke apply (keys:write, own merchant, a key
-- whose scopes the caller holds).
CREATE FUNCTION flint_disable_key(key_id uuid, reason text DEFAULT NULL) RETURNS flint.key_info
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k    flint.api_keys := flint._key_for_update(key_id, 'keys:write');
    info flint.key_info;
BEGIN
    reason := flint._checked_text('reason', reason, 1000);
    PERFORM flint._refuse_revoked(k, '; revocation is final');
    IF k.disabled_at IS NULL THEN
        UPDATE flint.api_keys AS a SET disabled_at = now(), disabled_reason = reason WHERE a.id = k.id;
    END IF;
    SELECT * INTO info FROM flint.key_info AS i WHERE i.key_id = k.id;
    RETURN info;
END
$$;

CREATE FUNCTION flint_enable_key(key_id uuid) RETURNS flint.key_info
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k    flint.api_keys := flint._key_for_update(key_id, 'keys:write');
    info flint.key_info;
BEGIN
    PERFORM flint._refuse_revoked(k, '; revocation is final and enable cannot undo it');
    IF k.disabled_at IS NOT NULL THEN
        -- Bringing a key back is management too: it may not outlive the caller.
        PERFORM flint._check_lifetime(k.merchant_id, k.expires_at);
        UPDATE flint.api_keys AS a SET disabled_at = NULL, disabled_reason = NULL WHERE a.id = k.id;
    END IF;
    SELECT * INTO info FROM flint.key_info AS i WHERE i.key_id = k.id;
    RETURN info;
END
$$;

-- A secret scanner's report: every token that is a key's current secret (or
-- its pre-rotation secret in grace) revokes that key at once with reason
-- 'leaked via <source>' and event 'leaked'. Nothing more is revealed about
-- tokens that are not keys. Needs no context: EXECUTE is the permission.
CREATE FUNCTION flint_report_leaked(tokens text[], source text)
    RETURNS TABLE (display_prefix text, key_id uuid, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    token   text;
    hit     record;
    revoked timestamptz;
BEGIN
    IF tokens IS NULL OR source IS NULL THEN
        RAISE EXCEPTION 'tokens and source must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF length(btrim(source)) = 0 THEN
        RAISE EXCEPTION 'source must name where the tokens were found' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    source := flint._checked_text('source', source, 200);
    IF cardinality(tokens) > 10000 THEN
        RAISE EXCEPTION 'at most 10000 tokens per report (got %)', cardinality(tokens)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    FOREACH token IN ARRAY tokens LOOP
        SELECT * INTO hit FROM flint._leaked_key(token);
        display_prefix := hit.display_prefix;
        key_id := hit.key_id;
        IF hit.key_id IS NULL THEN
            key_id := NULL;
            outcome := 'not_a_key';
        ELSE
            SELECT a.revoked_at INTO revoked FROM flint.api_keys a WHERE a.id = hit.key_id FOR UPDATE;
            IF revoked IS NOT NULL THEN
                outcome := 'already_revoked';
            ELSE
                UPDATE flint.api_keys AS a SET revoked_at = now(), revoked_reason = 'leaked via ' || source
                 WHERE a.id = hit.key_id;
                outcome := 'revoked';
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

------------------------------------------------------------------------------
-- Request log: partitions a week ahead, merchant index, sane purge arguments
------------------------------------------------------------------------------

-- Creates the partitions for `today` and the next 7 days (UTC), so that a
-- maintenance run that cannot get its locks (the worker waits at most
-- 100 ms, then retries a minute later) never leaves rows without their day's
-- partition; with a retention, drops whole partitions that end before
-- today - retention. A day whose rows already landed in the default
-- partition keeps them there.
CREATE OR REPLACE FUNCTION flint._maintain_request_log(today date, retention interval DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d     date;
    part  text;
    lower timestamptz;
    upper timestamptz;
BEGIN
    FOR d IN SELECT generate_series(today, today + 7, interval '1 day')::date LOOP
        part := 'request_log_' || to_char(d, 'YYYYMMDD');
        lower := d::timestamp AT TIME ZONE 'UTC';
        upper := (d + 1)::timestamp AT TIME ZONE 'UTC';
        IF to_regclass('flint.' || part) IS NULL
           AND NOT EXISTS (SELECT 1 FROM flint.request_log_default WHERE at >= lower AND at < upper) THEN
            EXECUTE format('CREATE TABLE flint.%I PARTITION OF flint.request_log FOR VALUES FROM (%L) TO (%L)',
                           part, lower, upper);
            -- Two indexes (each costs the worker on every row):
            -- "one merchant's newest rows" (what an RLS reader asks, and
            -- failures of one merchant), and "one key's newest rows" with the
            -- key's merchant (RLS readers give it; admins add
            -- merchant_id = the key's, or get a sort of the key's rows).
            EXECUTE format('CREATE INDEX %I ON flint.%I (merchant_id, at)', part || '_merchant_idx', part);
            EXECUTE format('CREATE INDEX %I ON flint.%I (key_id, merchant_id, at)', part || '_key_merchant_idx', part);
            -- A key belongs to one merchant: told so, the planner no longer
            -- multiplies the two selectivities, and reads a rarely used
            -- key's newest rows by index instead of sorting all of them
            -- (BENCHMARKS.md, RLS readers). Costs nothing per insert.
            EXECUTE format('CREATE STATISTICS flint.%I (dependencies) ON key_id, merchant_id FROM flint.%I',
                           part || '_key_merchant_stats', part);
        END IF;
    END LOOP;
    IF retention IS NOT NULL THEN
        PERFORM @extschema@.flint_purge_request_log(retention, today);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION flint_purge_request_log(older_than interval,
                                        today date DEFAULT (now() AT TIME ZONE 'UTC')::date)
    RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    real_today date := (now() AT TIME ZONE 'UTC')::date;
    cutoff     timestamptz;
    p          record;
    dropped    integer := 0;
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must be a positive interval' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- `today` exists for the worker's midnight and for tests; a day far from
    -- the real one (or infinity) would drop rows nobody meant to drop.
    IF today IS NULL OR NOT isfinite(today) OR today NOT BETWEEN real_today - 1 AND real_today + 1 THEN
        RAISE EXCEPTION 'today must be the current UTC date (give or take a day)'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The UTC date is %s.', real_today);
    END IF;
    cutoff := (today::timestamp AT TIME ZONE 'UTC') - older_than;
    FOR p IN
        SELECT c.relname
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'flint.request_log'::regclass AND c.relname ~ '^request_log_[0-9]{8}$'
           AND ((to_date(substr(c.relname, 13), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC') <= cutoff
    LOOP
        EXECUTE format('DROP TABLE flint.%I', p.relname);
        dropped := dropped + 1;
    END LOOP;
    DELETE FROM flint.request_log_default WHERE at < cutoff;
    RETURN dropped;
END
$$;

CREATE INDEX IF NOT EXISTS request_log_default_merchant_idx ON flint.request_log_default (merchant_id, at);

------------------------------------------------------------------------------
-- Protected tables: not partitioned ones, and live data only
------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION flint._require_table_owner(tbl regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT pg_has_role(flint._actor()::name, (SELECT c.relowner FROM pg_class c WHERE c.oid = tbl), 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', tbl USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = tbl) <> 'r' THEN
        RAISE EXCEPTION '% is not a plain table', tbl USING ERRCODE = 'wrong_object_type',
            HINT = 'Partitioned tables are refused: writes through the parent and reads of a partition would each bypass the other''s policies.';
    END IF;
    IF (SELECT c.relispartition FROM pg_class c WHERE c.oid = tbl) THEN
        RAISE EXCEPTION '% is a partition', tbl USING ERRCODE = 'wrong_object_type',
            HINT = 'Partitioned tables are refused: writes through the parent and reads of a partition would each bypass the other''s policies.';
    END IF;
    IF (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl)
       IN ('flint', 'pg_catalog', 'information_schema') OR
       (SELECT c.relpersistence FROM pg_class c WHERE c.oid = tbl) = 't' THEN
        RAISE EXCEPTION 'flint_keys does not guard %', tbl USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION flint_protect_table(tbl regclass, merchant_column name DEFAULT 'merchant_id',
                                    read_scope text DEFAULT NULL, write_scope text DEFAULT NULL)
    RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET client_min_messages = warning AS $$
DECLARE
    column_type regtype;
    own_merchant text;
    read_check text;
    write_check text;
    s text;
BEGIN
    PERFORM flint._require_table_owner(tbl);
    IF merchant_column IS NULL THEN
        RAISE EXCEPTION 'merchant column must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT a.atttypid::regtype INTO column_type
      FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = merchant_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % has no column "%"', tbl, merchant_column USING ERRCODE = 'undefined_column';
    END IF;
    IF column_type <> 'uuid'::regtype THEN
        RAISE EXCEPTION 'column "%" of % must be uuid, not %', merchant_column, tbl, column_type
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    FOREACH s IN ARRAY array_remove(ARRAY[read_scope, write_scope], NULL) LOOP
        PERFORM flint._check_scopes(ARRAY[s]);
        IF s LIKE '%*' THEN
            RAISE EXCEPTION USING ERRCODE = 'FK008',
                MESSAGE = format('unknown_scope: a table guard needs a concrete scope, not "%s"', s);
        END IF;
    END LOOP;

    -- Protected tables hold live data: test keys see and write none of it.
    own_merchant := format('%I = (SELECT @extschema@.flint_current_merchant()) AND (SELECT @extschema@.flint_current_mode()) = %L',
                           merchant_column, 'live');
    read_check := own_merchant || coalesce(format(' AND (SELECT @extschema@.flint_has_scope(%L))', read_scope), '');
    write_check := own_merchant || coalesce(format(' AND (SELECT @extschema@.flint_has_scope(%L))', write_scope), '');

    -- Idempotent: start from an unprotected table, in this same transaction.
    PERFORM @extschema@.flint_unprotect_table(tbl);
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('CREATE POLICY flint_read ON %s FOR SELECT USING (%s)', tbl, read_check);
    EXECUTE format('CREATE POLICY flint_insert ON %s FOR INSERT WITH CHECK (%s)', tbl, write_check);
    -- UPDATE and DELETE reach the merchant's readable rows, so that the guard
    -- trigger (not a silent zero-row result) reports a missing write scope.
    EXECUTE format('CREATE POLICY flint_update ON %s FOR UPDATE USING (%s) WITH CHECK (%s)', tbl, read_check, write_check);
    EXECUTE format('CREATE POLICY flint_delete ON %s FOR DELETE USING (%s)', tbl, read_check);
    EXECUTE format('CREATE TRIGGER flint_guard_write BEFORE INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION @extschema@.flint_guard_write(%L, %L)',
                   tbl, merchant_column, coalesce(write_scope, ''));
    -- The policies filter on the merchant column: make sure an index leads with it.
    IF NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                    WHERE i.indrelid = tbl AND a.attname = merchant_column) THEN
        EXECUTE format('CREATE INDEX ON %s (%I)', tbl, merchant_column);
    END IF;
END
$$;

------------------------------------------------------------------------------
-- Privileges
------------------------------------------------------------------------------

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA flint FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA flint FROM PUBLIC;
REVOKE ALL ON FUNCTION flint_disable_key(uuid, text), flint_enable_key(uuid),
    flint_report_leaked(text[], text) FROM PUBLIC;
-- Reading one's own context, like flint_current_merchant(): protected tables'
-- policies call it as the querying role.
GRANT EXECUTE ON FUNCTION flint_current_mode() TO PUBLIC;

-- An overload planted in the extension's schema by a role that may CREATE
-- there (say flint_authenticate(varchar)) would capture the tokens of every
-- application that binds them with that type. Say so at install time.
DO $$
DECLARE
    creators text;
BEGIN
    SELECT string_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, ', ')
      INTO creators
      FROM pg_namespace n, aclexplode(n.nspacl) a
     WHERE n.nspname = '@extschema@' AND a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner;
    IF creators IS NOT NULL THEN
        RAISE WARNING 'roles other than its owner may CREATE in schema @extschema@, where flint_keys lives: %', creators
            USING HINT = 'An overload there could capture tokens. REVOKE CREATE ON SCHEMA @extschema@ FROM those roles, and call flint functions schema-qualified.';
    END IF;
END
$$;

------------------------------------------------------------------------------
-- Metrics (for postgres_exporter: contrib/postgres_exporter/queries.yaml)
------------------------------------------------------------------------------

-- Read replicas (README "Read replicas"). A standby's log worker spools its
-- rows; its forwarder sends each batch here. origin: one run of a standby's
-- log worker; last_batch: the highest batch id of that origin inserted, in
-- the same transaction as the batch's rows, so a batch sent again after a
-- crash is refused and nothing is inserted twice.
CREATE TABLE flint.log_origins (
    origin        uuid PRIMARY KEY,
    server        text NOT NULL,
    last_batch    bigint NOT NULL,
    rows_received bigint NOT NULL DEFAULT 0,
    first_at      timestamptz NOT NULL,
    last_at       timestamptz NOT NULL
);
REVOKE ALL ON flint.log_origins FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('flint.log_origins', '');

-- One forwarded batch (binary COPY of the request-log columns, server
-- last): the rows inserted, 0 when this server already has the batch. Only
-- for the role a standby's forwarder connects as (README "Read replicas").
CREATE FUNCTION flint._receive_log_batch(origin uuid, batch_id bigint, server text, copy_rows bytea)
    RETURNS bigint AS 'MODULE_PATHNAME', 'flint_receive_log_batch'
    LANGUAGE C VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- last_used_at from a standby's forwarded rows (microseconds since
-- 2000-01-01 UTC, as the log records carry them): keys locked by someone
-- else are skipped, the next interval brings a newer use anyway.
CREATE FUNCTION flint._receive_last_used(ids uuid[], used_at bigint[]) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET session_replication_role = replica SET lock_timeout = '100ms'
AS $$
    WITH u AS MATERIALIZED (
            -- never ahead of this server's clock (plus skew): a use in the
            -- future would pin last_used_at and hide every later one
            SELECT u.id, least(timestamptz '2000-01-01 00:00:00+00' + u.at_us * interval '1 microsecond',
                               now() + interval '5 minutes') AS at
              FROM unnest(ids, used_at) AS u(id, at_us)),
         locked AS MATERIALIZED (SELECT k.id FROM flint.api_keys k WHERE k.id = ANY (ids) FOR UPDATE SKIP LOCKED)
    UPDATE flint.api_keys k SET last_used_at = u.at
      FROM locked l JOIN u ON u.id = l.id
     WHERE k.id = l.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)
$$;
REVOKE ALL ON FUNCTION flint._receive_log_batch(uuid, bigint, text, bytea),
                       flint._receive_last_used(uuid[], bigint[]) FROM PUBLIC;

-- flint_log_status() now shows every server: this one first (a standby
-- adds what it has spooled and forwarded, and its connection to the
-- primary), then each standby that forwarded rows here. Its columns change,
-- so it is dropped and created again, keeping its GRANTs.
CREATE FUNCTION flint._log_status_here(OUT queued bigint, OUT inserted bigint, OUT pending bigint,
                                       OUT refused bigint, OUT capacity integer, OUT worker_pid integer,
                                       OUT batches bigint, OUT server text, OUT role text, OUT forwarded bigint,
                                       OUT spooled bigint, OUT spool_bytes bigint, OUT primary_connection text)
    AS 'MODULE_PATHNAME', 'flint_log_status' LANGUAGE C VOLATILE PARALLEL SAFE;
REVOKE ALL ON FUNCTION flint._log_status_here() FROM PUBLIC;
DO $do$
DECLARE
    grantees text[];
    grantee text;
BEGIN
    SELECT array_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END)
      INTO grantees
      FROM pg_proc p, aclexplode(p.proacl) a
     WHERE p.oid = '@extschema@.flint_log_status()'::regprocedure
       AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner;
    DROP FUNCTION @extschema@.flint_log_status();
    CREATE FUNCTION @extschema@.flint_log_status(
        OUT queued bigint, OUT inserted bigint, OUT pending bigint, OUT refused bigint, OUT capacity integer,
        OUT worker_pid integer, OUT batches bigint, OUT server text, OUT role text, OUT forwarded bigint,
        OUT spooled bigint, OUT spool_bytes bigint, OUT primary_connection text,
        OUT last_forwarded_at timestamptz)
        RETURNS SETOF record LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT h.*, NULL::timestamptz FROM flint._log_status_here() h
        UNION ALL
        (SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, o.server, 'forwarding', sum(o.rows_received)::bigint,
                NULL, NULL, NULL, max(o.last_at)
           FROM flint.log_origins o GROUP BY o.server ORDER BY o.server)
    $$;
    REVOKE ALL ON FUNCTION @extschema@.flint_log_status() FROM PUBLIC;
    FOREACH grantee IN ARRAY coalesce(grantees, '{}') LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.flint_log_status() TO %s', grantee);
    END LOOP;
END
$do$;

-- (name, value): log rows by outcome since the server started, key-cache
-- hits and misses of every backend, the age of the oldest queued row.
CREATE FUNCTION flint._counters(OUT name text, OUT value bigint) RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'flint_counters' LANGUAGE C VOLATILE PARALLEL SAFE;

-- Verifications (and every other logged check) by outcome, cumulative since start.
CREATE VIEW flint.verification_counts AS
SELECT c.name AS outcome, c.value AS total FROM flint._counters() c
 WHERE c.name NOT IN ('cache_hits', 'cache_misses', 'worker_lag_us');

-- One row of what operators alert on.
CREATE VIEW flint.metrics AS
SELECT s.pending AS queue_depth, s.capacity::bigint AS queue_capacity, s.queued AS queued_total,
       s.inserted AS inserted_total, s.refused AS refused_total,
       (s.worker_pid IS NOT NULL)::integer AS worker_up,
       (SELECT c.value FROM flint._counters() c WHERE c.name = 'worker_lag_us') / 1e6::double precision AS worker_lag_seconds,
       (SELECT c.value FROM flint._counters() c WHERE c.name = 'cache_hits') AS cache_hits_total,
       (SELECT c.value FROM flint._counters() c WHERE c.name = 'cache_misses') AS cache_misses_total,
       k.active AS keys_active, k.expired AS keys_expired, k.revoked AS keys_revoked, k.disabled AS keys_disabled
  FROM (SELECT * FROM @extschema@.flint_log_status() LIMIT 1) s, -- this server's row
       -- From the table, as the view's owner: key_info is security_invoker and
       -- a pg_monitor role reads no key columns. Same order as key_info's status.
       (SELECT count(*) FILTER (WHERE a.revoked_at IS NULL AND NOT coalesce(a.expires_at <= now(), false)
                                  AND a.disabled_at IS NULL) AS active,
               count(*) FILTER (WHERE a.revoked_at IS NULL AND a.expires_at <= now()) AS expired,
               count(*) FILTER (WHERE a.revoked_at IS NOT NULL) AS revoked,
               count(*) FILTER (WHERE a.revoked_at IS NULL AND NOT coalesce(a.expires_at <= now(), false)
                                  AND a.disabled_at IS NOT NULL) AS disabled
          FROM flint.api_keys a) k;
REVOKE ALL ON flint.metrics, flint.verification_counts FROM PUBLIC;
REVOKE ALL ON FUNCTION flint._counters() FROM PUBLIC;
-- Monitoring roles read the metrics (the counts of keys are over all merchants).
GRANT USAGE ON SCHEMA flint TO pg_monitor;
GRANT SELECT ON flint.metrics, flint.verification_counts TO pg_monitor;
GRANT EXECUTE ON FUNCTION flint._counters(), flint_log_status() TO pg_monitor;
