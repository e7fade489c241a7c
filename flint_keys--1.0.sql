-- flint_keys 1.0: merchant-bound, scoped API keys.
-- Tables live in schema flint; functions in the extension's schema.
\echo Use "CREATE EXTENSION flint_keys" to load this file. \quit

CREATE SCHEMA flint;
REVOKE ALL ON SCHEMA flint FROM PUBLIC;

------------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------------

CREATE TABLE flint.merchants (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE flint.scopes (
    name        text PRIMARY KEY
                CHECK (length(name) <= 63 AND name ~ '^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$'),
    description text NOT NULL,
    builtin     boolean NOT NULL DEFAULT false  -- seeded by the extension; not dumped
);

INSERT INTO flint.scopes (name, description, builtin)
SELECT r || ':' || a, initcap(a) || ' ' || r, true
FROM unnest(ARRAY['payments', 'refunds', 'customers', 'payouts', 'webhooks', 'logs', 'keys']) AS r,
     unnest(ARRAY['read', 'write']) AS a;

CREATE TABLE flint.api_keys (
    id                         uuid PRIMARY KEY,
    merchant_id                uuid NOT NULL REFERENCES flint.merchants (id),
    name                       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    mode                       text NOT NULL CHECK (mode IN ('live', 'test')),
    scopes                     text[] NOT NULL CHECK (cardinality(scopes) > 0),
    metadata                   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    display_prefix             text NOT NULL,
    secret_hash                bytea NOT NULL CHECK (length(secret_hash) = 32),  -- SHA-256 of the token
    previous_secret_hash       bytea CHECK (length(previous_secret_hash) = 32),  -- before the last rotation
    previous_secret_expires_at timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    created_by                 text NOT NULL,
    expires_at                 timestamptz,
    revoked_at                 timestamptz,
    revoked_reason             text,
    last_used_at               timestamptz  -- maintained by the log worker
);
CREATE INDEX api_keys_merchant_idx ON flint.api_keys (merchant_id);

CREATE TABLE flint.key_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    key_id      uuid NOT NULL,
    merchant_id uuid NOT NULL,
    event       text NOT NULL CHECK (event IN ('created', 'updated', 'rotated', 'revoked', 'deleted')),
    actor       text NOT NULL,
    old         jsonb,
    new         jsonb
);
CREATE INDEX key_events_key_idx ON flint.key_events (key_id, at);
CREATE INDEX key_events_merchant_idx ON flint.key_events (merchant_id, at);

-- One row per verification or guarded write, partitioned by day (UTC). The
-- log worker creates partitions ahead; the default partition catches the rest.
CREATE TABLE flint.request_log (
    at                 timestamptz NOT NULL,
    key_id             uuid,
    display_prefix     text,
    merchant_id        uuid,
    requested_merchant uuid,
    scope              text,
    outcome            text NOT NULL,
    sqlstate           text NOT NULL,
    client_addr        inet,
    application_name   text,
    request_id         text,
    backend_pid        integer NOT NULL,
    source             text NOT NULL
) PARTITION BY RANGE (at);
-- (key_id, at) serves "newest first" by scanning backwards, and takes new
-- rows at its right edge, where B-tree inserts are cheapest.
-- Indexes are per partition, not on the parent: an index on the parent would
-- be re-created by pg_restore's ATTACH PARTITION and then clash with the
-- dumped partition indexes. flint._maintain_request_log adds them to each day.
CREATE TABLE flint.request_log_default PARTITION OF flint.request_log DEFAULT;
CREATE INDEX request_log_default_key_idx ON flint.request_log_default (key_id, at);
CREATE INDEX request_log_default_failures_idx ON flint.request_log_default (merchant_id, at) WHERE outcome <> 'ok';

SELECT pg_catalog.pg_extension_config_dump('flint.merchants', '');
SELECT pg_catalog.pg_extension_config_dump('flint.scopes', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('flint.api_keys', '');
SELECT pg_catalog.pg_extension_config_dump('flint.key_events', '');
SELECT pg_catalog.pg_extension_config_dump('flint.key_events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('flint.request_log_default', '');

------------------------------------------------------------------------------
-- C functions
------------------------------------------------------------------------------

-- Verification and the auth context are VOLATILE (they log, and read the
-- latest committed keys) and PARALLEL UNSAFE (backend-local state and the
-- shared log queue). The context readers are STABLE within a statement and
-- PARALLEL RESTRICTED: the context is in this backend's memory only, which
-- parallel workers do not share.
CREATE FUNCTION flint_verify_key(secret text, scope text, merchant uuid) RETURNS uuid
    AS 'MODULE_PATHNAME', 'flint_verify_key' LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION flint_check_key(secret text, scope text, merchant uuid)
    RETURNS TABLE (ok boolean, key_id uuid, code text, sqlstate text)
    AS 'MODULE_PATHNAME', 'flint_check_key' LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;

CREATE FUNCTION flint_authenticate(secret text)
    RETURNS TABLE (key_id uuid, merchant_id uuid, mode text, scopes text[])
    AS 'MODULE_PATHNAME', 'flint_authenticate' LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;

CREATE FUNCTION flint_current_merchant() RETURNS uuid
    AS 'MODULE_PATHNAME', 'flint_current_merchant' LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION flint_current_key() RETURNS uuid
    AS 'MODULE_PATHNAME', 'flint_current_key' LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION flint_has_scope(scope text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'flint_has_scope' LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION flint_require_scope(scope text) RETURNS void
    AS 'MODULE_PATHNAME', 'flint_require_scope' LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION flint_flush_log() RETURNS void
    AS 'MODULE_PATHNAME', 'flint_flush_log' LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- queued: rows ever queued; inserted: rows the worker has finished with;
-- pending: rows in the queue now; refused: verifications failed closed
-- because the queue stayed full; batches: insert transactions (all since the
-- server started).
CREATE FUNCTION flint_log_status(OUT queued bigint, OUT inserted bigint, OUT pending bigint,
                                 OUT refused bigint, OUT capacity integer, OUT worker_pid integer,
                                 OUT batches bigint)
    AS 'MODULE_PATHNAME', 'flint_log_status' LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE FUNCTION flint._current_scopes() RETURNS text[]
    AS 'MODULE_PATHNAME', 'flint_current_scopes' LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION flint._current_mode() RETURNS text
    AS 'MODULE_PATHNAME', 'flint_current_mode' LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION flint._new_token(mode text, key_id uuid) RETURNS text
    AS 'MODULE_PATHNAME', 'flint_new_token' LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION flint._check_scopes(scopes text[]) RETURNS text[]
    AS 'MODULE_PATHNAME', 'flint_check_scopes' LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION flint._uncovered_scope(held text[], wanted text[]) RETURNS text
    AS 'MODULE_PATHNAME', 'flint_uncovered_scope' LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION flint._actor() RETURNS text
    AS 'MODULE_PATHNAME', 'flint_actor' LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION flint._invalidate_key_cache() RETURNS trigger
    AS 'MODULE_PATHNAME', 'flint_invalidate_key_cache' LANGUAGE C;

-- Any committed change to what verification reads reloads every backend's cache.
CREATE TRIGGER invalidate_key_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON flint.api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION flint._invalidate_key_cache();
CREATE TRIGGER invalidate_key_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON flint.merchants
    FOR EACH STATEMENT EXECUTE FUNCTION flint._invalidate_key_cache();
CREATE TRIGGER invalidate_key_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON flint.scopes
    FOR EACH STATEMENT EXECUTE FUNCTION flint._invalidate_key_cache();

------------------------------------------------------------------------------
-- Audit trail: every change to a key, never its hash
------------------------------------------------------------------------------

CREATE FUNCTION flint._key_events_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_row jsonb;
    new_row jsonb;
    kind    text;
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
            kind := 'revoked';
        ELSE
            kind := 'updated';
        END IF;
        -- Keep only what changed; last_used_at alone is not an event.
        SELECT jsonb_object_agg(o.key, o.value), jsonb_object_agg(o.key, new_row -> o.key)
          INTO old_row, new_row
          FROM jsonb_each(old_row) AS o
         WHERE o.key <> 'last_used_at' AND (new_row -> o.key) IS DISTINCT FROM o.value;
        IF old_row IS NULL AND kind = 'updated' THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO flint.key_events (key_id, merchant_id, event, actor, old, new)
    VALUES (COALESCE(NEW.id, OLD.id), COALESCE(NEW.merchant_id, OLD.merchant_id), kind,
            flint._actor(), old_row, new_row);
    RETURN NULL;
END
$$;

CREATE TRIGGER key_events AFTER INSERT OR DELETE ON flint.api_keys
    FOR EACH ROW EXECUTE FUNCTION flint._key_events_trigger();
-- The log worker's last_used_at updates are not events: skip the trigger
-- call altogether rather than have it find nothing changed.
CREATE TRIGGER key_events_update AFTER UPDATE ON flint.api_keys
    FOR EACH ROW
    WHEN ((OLD.id, OLD.merchant_id, OLD.name, OLD.mode, OLD.scopes, OLD.metadata, OLD.display_prefix,
           OLD.secret_hash, OLD.previous_secret_hash, OLD.previous_secret_expires_at, OLD.created_at,
           OLD.created_by, OLD.expires_at, OLD.revoked_at, OLD.revoked_reason)
          IS DISTINCT FROM
          (NEW.id, NEW.merchant_id, NEW.name, NEW.mode, NEW.scopes, NEW.metadata, NEW.display_prefix,
           NEW.secret_hash, NEW.previous_secret_hash, NEW.previous_secret_expires_at, NEW.created_at,
           NEW.created_by, NEW.expires_at, NEW.revoked_at, NEW.revoked_reason))
    EXECUTE FUNCTION flint._key_events_trigger();

------------------------------------------------------------------------------
-- The key as a DBA reads it
------------------------------------------------------------------------------

CREATE VIEW flint.key_info WITH (security_invoker = true) AS
SELECT k.id AS key_id, k.merchant_id, k.name, k.mode, k.display_prefix, k.scopes, k.metadata,
       CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked'
            WHEN k.expires_at <= now() THEN 'expired'
            ELSE 'active' END AS status,
       k.created_at, k.created_by, k.expires_at, k.revoked_at, k.revoked_reason, k.last_used_at,
       k.previous_secret_expires_at
  FROM flint.api_keys k;

------------------------------------------------------------------------------
-- Management
------------------------------------------------------------------------------

-- Inside an authenticated transaction, management acts only for the
-- context's merchant and needs keys:read / keys:write (README: "Auth context and row-level security").
CREATE FUNCTION flint._authorize(merchant uuid, needed text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF @extschema@.flint_current_key() IS NULL THEN
        -- Outside a context only an admin may manage keys: a role with
        -- BYPASSRLS (which already reads every merchant's rows) or a superuser.
        IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = flint._actor() AND (r.rolsuper OR r.rolbypassrls)) THEN
            RAISE EXCEPTION 'key management outside an authenticated transaction needs an admin role'
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Call flint_authenticate(secret) with a key holding keys:read or keys:write, or use a role with BYPASSRLS.';
        END IF;
        RETURN;
    END IF;
    PERFORM @extschema@.flint_require_scope(needed);
    IF merchant IS DISTINCT FROM @extschema@.flint_current_merchant() THEN
        RAISE EXCEPTION USING ERRCODE = 'FK006',
            MESSAGE = format('wrong_merchant: the authenticated key acts for merchant %s, not %s',
                             @extschema@.flint_current_merchant(), coalesce(merchant::text, 'NULL'));
    END IF;
END
$$;

CREATE FUNCTION flint._check_grantable(scopes text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    beyond text;
BEGIN
    IF @extschema@.flint_current_key() IS NULL THEN
        RETURN;
    END IF;
    beyond := flint._uncovered_scope(flint._current_scopes(), scopes);
    IF beyond IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'FK005',
            MESSAGE = format('missing_scope: the authenticated key cannot grant scope "%s" it does not hold', beyond);
    END IF;
END
$$;

-- A key acting inside a context manages only keys of its own mode whose
-- scopes it holds itself: otherwise rotating a stronger key would hand it
-- that key's new secret.
CREATE FUNCTION flint._authorize_key(k flint.api_keys, needed text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    beyond text;
BEGIN
    PERFORM flint._authorize(k.merchant_id, needed);
    IF @extschema@.flint_current_key() IS NULL OR needed = 'keys:read' THEN
        RETURN;
    END IF;
    IF k.mode IS DISTINCT FROM flint._current_mode() THEN
        RAISE EXCEPTION USING ERRCODE = 'FK005',
            MESSAGE = format('missing_scope: a %s key cannot manage %s keys', flint._current_mode(), k.mode);
    END IF;
    beyond := flint._uncovered_scope(flint._current_scopes(), k.scopes);
    IF beyond IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'FK005',
            MESSAGE = format('missing_scope: key %s… holds scope "%s", which the authenticated key lacks',
                             k.display_prefix, beyond);
    END IF;
END
$$;

CREATE FUNCTION flint._key_for_update(key_id uuid, needed text) RETURNS flint.api_keys
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k flint.api_keys;
BEGIN
    IF key_id IS NULL THEN
        RAISE EXCEPTION 'key_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO k FROM flint.api_keys AS a WHERE a.id = _key_for_update.key_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no key with id %', key_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM flint._authorize_key(k, needed);
    RETURN k;
END
$$;

CREATE FUNCTION flint._checked_expiry(expires_at timestamptz) RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF expires_at = 'infinity' THEN
        RETURN NULL;
    END IF;
    IF expires_at <= now() THEN
        RAISE EXCEPTION 'expires_at must be in the future' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN expires_at;
END
$$;

CREATE FUNCTION flint_create_key(merchant uuid, name text, scopes text[],
                                 expires_at timestamptz DEFAULT NULL, mode text DEFAULT 'live',
                                 metadata jsonb DEFAULT '{}')
    RETURNS TABLE (key_id uuid, secret text, display_prefix text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET check_function_bodies = on AS $$
DECLARE
    new_id     uuid := gen_random_uuid();
    token      text;
    key_scopes text[];
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
        RAISE EXCEPTION 'unknown key mode "%"', mode USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use ''live'' or ''test''.';
    END IF;
    IF jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    key_scopes := flint._check_scopes(scopes);
    PERFORM flint._check_grantable(key_scopes);
    IF @extschema@.flint_current_key() IS NOT NULL AND mode <> flint._current_mode() THEN
        RAISE EXCEPTION USING ERRCODE = 'FK005',
            MESSAGE = format('missing_scope: a %s key cannot create %s keys', flint._current_mode(), mode);
    END IF;
    token := flint._new_token(mode, new_id);
    INSERT INTO flint.api_keys AS k (id, merchant_id, name, mode, scopes, metadata, display_prefix,
                                     secret_hash, created_by, expires_at)
    VALUES (new_id, merchant, name, mode, key_scopes, metadata, left(token, 16),
            sha256(convert_to(token, 'UTF8')), flint._actor(), flint._checked_expiry(expires_at));
    key_id := new_id;
    secret := token;
    display_prefix := left(token, 16);
    RETURN NEXT;
END
$$;

CREATE FUNCTION flint_list_keys(merchant uuid, include_revoked boolean DEFAULT false)
    RETURNS SETOF flint.key_info
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM flint._authorize(merchant, 'keys:read');
    RETURN QUERY SELECT * FROM flint.key_info AS i
                  WHERE i.merchant_id = merchant AND (include_revoked OR i.revoked_at IS NULL)
                  ORDER BY i.created_at, i.key_id;
END
$$;

CREATE FUNCTION flint_get_key(key_id uuid) RETURNS flint.key_info
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    info flint.key_info;
BEGIN
    IF key_id IS NULL THEN
        RAISE EXCEPTION 'key_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO info FROM flint.key_info AS i WHERE i.key_id = flint_get_key.key_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no key with id %', key_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM flint._authorize(info.merchant_id, 'keys:read');
    RETURN info;
END
$$;

CREATE FUNCTION flint_update_key(key_id uuid, name text DEFAULT NULL, scopes text[] DEFAULT NULL,
                                 expires_at timestamptz DEFAULT NULL, metadata jsonb DEFAULT NULL)
    RETURNS flint.key_info
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k          flint.api_keys := flint._key_for_update(key_id, 'keys:write');
    key_scopes text[];
    info       flint.key_info;
BEGIN
    IF k.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'key % is revoked and cannot be changed', k.display_prefix
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF name IS NOT NULL AND (length(btrim(name)) = 0 OR length(name) > 200) THEN
        RAISE EXCEPTION 'a key name must have 1 to 200 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF metadata IS NOT NULL AND jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF scopes IS NOT NULL THEN
        key_scopes := flint._check_scopes(scopes);
        PERFORM flint._check_grantable(key_scopes);
    END IF;
    UPDATE flint.api_keys AS a
       SET name = COALESCE(flint_update_key.name, a.name),
           scopes = COALESCE(key_scopes, a.scopes),
           expires_at = CASE WHEN flint_update_key.expires_at IS NULL THEN a.expires_at
                             ELSE flint._checked_expiry(flint_update_key.expires_at) END,
           metadata = COALESCE(flint_update_key.metadata, a.metadata)
     WHERE a.id = k.id;
    SELECT * INTO info FROM flint.key_info AS i WHERE i.key_id = k.id;
    RETURN info;
END
$$;

CREATE FUNCTION flint_revoke_key(key_id uuid, reason text DEFAULT NULL) RETURNS flint.key_info
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k    flint.api_keys := flint._key_for_update(key_id, 'keys:write');
    info flint.key_info;
BEGIN
    -- Revoking twice keeps the first revocation: time and reason stay as they were.
    IF k.revoked_at IS NULL THEN
        UPDATE flint.api_keys AS a SET revoked_at = now(), revoked_reason = reason WHERE a.id = k.id;
    END IF;
    SELECT * INTO info FROM flint.key_info AS i WHERE i.key_id = k.id;
    RETURN info;
END
$$;

CREATE FUNCTION flint._rotate_key(target uuid, grace interval)
    RETURNS TABLE (key_id uuid, secret text, display_prefix text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k     flint.api_keys := flint._key_for_update(target, 'keys:write');
    token text;
BEGIN
    IF grace IS NULL OR grace < interval '0' OR grace > interval '30 days' THEN
        RAISE EXCEPTION 'grace must be between 0 and 30 days' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF k.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'key % is revoked and cannot be rotated', k.display_prefix
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF k.expires_at <= now() THEN
        RAISE EXCEPTION 'key % has expired and cannot be rotated', k.display_prefix
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Create a new key.';
    END IF;
    token := flint._new_token(k.mode, k.id);
    -- Only the secret just replaced stays valid for the grace; an older one ends now.
    UPDATE flint.api_keys AS a
       SET previous_secret_hash = a.secret_hash,
           previous_secret_expires_at = now() + grace,
           secret_hash = sha256(convert_to(token, 'UTF8')),
           display_prefix = left(token, 16)
     WHERE a.id = k.id;
    key_id := k.id;
    secret := token;
    display_prefix := left(token, 16);
    RETURN NEXT;
END
$$;

-- SQL, not PL/pgSQL: the documented signature names an input and an output key_id.
CREATE FUNCTION flint_rotate_key(key_id uuid, grace interval DEFAULT '0')
    RETURNS TABLE (key_id uuid, secret text, display_prefix text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM flint._rotate_key($1, $2) $$;

------------------------------------------------------------------------------
-- Request log: partitions, purge, support views
------------------------------------------------------------------------------

-- Creates the partitions for `today` and the next two days (UTC) and, with a
-- retention, drops whole partitions that end before today - retention.
-- A day whose rows already landed in the default partition (the worker was
-- not up yet) keeps them there: moving rows between partitions would hide
-- them from concurrent readers. Such rows are purged by DELETE instead.
CREATE FUNCTION flint._maintain_request_log(today date, retention interval DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d     date;
    part  text;
    lower timestamptz;
    upper timestamptz;
BEGIN
    FOR d IN SELECT generate_series(today, today + 2, interval '1 day')::date LOOP
        part := 'request_log_' || to_char(d, 'YYYYMMDD');
        lower := d::timestamp AT TIME ZONE 'UTC';
        upper := (d + 1)::timestamp AT TIME ZONE 'UTC';
        IF to_regclass('flint.' || part) IS NULL
           AND NOT EXISTS (SELECT 1 FROM flint.request_log_default WHERE at >= lower AND at < upper) THEN
            EXECUTE format('CREATE TABLE flint.%I PARTITION OF flint.request_log FOR VALUES FROM (%L) TO (%L)',
                           part, lower, upper);
            -- "rows of one key, newest first" and "failures of one merchant"
            EXECUTE format('CREATE INDEX %I ON flint.%I (key_id, at)', part || '_key_idx', part);
            EXECUTE format('CREATE INDEX %I ON flint.%I (merchant_id, at) WHERE outcome <> %L',
                           part || '_failures_idx', part, 'ok');
        END IF;
    END LOOP;
    IF retention IS NOT NULL THEN
        PERFORM @extschema@.flint_purge_request_log(retention, today);
    END IF;
END
$$;

-- Drops every daily partition that ends before (today - older_than), and
-- deletes such rows from the default partition. Returns partitions dropped.
CREATE FUNCTION flint_purge_request_log(older_than interval,
                                        today date DEFAULT (now() AT TIME ZONE 'UTC')::date)
    RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cutoff  timestamptz := (today::timestamp AT TIME ZONE 'UTC') - older_than;
    p       record;
    dropped integer := 0;
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must be a positive interval' USING ERRCODE = 'invalid_parameter_value';
    END IF;
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

-- Support: the newest requests of each key, and a per-key, per-outcome summary.
CREATE VIEW flint.recent_requests WITH (security_invoker = true) AS
SELECT l.at, l.key_id, l.display_prefix, l.merchant_id, l.requested_merchant, l.scope, l.outcome, l.sqlstate,
       l.source, l.client_addr, l.application_name, l.request_id, l.backend_pid
  FROM flint.request_log AS l
 WHERE l.at > now() - interval '1 day';

CREATE VIEW flint.request_summary WITH (security_invoker = true) AS
SELECT l.key_id, min(l.display_prefix) AS display_prefix, l.merchant_id, l.outcome, count(*) AS requests,
       min(l.at) AS first_at, max(l.at) AS last_at
  FROM flint.request_log AS l
 GROUP BY l.key_id, l.merchant_id, l.outcome;

------------------------------------------------------------------------------
-- Row-level security: a role without BYPASSRLS sees only the authenticated
-- merchant's rows, and nothing outside a context. The subselect makes the
-- planner evaluate the context once per statement, not once per row.
------------------------------------------------------------------------------

ALTER TABLE flint.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE flint.key_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE flint.request_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_isolation ON flint.api_keys
    USING (merchant_id = (SELECT @extschema@.flint_current_merchant()));
CREATE POLICY merchant_isolation ON flint.key_events
    USING (merchant_id = (SELECT @extschema@.flint_current_merchant()));
CREATE POLICY merchant_isolation ON flint.request_log
    USING (merchant_id = (SELECT @extschema@.flint_current_merchant()));

------------------------------------------------------------------------------
-- Guarded application tables
------------------------------------------------------------------------------

CREATE FUNCTION flint_guard_write() RETURNS trigger
    AS 'MODULE_PATHNAME', 'flint_guard_write' LANGUAGE C;

-- Confines a table of the application to the authenticated merchant:
-- SELECT needs read_scope, INSERT/UPDATE/DELETE need write_scope (NULL: any
-- key of the merchant), and every write by a role subject to RLS goes
-- through flint_guard_write, which raises missing_scope / wrong_merchant and
-- logs the write. Idempotent. Only the table's owner (or a member of the
-- owning role) may call it.
CREATE FUNCTION flint._require_table_owner(tbl regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT pg_has_role(flint._actor()::name, (SELECT c.relowner FROM pg_class c WHERE c.oid = tbl), 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', tbl USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = tbl) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', tbl USING ERRCODE = 'wrong_object_type';
    END IF;
    IF (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl)
       IN ('flint', 'pg_catalog', 'information_schema') THEN
        RAISE EXCEPTION 'flint_keys does not guard %', tbl USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

CREATE FUNCTION flint_protect_table(tbl regclass, merchant_column name DEFAULT 'merchant_id',
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

    own_merchant := format('%I = (SELECT @extschema@.flint_current_merchant())', merchant_column);
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

-- Removes what flint_protect_table added (its index stays).
CREATE FUNCTION flint_unprotect_table(tbl regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET client_min_messages = warning AS $$
DECLARE
    policy text;
BEGIN
    PERFORM flint._require_table_owner(tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS flint_guard_write ON %s', tbl);
    FOREACH policy IN ARRAY ARRAY['flint_read', 'flint_insert', 'flint_update', 'flint_delete'] LOOP
        EXECUTE format('DROP POLICY IF EXISTS %I ON %s', policy, tbl);
    END LOOP;
    EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', tbl);
END
$$;

------------------------------------------------------------------------------
-- Privileges: nothing here is for PUBLIC but reading one's own auth context.
------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA flint FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA flint FROM PUBLIC;
REVOKE ALL ON FUNCTION flint_verify_key(text, text, uuid), flint_check_key(text, text, uuid),
    flint_authenticate(text), flint_require_scope(text), flint_flush_log(),
    flint_create_key(uuid, text, text[], timestamptz, text, jsonb), flint_list_keys(uuid, boolean),
    flint_get_key(uuid), flint_update_key(uuid, text, text[], timestamptz, jsonb),
    flint_revoke_key(uuid, text), flint_rotate_key(uuid, interval),
    flint_purge_request_log(interval, date), flint_log_status(), flint_protect_table(regclass, name, text, text),
    flint_unprotect_table(regclass) FROM PUBLIC;
-- RLS policies and applications call these as any role: they only read this
-- transaction's own context.
GRANT EXECUTE ON FUNCTION flint_current_merchant(), flint_current_key(), flint_has_scope(text) TO PUBLIC;
-- A trigger function cannot be called directly; table owners need EXECUTE to
-- attach it (flint_protect_table runs as its caller).
GRANT EXECUTE ON FUNCTION flint_guard_write() TO PUBLIC;
