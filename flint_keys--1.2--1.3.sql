-- flint_keys 1.2 -> 1.3 (in development): no merchant, routine or load can
-- refuse another merchant. Key events and cache invalidation fire whatever
-- session_replication_role is; the key-events channel is a wake-up carrying
-- only the event's id; a purge never makes the log worker wait behind a
-- reader.
\echo Use "ALTER EXTENSION flint_keys UPDATE TO '1.3'" to load this file. \quit

------------------------------------------------------------------------------
-- Key events: a wake-up only, and for every committed change
------------------------------------------------------------------------------

-- PostgreSQL lets any role LISTEN and NOTIFY on any channel: the payload is
-- the event's id and nothing else. A listener reads the event from
-- flint.key_events, where RLS and GRANTs apply, so a listener learns nothing
-- it may not read and a forged notification misleads nobody.
CREATE OR REPLACE FUNCTION flint._key_events_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_row  jsonb;
    new_row  jsonb;
    kind     text;
    event_id bigint;
    at       timestamptz := clock_timestamp();
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
            flint._actor(), old_row, new_row)
    RETURNING id INTO event_id;
    -- Delivered to listeners at commit only: the event's id, nothing else.
    PERFORM pg_notify('flint_key_events', event_id::text);
    RETURN NULL;
END
$$;

-- session_replication_role = replica (data-fix sessions, pg_restore
-- --disable-triggers, logical-replication apply) skips ordinary triggers: a
-- revoke made there would never reach the key caches, nor key_events. ALWAYS
-- triggers fire in every role. The log worker's own bookkeeping stays
-- cheap: key_events_update's WHEN clause leaves last_used_at and the leased
-- quota columns out, and the invalidation trigger ignores the worker.
--
-- The log worker's last_used_at UPDATE ran under session_replication_role =
-- replica and skipped every trigger; with ALWAYS triggers it would compare
-- two to_jsonb() of every row it writes. A cheap first term skips that for
-- the worker's (and the forwarder's) bookkeeping: true only in the log
-- worker and inside flint._receive_last_used, false for everyone else.
CREATE FUNCTION flint._bookkeeping_now() RETURNS boolean
    AS 'MODULE_PATHNAME', 'flint_bookkeeping_now' LANGUAGE C VOLATILE PARALLEL SAFE;
DROP TRIGGER key_events_update ON flint.api_keys;
CREATE TRIGGER key_events_update AFTER UPDATE ON flint.api_keys
    FOR EACH ROW
    WHEN (NOT flint._bookkeeping_now()
          AND (to_jsonb(OLD) - 'last_used_at' - 'remaining' - 'quota_period_start')
              IS DISTINCT FROM (to_jsonb(NEW) - 'last_used_at' - 'remaining' - 'quota_period_start'))
    EXECUTE FUNCTION flint._key_events_trigger();
ALTER TABLE flint.api_keys ENABLE ALWAYS TRIGGER invalidate_key_cache;
ALTER TABLE flint.api_keys ENABLE ALWAYS TRIGGER key_events;
ALTER TABLE flint.api_keys ENABLE ALWAYS TRIGGER key_events_update;
ALTER TABLE flint.merchants ENABLE ALWAYS TRIGGER invalidate_key_cache;
ALTER TABLE flint.scopes ENABLE ALWAYS TRIGGER invalidate_key_cache;

------------------------------------------------------------------------------
-- Purge and retention never queue an exclusive lock in front of the worker
------------------------------------------------------------------------------

-- Dropping a day's partition takes an ACCESS EXCLUSIVE lock on
-- flint.request_log; queued behind a reader's lock it would hold up every
-- insert behind it. So each DROP waits at most lock_timeout (100 ms), is
-- tried again a few times, and a partition still in use is left for the
-- next purge (a WARNING names it; the function returns what it dropped).
-- The worker's inserts wait at most those 100 ms; past its own lock timeout
-- a batch goes to the durable spool (README "Request log").
CREATE OR REPLACE FUNCTION flint_purge_request_log(older_than interval,
                                        today date DEFAULT (now() AT TIME ZONE 'UTC')::date)
    RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '100ms' AS $$
DECLARE
    real_today date := (now() AT TIME ZONE 'UTC')::date;
    cutoff     timestamptz;
    p          record;
    dropped    integer := 0;
    busy       text[] := '{}';
    attempt    integer;
    tries      integer := 5;
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
    -- Rows not yet summed into flint.usage stay until they are: rollups
    -- outlive the log, and must count what it had (NULL: no mark, no limit).
    cutoff := least(cutoff, (SELECT w.rolled_up_to FROM flint.usage_watermark AS w));
    -- The log worker's retention tries each partition once and comes back a
    -- minute later: it must not sleep with leases and the queue waiting.
    IF EXISTS (SELECT FROM pg_stat_activity a
                WHERE a.pid = pg_backend_pid() AND a.backend_type = 'flint_keys log worker') THEN
        tries := 1;
    END IF;
    FOR p IN
        SELECT c.relname
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'flint.request_log'::regclass AND c.relname ~ '^request_log_[0-9]{8}$'
           AND ((to_date(substr(c.relname, 13), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC') <= cutoff
         ORDER BY c.relname
    LOOP
        -- Retries only while nothing is dropped yet: once a DROP succeeded
        -- this transaction holds the parent's lock, and must not sleep on it.
        FOR attempt IN 1..CASE WHEN dropped = 0 THEN tries ELSE 1 END LOOP
            BEGIN
                EXECUTE format('DROP TABLE flint.%I', p.relname);
                dropped := dropped + 1;
                EXIT;
            EXCEPTION WHEN lock_not_available THEN
                IF attempt = tries OR dropped > 0 THEN
                    busy := busy || p.relname::text;
                ELSE
                    PERFORM pg_sleep(0.05 * attempt);
                END IF;
            END;
        END LOOP;
    END LOOP;
    BEGIN
        DELETE FROM flint.request_log_default WHERE at < cutoff;
    EXCEPTION WHEN lock_not_available THEN
        busy := busy || 'request_log_default'::text;
    END;
    IF cardinality(busy) > 0 THEN
        RAISE WARNING 'flint_keys: % of the request log % in use by other sessions and % kept',
                      array_to_string(busy, ', '), CASE WHEN cardinality(busy) = 1 THEN 'is' ELSE 'are' END,
                      CASE WHEN cardinality(busy) = 1 THEN 'was' ELSE 'were' END
            USING HINT = 'Run the purge again later; it never waits more than 100 ms for a lock, so that '
                         'verifications are not held up behind it.';
    END IF;
    RETURN dropped;
END
$$;

------------------------------------------------------------------------------
-- flint_log_status(): a primary's own spooled batches are not "forwarding"
------------------------------------------------------------------------------

-- A primary whose inserts were held up spools its rows and inserts them
-- later, each batch once (flint.log_origins remembers it, as for a
-- standby's forwarded batches); those are this server's own rows, not a
-- standby forwarding, so the status lists them under this server alone.
CREATE OR REPLACE FUNCTION flint_log_status(
    OUT queued bigint, OUT inserted bigint, OUT pending bigint, OUT refused bigint, OUT capacity integer,
    OUT worker_pid integer, OUT batches bigint, OUT server text, OUT role text, OUT forwarded bigint,
    OUT spooled bigint, OUT spool_bytes bigint, OUT primary_connection text,
    OUT last_forwarded_at timestamptz)
    RETURNS SETOF record LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH here AS MATERIALIZED (SELECT * FROM flint._log_status_here())
    SELECT h.*, NULL::timestamptz FROM here h
    UNION ALL
    (SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, o.server, 'forwarding', sum(o.rows_received)::bigint,
            NULL, NULL, NULL, max(o.last_at)
       FROM flint.log_origins o
      WHERE o.server IS DISTINCT FROM (SELECT h.server FROM here h)
      GROUP BY o.server ORDER BY o.server)
$$;

------------------------------------------------------------------------------
-- Forwarded last_used_at: bad input never moves a key's last use
------------------------------------------------------------------------------

-- The statement the log worker runs for its own verifications, in C: one
-- home for the rule (never earlier than what is stored, never ahead of
-- now() + 5 min, locked keys skipped). Arrays of different lengths are
-- refused and pairs with a NULL skipped: a NULL time would have become
-- now() + 5 min (least() ignores NULLs) and hidden the key from
-- flint.unused_keys. It writes only last_used_at: no key cache reloads.
CREATE OR REPLACE FUNCTION flint._receive_last_used(ids uuid[], used_at bigint[]) RETURNS void
    AS 'MODULE_PATHNAME', 'flint_receive_last_used' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET session_replication_role = replica SET lock_timeout = '100ms';

------------------------------------------------------------------------------
-- One home per rule; leftovers go
------------------------------------------------------------------------------

-- The quota period of a changed quota, by the lease's own rule (C).
CREATE OR REPLACE FUNCTION flint._quota_period_start(refill_interval text, at timestamptz) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'flint_quota_period_start' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- A revoked key's limits are final, as its other settings are: clearing
-- them is refused as setting them is.
CREATE OR REPLACE FUNCTION @extschema@.flint_clear_key_limits(key_id uuid, kinds text[] DEFAULT ARRAY['rate', 'quota', 'ips'])
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
    PERFORM flint._refuse_revoked(k, ' and cannot be changed');
    n := k;
    IF 'rate' = ANY (kinds) THEN n.rate_limit := NULL; n.rate_window := NULL; END IF;
    IF 'quota' = ANY (kinds) THEN n.remaining := NULL; n.refill_amount := NULL; n.refill_interval := NULL; END IF;
    IF 'ips' = ANY (kinds) THEN n.allowed_ips := NULL; END IF;
    RETURN flint._store_limits(k, n);
END
$$;

-- Tokens are minted by flint._mint_token since 1.2; nothing calls this.
DROP FUNCTION flint._new_token(text, uuid);

------------------------------------------------------------------------------
-- Warnings at install and update time
------------------------------------------------------------------------------

-- CREATE EXTENSION and every update end with this. An overload planted in
-- the extension's schema by a role that may CREATE there (say
-- flint_authenticate(varchar)) would capture the tokens of every
-- application that binds them with that type. And only the database the
-- log worker connects to (flint.database) can verify: anywhere else every
-- verification fails, so say it now rather than at the first call.
CREATE FUNCTION flint._install_checks() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ext_schema name;
    creators   text;
    log_db     text := current_setting('flint.database', true);
BEGIN
    SELECT n.nspname INTO ext_schema
      FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'flint_keys';
    SELECT string_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, ', ')
      INTO creators
      FROM pg_namespace n, aclexplode(n.nspacl) a
     WHERE n.nspname = ext_schema AND a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner;
    IF creators IS NOT NULL THEN
        RAISE WARNING 'roles other than its owner may CREATE in schema %, where flint_keys lives: %', ext_schema, creators
            USING HINT = format('An overload there could capture tokens. REVOKE CREATE ON SCHEMA %I FROM those roles, '
                                'and call flint functions schema-qualified.', ext_schema);
    END IF;
    IF log_db IS NULL THEN
        RAISE WARNING 'flint_keys is not in shared_preload_libraries: keys can be managed, but not verified'
            USING HINT = 'Add flint_keys to shared_preload_libraries in postgresql.conf and restart the server.';
    ELSIF log_db <> current_database() THEN
        RAISE WARNING 'flint_keys was installed in database "%", but its log worker writes the request log of database "%" (flint.database): verification here fails',
                      current_database(), log_db
            USING HINT = format('Set flint.database = %L in postgresql.conf and restart, or install flint_keys in database %I.',
                                current_database(), log_db);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION flint._install_checks() FROM PUBLIC;
------------------------------------------------------------------------------
-- Roles: named scope bundles of one merchant. A key's effective scopes are
-- its own and its roles'; the key cache resolves them when it loads the key,
-- and a change to a role reloads the caches like any key change.
------------------------------------------------------------------------------
CREATE TABLE flint.roles (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    merchant_id uuid NOT NULL REFERENCES flint.merchants (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, name)
);
CREATE TABLE flint.key_roles (
    key_id      uuid NOT NULL REFERENCES flint.api_keys (id) ON DELETE CASCADE,
    role_id     uuid NOT NULL REFERENCES flint.roles (id),
    merchant_id uuid NOT NULL REFERENCES flint.merchants (id), -- the key's and the role's: RLS
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, role_id)
);
CREATE INDEX key_roles_role_id_idx ON flint.key_roles (role_id);
ALTER TABLE flint.roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE flint.key_roles ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_isolation ON flint.roles
    USING (merchant_id = (SELECT @extschema@.flint_current_merchant()));
CREATE POLICY merchant_isolation ON flint.key_roles
    USING (merchant_id = (SELECT @extschema@.flint_current_merchant()));
-- A role change reloads, in every backend's key cache, only the keys that
-- hold the role (the statements' transition tables say which); a TRUNCATE
-- reloads every key.
CREATE FUNCTION flint._keys_changed(tbl regclass, ids uuid[]) RETURNS void
    LANGUAGE c STRICT
    AS 'MODULE_PATHNAME', 'flint_keys_changed';
REVOKE ALL ON FUNCTION flint._keys_changed(regclass, uuid[]) FROM PUBLIC;
CREATE FUNCTION flint._role_holders_changed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    ids uuid[];
BEGIN
    -- the log worker's and a standby's bookkeeping never touch these tables
    IF TG_TABLE_NAME = 'key_roles' THEN
        IF TG_OP = 'INSERT' THEN
            SELECT array_agg(DISTINCT n.key_id) INTO ids FROM new_rows AS n;
        ELSIF TG_OP = 'DELETE' THEN
            SELECT array_agg(DISTINCT o.key_id) INTO ids FROM old_rows AS o;
        ELSE
            SELECT array_agg(DISTINCT x.key_id) INTO ids
              FROM (SELECT o.key_id FROM old_rows AS o UNION ALL SELECT n.key_id FROM new_rows AS n) AS x;
        END IF;
    ELSE
        IF TG_OP = 'INSERT' THEN
            RETURN NULL; -- a new role has no holders
        ELSIF TG_OP = 'DELETE' THEN
            SELECT array_agg(DISTINCT kr.key_id) INTO ids
              FROM flint.key_roles AS kr WHERE kr.role_id IN (SELECT o.id FROM old_rows AS o);
        ELSE
            SELECT array_agg(DISTINCT kr.key_id) INTO ids
              FROM flint.key_roles AS kr
             WHERE kr.role_id IN (SELECT o.id FROM old_rows AS o UNION SELECT n.id FROM new_rows AS n);
        END IF;
    END IF;
    PERFORM flint._keys_changed(TG_RELID, COALESCE(ids, '{}'));
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION flint._role_holders_changed() FROM PUBLIC;
CREATE TRIGGER holders_changed_insert AFTER INSERT ON flint.roles
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION flint._role_holders_changed();
CREATE TRIGGER holders_changed_update AFTER UPDATE ON flint.roles
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION flint._role_holders_changed();
CREATE TRIGGER holders_changed_delete AFTER DELETE ON flint.roles
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION flint._role_holders_changed();
CREATE TRIGGER holders_changed_insert AFTER INSERT ON flint.key_roles
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION flint._role_holders_changed();
CREATE TRIGGER holders_changed_update AFTER UPDATE ON flint.key_roles
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION flint._role_holders_changed();
CREATE TRIGGER holders_changed_delete AFTER DELETE ON flint.key_roles
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION flint._role_holders_changed();
CREATE TRIGGER invalidate_key_cache AFTER TRUNCATE ON flint.roles
    FOR EACH STATEMENT EXECUTE FUNCTION flint._invalidate_key_cache();
CREATE TRIGGER invalidate_key_cache AFTER TRUNCATE ON flint.key_roles
    FOR EACH STATEMENT EXECUTE FUNCTION flint._invalidate_key_cache();
ALTER TABLE flint.roles ENABLE ALWAYS TRIGGER holders_changed_insert;
ALTER TABLE flint.roles ENABLE ALWAYS TRIGGER holders_changed_update;
ALTER TABLE flint.roles ENABLE ALWAYS TRIGGER holders_changed_delete;
ALTER TABLE flint.key_roles ENABLE ALWAYS TRIGGER holders_changed_insert;
ALTER TABLE flint.key_roles ENABLE ALWAYS TRIGGER holders_changed_update;
ALTER TABLE flint.key_roles ENABLE ALWAYS TRIGGER holders_changed_delete;
ALTER TABLE flint.roles ENABLE ALWAYS TRIGGER invalidate_key_cache;
ALTER TABLE flint.key_roles ENABLE ALWAYS TRIGGER invalidate_key_cache;
SELECT pg_catalog.pg_extension_config_dump('flint.roles', '');
SELECT pg_catalog.pg_extension_config_dump('flint.key_roles', '');

-- Role events name no key when a role itself changes.
ALTER TABLE flint.key_events ALTER COLUMN key_id DROP NOT NULL;
ALTER TABLE flint.key_events DROP CONSTRAINT key_events_event_check;
ALTER TABLE flint.key_events ADD CONSTRAINT key_events_event_check CHECK (event = ANY (ARRAY[
    'created', 'updated', 'rotated', 'revoked', 'deleted', 'leaked', 'disabled', 'enabled',
    'role_granted', 'role_revoked', 'role_changed']));

-- The roles a key holds, as the caller may see them: in a context only its
-- merchant's, outside one only an admin (BYPASSRLS) sees any. PUBLIC may
-- call them, since flint.key_info (security_invoker) does for every reader,
-- and readers GRANTed before 1.3 have no privilege on the role tables.
CREATE FUNCTION flint._context_merchant() RETURNS uuid
    LANGUAGE c STABLE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'flint_context_merchant';
-- May the caller see this merchant's roles and held units: its context's
-- merchant, or an admin outside a context.
CREATE FUNCTION flint._caller_sees(merchant uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN flint._context_merchant() IS NOT NULL THEN flint._context_merchant() = $1
                ELSE EXISTS (SELECT 1 FROM pg_roles AS a WHERE a.rolname = flint._actor() AND (a.rolsuper OR a.rolbypassrls))
           END
$$;
REVOKE ALL ON FUNCTION flint._context_merchant(), flint._caller_sees(uuid) FROM PUBLIC;
CREATE FUNCTION flint._key_role_names(key_id uuid) RETURNS text[]
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT COALESCE(array_agg(r.name ORDER BY r.name), '{}')
      FROM flint.key_roles AS kr JOIN flint.roles AS r ON r.id = kr.role_id
     WHERE kr.key_id = $1
       AND flint._caller_sees(kr.merchant_id)
$$;
CREATE FUNCTION flint._effective_scopes(key_id uuid, own text[]) RETURNS text[]
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT COALESCE(array_agg(DISTINCT s ORDER BY s), '{}')
      FROM (SELECT unnest($2)
            UNION ALL
            SELECT unnest(r.scopes)
              FROM flint.key_roles AS kr JOIN flint.roles AS r ON r.id = kr.role_id
             WHERE kr.key_id = $1
               AND flint._caller_sees(kr.merchant_id)) AS e(s)
$$;
-- Units leased to this server's shared memory are taken from
-- flint.api_keys.remaining but not spent: key_info adds them back.
CREATE FUNCTION flint._leased_units(key_id uuid, version bigint, period timestamptz) RETURNS bigint
    LANGUAGE c STABLE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'flint_leased_units';
REVOKE ALL ON FUNCTION flint._leased_units(uuid, bigint, timestamptz) FROM PUBLIC;
CREATE FUNCTION flint._unspent_lease(key_id uuid) RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT COALESCE((SELECT flint._leased_units(k.id, k.quota_version, k.quota_period_start)
                       FROM flint.api_keys AS k WHERE k.id = $1 AND flint._caller_sees(k.merchant_id)), 0)
$$;
GRANT EXECUTE ON FUNCTION flint._key_role_names(uuid), flint._effective_scopes(uuid, text[]),
    flint._unspent_lease(uuid) TO PUBLIC;

CREATE OR REPLACE VIEW flint.key_info WITH (security_invoker = true) AS
SELECT k.id AS key_id, k.merchant_id, k.name, k.mode, k.display_prefix, k.scopes, k.metadata,
       CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked'
            WHEN k.expires_at <= now() THEN 'expired'
            WHEN k.disabled_at IS NOT NULL THEN 'disabled'
            ELSE 'active' END AS status,
       k.created_at, k.created_by, k.expires_at, k.revoked_at, k.revoked_reason, k.last_used_at,
       k.previous_secret_expires_at, k.disabled_at, k.disabled_reason,
       k.rate_limit, k.rate_window,
       k.remaining + CASE WHEN k.remaining IS NULL THEN 0 ELSE flint._unspent_lease(k.id) END AS remaining,
       k.refill_amount, k.refill_interval, k.allowed_ips,
       flint._key_role_names(k.id) AS roles,
       flint._effective_scopes(k.id, k.scopes) AS effective_scopes
  FROM flint.api_keys AS k;

-- To change a key, a context key must hold everything the key can do: its
-- effective scopes (a key could otherwise rotate a key with a wider role and
-- take its secret).
CREATE OR REPLACE FUNCTION flint._authorize_key(k flint.api_keys, needed text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
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
    beyond := flint._uncovered_scope(flint._current_scopes(), flint._effective_scopes(k.id, k.scopes));
    IF beyond IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'FK005',
            MESSAGE = format('missing_scope: key %s… holds scope "%s", which the authenticated key lacks',
                             k.display_prefix, beyond);
    END IF;
END
$$;

------------------------------------------------------------------------------
-- Who disabled a key: only a caller at least as privileged may enable it.
-- NULL with disabled_at set: an admin (or a disable from before 1.3), whom
-- only an admin may undo; else the disabling context key's effective scopes,
-- all of which an enabling context key must hold.
------------------------------------------------------------------------------
ALTER TABLE flint.api_keys ADD COLUMN disabled_by_scopes text[];

CREATE OR REPLACE FUNCTION @extschema@.flint_disable_key(key_id uuid, reason text DEFAULT NULL) RETURNS flint.key_info
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k    flint.api_keys := flint._key_for_update(key_id, 'keys:write');
    info flint.key_info;
    by_admin boolean := @extschema@.flint_current_key() IS NULL;
BEGIN
    reason := flint._checked_text('reason', reason, 1000);
    PERFORM flint._refuse_revoked(k, '; revocation is final');
    IF k.disabled_at IS NULL THEN
        UPDATE flint.api_keys AS a
           SET disabled_at = now(), disabled_reason = reason,
               disabled_by_scopes = CASE WHEN by_admin THEN NULL ELSE flint._current_scopes() END
         WHERE a.id = k.id;
    ELSIF by_admin AND k.disabled_by_scopes IS NOT NULL THEN
        -- an admin's disable of a key a context disabled: from now on only an admin may enable it
        UPDATE flint.api_keys AS a
           SET disabled_by_scopes = NULL, disabled_reason = COALESCE(reason, a.disabled_reason)
         WHERE a.id = k.id;
    END IF;
    SELECT * INTO info FROM flint.key_info AS i WHERE i.key_id = k.id;
    RETURN info;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.flint_enable_key(key_id uuid) RETURNS flint.key_info
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k      flint.api_keys := flint._key_for_update(key_id, 'keys:write');
    info   flint.key_info;
    beyond text;
BEGIN
    PERFORM flint._refuse_revoked(k, '; revocation is final and enable cannot undo it');
    IF k.disabled_at IS NOT NULL THEN
        IF @extschema@.flint_current_key() IS NOT NULL THEN
            IF k.disabled_by_scopes IS NULL THEN
                RAISE EXCEPTION 'key %… was disabled by an admin role; only an admin may enable it', k.display_prefix
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'Ask an admin (a role with BYPASSRLS) to call flint_enable_key outside an authenticated transaction.';
            END IF;
            beyond := flint._uncovered_scope(flint._current_scopes(), k.disabled_by_scopes);
            IF beyond IS NOT NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'FK005',
                    MESSAGE = format('missing_scope: key %s… was disabled by a key holding scope "%s", which the authenticated key lacks',
                                     k.display_prefix, beyond);
            END IF;
        END IF;
        -- Bringing a key back is management too: it may not outlive the caller.
        PERFORM flint._check_lifetime(k.merchant_id, k.expires_at);
        UPDATE flint.api_keys AS a SET disabled_at = NULL, disabled_reason = NULL, disabled_by_scopes = NULL
         WHERE a.id = k.id;
    END IF;
    SELECT * INTO info FROM flint.key_info AS i WHERE i.key_id = k.id;
    RETURN info;
END
$$;

------------------------------------------------------------------------------
-- Limits that hold inside a merchant: in a context no management may make a
-- key's limits looser than the calling key's own (nor the calling key's
-- looser than they were), and a key made in a context inherits its maker's
-- rate limit and allowlist.
------------------------------------------------------------------------------
-- The first limit (rate limit, usage quota, IP allowlist) that changes from
-- old to new and is then looser than bound's; NULL if none.
CREATE FUNCTION flint._looser_limit(bound flint.api_keys, old flint.api_keys, new flint.api_keys) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE
        WHEN (new.rate_limit, new.rate_window) IS DISTINCT FROM (old.rate_limit, old.rate_window)
             AND bound.rate_limit IS NOT NULL
             AND (new.rate_limit IS NULL OR new.rate_limit > bound.rate_limit
                  OR new.rate_limit::float8 / extract(epoch FROM new.rate_window)
                     > bound.rate_limit::float8 / extract(epoch FROM bound.rate_window))
            THEN 'rate limit'
        WHEN (new.remaining, new.refill_amount, new.refill_interval)
             IS DISTINCT FROM (old.remaining, old.refill_amount, old.refill_interval)
             AND bound.remaining IS NOT NULL
             AND (new.remaining IS NULL OR new.remaining > bound.remaining
                  OR (bound.refill_amount IS NULL AND new.refill_amount IS NOT NULL)
                  OR (bound.refill_amount IS NOT NULL
                      AND (new.refill_amount IS NULL OR new.refill_amount > bound.refill_amount
                           OR (bound.refill_interval = 'month' AND new.refill_interval = 'day'))))
            THEN 'usage quota'
        WHEN new.allowed_ips IS DISTINCT FROM old.allowed_ips
             AND bound.allowed_ips IS NOT NULL
             AND (new.allowed_ips IS NULL
                  OR EXISTS (SELECT 1 FROM unnest(new.allowed_ips) AS a(net) WHERE NOT a.net <<= ANY (bound.allowed_ips)))
            THEN 'IP allowlist'
    END
$$;

REVOKE ALL ON FUNCTION flint._looser_limit(flint.api_keys, flint.api_keys, flint.api_keys) FROM PUBLIC;

CREATE OR REPLACE FUNCTION flint._check_not_looser(old flint.api_keys, new flint.api_keys) RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    caller flint.api_keys;
    looser text;
BEGIN
    IF @extschema@.flint_current_key() IS NULL THEN
        RETURN;
    END IF;
    IF @extschema@.flint_current_key() = old.id AND flint._looser_limit(old, old, new) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'FK005', MESSAGE = 'missing_scope: a key cannot loosen its own limits';
    END IF;
    SELECT * INTO caller FROM flint.api_keys AS a WHERE a.id = @extschema@.flint_current_key();
    looser := flint._looser_limit(caller, old, new);
    IF looser IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'FK005',
            MESSAGE = format('missing_scope: the authenticated key cannot make the %s of key %s… looser than its own',
                             looser, old.display_prefix);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.flint_create_key(merchant uuid, name text, scopes text[], expires_at timestamp with time zone DEFAULT NULL::timestamp with time zone, mode text DEFAULT 'live'::text, metadata jsonb DEFAULT '{}'::jsonb) RETURNS TABLE(key_id uuid, secret text, display_prefix text)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    SET check_function_bodies TO 'on'
    AS $$
DECLARE
    new_id     uuid := gen_random_uuid();
    minted     record;
    key_scopes text[];
    expiry     timestamptz;
    parent     flint.api_keys;
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
    -- A key made in a context is at least as limited as the key that made it:
    -- it inherits its rate limit and IP allowlist. A key with a usage quota
    -- makes none (their calls would not count against its quota).
    IF @extschema@.flint_current_key() IS NOT NULL THEN
        SELECT * INTO parent FROM flint.api_keys AS a WHERE a.id = @extschema@.flint_current_key();
        IF parent.remaining IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'FK005',
                MESSAGE = 'missing_scope: a key with a usage quota cannot create keys (their calls would not count against its quota)',
                HINT = 'An admin can create the key, with a quota of its own.';
        END IF;
    END IF;
    SELECT * INTO minted FROM flint._mint_token(mode, new_id);
    INSERT INTO flint.api_keys AS k (id, merchant_id, name, mode, scopes, metadata, display_prefix,
                                     secret_hash, created_by, expires_at, rate_limit, rate_window, allowed_ips)
    VALUES (new_id, merchant, flint._scrub(name), mode, key_scopes, metadata, minted.display_prefix,
            minted.secret_hash, flint._actor(), expiry, parent.rate_limit, parent.rate_window, parent.allowed_ips);
    key_id := new_id;
    secret := minted.secret;
    display_prefix := minted.display_prefix;
    RETURN NEXT;
END
$$;

-- A leak report is not a refused request (its rows have their own source
-- and, for a live secret, outcome leak_reported).
CREATE OR REPLACE FUNCTION @extschema@.flint_recent_failures(merchant uuid, since interval DEFAULT '1 hour')
    RETURNS TABLE(key_id uuid, display_prefix text, outcome text, requests bigint, last_at timestamptz)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT l.key_id, min(l.display_prefix), l.outcome, count(*), max(l.at)
      FROM flint.request_log AS l
     WHERE l.merchant_id = $1 AND l.outcome <> 'ok' AND l.source <> 'report_leaked' AND l.at > now() - $2
     GROUP BY l.key_id, l.outcome
     ORDER BY max(l.at) DESC
$$;

-- One key_events row and its wake-up (the event id only) for a role change.
CREATE FUNCTION flint._role_event(key_id uuid, merchant uuid, kind text, old jsonb, new jsonb) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    event_id bigint;
BEGIN
    INSERT INTO flint.key_events (at, key_id, merchant_id, event, actor, old, new)
    VALUES (clock_timestamp(), key_id, merchant, kind, flint._actor(), old, new)
    RETURNING id INTO event_id;
    PERFORM pg_notify('flint_key_events', event_id::text);
END
$$;

-- Authorizes the caller for the role's merchant and locks the role. An
-- unknown role and another merchant's raise the same no_data_found.
CREATE FUNCTION flint._role_for_update(role_id uuid) RETURNS flint.roles
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r flint.roles;
BEGIN
    IF role_id IS NULL THEN
        RAISE EXCEPTION 'role_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM flint._authorize_caller();
    SELECT * INTO r FROM flint.roles AS x
     WHERE x.id = _role_for_update.role_id
       AND (@extschema@.flint_current_key() IS NULL OR x.merchant_id = @extschema@.flint_current_merchant())
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no role with id %', role_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM flint._authorize(r.merchant_id, 'keys:write');
    -- a context key changes only a role it could have created
    PERFORM flint._check_grantable(r.scopes);
    RETURN r;
END
$$;

-- The key's merchant's role of that name, locked; no_data_found if none.
CREATE FUNCTION flint._role_by_name(merchant uuid, role_name text) RETURNS flint.roles
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r flint.roles;
BEGIN
    IF role_name IS NULL THEN
        RAISE EXCEPTION 'role_name must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO r FROM flint.roles AS x WHERE x.merchant_id = merchant AND x.name = role_name FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no role named "%" for this key''s merchant', left(flint._scrub(role_name), 100)
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN r;
END
$$;

CREATE FUNCTION @extschema@.flint_create_role(merchant uuid, name text, scopes text[]) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    role_scopes text[];
    new_id      uuid;
BEGIN
    IF merchant IS NULL OR name IS NULL OR scopes IS NULL THEN
        RAISE EXCEPTION 'merchant, name and scopes must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM flint._authorize(merchant, 'keys:write');
    IF NOT EXISTS (SELECT 1 FROM flint.merchants AS m WHERE m.id = merchant) THEN
        RAISE EXCEPTION 'no merchant with id %', merchant USING ERRCODE = 'no_data_found';
    END IF;
    IF length(btrim(name)) = 0 OR length(name) > 100 THEN
        RAISE EXCEPTION 'a role name must have 1 to 100 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    role_scopes := flint._check_scopes(scopes);
    PERFORM flint._check_grantable(role_scopes);
    BEGIN
        INSERT INTO flint.roles AS r (merchant_id, name, scopes)
        VALUES (merchant, flint._scrub(name), role_scopes)
        RETURNING r.id INTO new_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'this merchant already has a role named "%"', flint._scrub(name)
            USING ERRCODE = 'unique_violation';
    END;
    RETURN new_id;
END
$$;

CREATE FUNCTION @extschema@.flint_update_role(role_id uuid, scopes text[]) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r           flint.roles := flint._role_for_update(role_id);
    role_scopes text[];
BEGIN
    IF scopes IS NULL THEN
        RAISE EXCEPTION 'scopes must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    role_scopes := flint._check_scopes(scopes);
    PERFORM flint._check_grantable(role_scopes);
    IF role_scopes = r.scopes THEN
        RETURN; -- no change, no event
    END IF;
    UPDATE flint.roles AS x SET scopes = role_scopes, updated_at = now() WHERE x.id = r.id;
    PERFORM flint._role_event(NULL, r.merchant_id, 'role_changed',
        jsonb_build_object('role', r.name, 'role_id', r.id, 'scopes', r.scopes),
        jsonb_build_object('role', r.name, 'role_id', r.id, 'scopes', role_scopes));
END
$$;

CREATE FUNCTION @extschema@.flint_drop_role(role_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r       flint.roles := flint._role_for_update(role_id);
    holders bigint;
BEGIN
    -- Revoked keys hold nothing any more: only live holders keep the role.
    SELECT count(*) INTO holders
      FROM flint.key_roles AS kr JOIN flint.api_keys AS k ON k.id = kr.key_id
     WHERE kr.role_id = r.id AND k.revoked_at IS NULL;
    IF holders > 0 THEN
        RAISE EXCEPTION 'role "%" is held by % key(s)', r.name, holders
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'flint_revoke_role(key_id, role_name) from each key first (flint.key_info.roles lists them).';
    END IF;
    DELETE FROM flint.key_roles AS kr WHERE kr.role_id = r.id;
    DELETE FROM flint.roles AS x WHERE x.id = r.id;
END
$$;

-- Grants (grant_it) or revokes a role of a key, with one event when that
-- changed anything; flint_grant_role and flint_revoke_role call it.
CREATE FUNCTION flint._change_key_role(key_id uuid, role_name text, grant_it boolean) RETURNS flint.key_info
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k      flint.api_keys := flint._key_for_update(key_id, 'keys:write');
    r      flint.roles;
    before text[] := flint._key_role_names(k.id);
    info   flint.key_info;
BEGIN
    PERFORM flint._refuse_revoked(k, CASE WHEN grant_it THEN ' and cannot be given roles' ELSE ' and cannot be changed' END);
    r := flint._role_by_name(k.merchant_id, role_name);
    IF grant_it THEN
        PERFORM flint._check_grantable(r.scopes);
        INSERT INTO flint.key_roles AS kr (key_id, role_id, merchant_id) VALUES (k.id, r.id, k.merchant_id)
            ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM flint.key_roles AS kr WHERE kr.key_id = k.id AND kr.role_id = r.id;
    END IF;
    IF FOUND THEN
        PERFORM flint._role_event(k.id, k.merchant_id, CASE WHEN grant_it THEN 'role_granted' ELSE 'role_revoked' END,
            jsonb_build_object('roles', before),
            jsonb_build_object('roles', flint._key_role_names(k.id), 'role', r.name, 'role_id', r.id));
    END IF;
    SELECT * INTO info FROM flint.key_info AS i WHERE i.key_id = k.id;
    RETURN info;
END
$$;

CREATE FUNCTION @extschema@.flint_grant_role(key_id uuid, role_name text) RETURNS flint.key_info
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN flint._change_key_role(key_id, role_name, true);
END
$$;

CREATE FUNCTION @extschema@.flint_revoke_role(key_id uuid, role_name text) RETURNS flint.key_info
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN flint._change_key_role(key_id, role_name, false);
END
$$;

------------------------------------------------------------------------------
-- Usage rollups: requests and cost per (minute, merchant, key, outcome). They
-- sum exactly the request log and outlive its purging:
--  - flint.usage holds every row logged before flint.usage_watermark; the
--    log worker moves the mark forward every 2 seconds, summing the rows
--    since the mark from the log (one upsert per group) in the transaction
--    that moves it;
--  - a row inserted later for a time before the mark (a standby's forwarded
--    batch, the spool, a batch held up by a lock) adds its group in the
--    transaction that inserts it (one upsert per group and batch);
--  - flint_usage adds the rows after the mark from the log itself.
-- A crash loses no count the log keeps: both steps commit with the rows.
------------------------------------------------------------------------------
CREATE TABLE flint.usage (
    minute      timestamptz NOT NULL,
    merchant_id uuid,   -- the key's merchant; NULL for unknown and malformed keys
    key_id      uuid,   -- NULL for malformed keys
    outcome     text NOT NULL,
    requests    bigint NOT NULL,
    cost        bigint NOT NULL,
    CONSTRAINT usage_group UNIQUE NULLS NOT DISTINCT (minute, merchant_id, key_id, outcome)
);
CREATE INDEX usage_merchant_minute_idx ON flint.usage (merchant_id, minute);
CREATE TABLE flint.usage_watermark (
    single       boolean PRIMARY KEY DEFAULT true CHECK (single),
    rolled_up_to timestamptz NOT NULL
);
-- Not dumped: a restore starts the mark afresh (CREATE EXTENSION inserts it).
INSERT INTO flint.usage_watermark (rolled_up_to) VALUES (now());
-- The rows logged before the update are rolled up here, so a window that
-- spans it still sums the log exactly. The lock holds off the log worker's
-- inserts (they spool after 100 ms) until this commits: a row it inserts
-- afterwards below the mark is a late row, which adds its own group.
LOCK TABLE flint.request_log IN SHARE MODE;
INSERT INTO flint.usage (minute, merchant_id, key_id, outcome, requests, cost)
SELECT date_trunc('minute', l.at), l.merchant_id, l.key_id, l.outcome, count(*), sum(COALESCE(l.cost, 1))
  FROM flint.request_log AS l
 WHERE l.at < (SELECT w.rolled_up_to FROM flint.usage_watermark AS w)
 GROUP BY 1, 2, 3, 4;

-- The minute sums read the log by time: a BRIN index per day partition (a
-- few pages, next to nothing per insert: rows arrive in time order).
DO $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT c.oid::regclass FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'flint.request_log'::regclass LOOP
        EXECUTE format('CREATE INDEX %I ON %s USING brin (at)', (SELECT relname FROM pg_class WHERE oid = part) || '_at_brin', part);
    END LOOP;
END
$$;
-- psql's \dt+ explains the day partitions the worker makes too.
CREATE FUNCTION flint._day_partition_comment(day date) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT format('Request-log rows of %s (UTC), one day of flint.request_log; made by the log worker a week ahead, dropped by flint_purge_request_log / flint.log_retention.', day) $$;
DO $$
DECLARE
    part record;
BEGIN
    FOR part IN SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'flint.request_log'::regclass AND c.relname ~ '^request_log_[0-9]{8}$' LOOP
        EXECUTE format('COMMENT ON TABLE flint.%I IS %L', part.relname,
                       flint._day_partition_comment(to_date(substr(part.relname, 13), 'YYYYMMDD')));
    END LOOP;
END
$$;
CREATE OR REPLACE FUNCTION flint._maintain_request_log(today date, retention interval DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
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
            -- The usage rollup's minute sums (1.3): BRIN, a few pages.
            EXECUTE format('CREATE INDEX %I ON flint.%I USING brin (at)', part || '_at_brin', part);
            -- A key belongs to one merchant: told so, the planner no longer
            -- multiplies the two selectivities, and reads a rarely used
            -- key's newest rows by index instead of sorting all of them
            -- (BENCHMARKS.md, RLS readers). Costs nothing per insert.
            EXECUTE format('CREATE STATISTICS flint.%I (dependencies) ON key_id, merchant_id FROM flint.%I',
                           part || '_key_merchant_stats', part);
            EXECUTE format('COMMENT ON TABLE flint.%I IS %L', part, flint._day_partition_comment(d));
        END IF;
    END LOOP;
    IF retention IS NOT NULL THEN
        PERFORM @extschema@.flint_purge_request_log(retention, today);
    END IF;
END
$$;

-- Called by the log worker every 2 seconds: moves the mark to `upto`, adding
-- the rows logged in between to flint.usage; returns the groups written.
-- The mark's row lock orders it against batches inserted meanwhile (they
-- read the mark FOR SHARE).
CREATE FUNCTION flint._roll_up_usage(upto timestamptz) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    mark   timestamptz;
    groups bigint;
    day    date;
    brin   regclass;
BEGIN
    SELECT w.rolled_up_to INTO mark FROM flint.usage_watermark AS w FOR UPDATE;
    IF NOT FOUND OR upto <= mark THEN
        RETURN 0;
    END IF;
    -- A BRIN scan reads every range not summarized yet: all the pages
    -- inserted since the partition's last vacuum, again at every step. So
    -- the day's new ranges are summarized first (each page read once); a
    -- lock held by a vacuum only makes this step's scan longer.
    FOR day IN SELECT DISTINCT (d AT TIME ZONE 'UTC')::date FROM unnest(ARRAY[mark, upto]) AS d LOOP
        brin := to_regclass(format('flint.%I', 'request_log_' || to_char(day, 'YYYYMMDD') || '_at_brin'));
        IF brin IS NOT NULL THEN
            BEGIN
                PERFORM brin_summarize_new_values(brin);
            EXCEPTION WHEN lock_not_available THEN
                NULL;
            END;
        END IF;
    END LOOP;
    INSERT INTO flint.usage AS u (minute, merchant_id, key_id, outcome, requests, cost)
    SELECT date_trunc('minute', l.at), l.merchant_id, l.key_id, l.outcome, count(*), sum(COALESCE(l.cost, 1))
      FROM flint.request_log AS l
     WHERE l.at >= mark AND l.at < upto
     GROUP BY 1, 2, 3, 4
    ON CONFLICT (minute, merchant_id, key_id, outcome)
    DO UPDATE SET requests = u.requests + EXCLUDED.requests, cost = u.cost + EXCLUDED.cost;
    GET DIAGNOSTICS groups = ROW_COUNT;
    UPDATE flint.usage_watermark SET rolled_up_to = upto;
    RETURN groups;
END
$$;
ALTER TABLE flint.usage ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_isolation ON flint.usage
    USING (merchant_id = (SELECT @extschema@.flint_current_merchant()));
SELECT pg_catalog.pg_extension_config_dump('flint.usage', '');

-- Totals for monitoring, no merchant or key: runs as its owner, so
-- pg_monitor reads it without reading any merchant's rows.
CREATE VIEW flint.usage_totals AS
SELECT date_trunc('hour', u.minute AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour, u.outcome,
       sum(u.requests)::bigint AS requests, sum(u.cost)::bigint AS cost
  FROM flint.usage AS u
 GROUP BY 1, 2;
GRANT SELECT ON flint.usage_totals TO pg_monitor;

-- The mark, for flint_usage (which runs as the caller): one timestamp.
CREATE FUNCTION flint._usage_watermark() RETURNS timestamptz
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT w.rolled_up_to FROM flint.usage_watermark AS w $$;
GRANT EXECUTE ON FUNCTION flint._usage_watermark() TO PUBLIC;

-- flint_usage's checks: raises on bad arguments, or in a context without
-- logs:read or for another merchant; else true. PUBLIC may call it (it
-- reads nothing), as flint_usage runs as the caller.
CREATE FUNCTION flint._usage_args_ok(merchant uuid, since timestamptz, until timestamptz, bucket text) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF merchant IS NULL OR since IS NULL OR until IS NULL OR bucket IS NULL THEN
        RAISE EXCEPTION 'merchant, since, until and bucket must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF bucket NOT IN ('minute', 'hour', 'day') THEN
        RAISE EXCEPTION 'bucket must be minute, hour or day (got "%")', left(bucket, 20)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF since > until THEN
        RAISE EXCEPTION 'since must not be after until' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF @extschema@.flint_current_key() IS NOT NULL THEN
        PERFORM @extschema@.flint_require_scope('logs:read');
        IF merchant IS DISTINCT FROM @extschema@.flint_current_merchant() THEN
            RAISE EXCEPTION USING ERRCODE = 'FK006',
                MESSAGE = 'wrong_merchant: the authenticated key acts only for its own merchant';
        END IF;
    END IF;
    RETURN true;
END
$$;
GRANT EXECUTE ON FUNCTION flint._usage_args_ok(uuid, timestamptz, timestamptz, text) TO PUBLIC;

-- Runs as the caller: RLS decides whose rollups and log rows it sums.
-- Windows are [since, until): a rollup row covers a whole minute, so the
-- whole minutes inside the window come from flint.usage, and from the log:
-- the rows after the watermark (not rolled up yet) and those of the window's
-- cut minutes at either end. Buckets are UTC.
CREATE FUNCTION @extschema@.flint_usage(merchant uuid, since timestamptz, until timestamptz,
                                        bucket text DEFAULT 'hour', key_id uuid DEFAULT NULL)
    RETURNS TABLE(bucket_start timestamptz, key_id uuid, outcome text, requests bigint, cost bigint)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    WITH bounds AS MATERIALIZED (
        SELECT flint._usage_watermark() AS mark,
               -- the first and past-the-last whole minute inside the window
               CASE WHEN date_trunc('minute', $2 AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' = $2 THEN $2
                    ELSE (date_trunc('minute', $2 AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') + interval '1 minute'
               END AS lo,
               date_trunc('minute', $3 AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hi),
    spans AS ( -- the log's parts, disjoint: after the mark; the cut minutes before it
        SELECT greatest(b.mark, $2) AS from_at, $3 AS to_at FROM bounds AS b
        UNION ALL SELECT $2, least(b.lo, b.mark, $3) FROM bounds AS b
        UNION ALL SELECT greatest(b.hi, b.lo, $2), least(b.mark, $3) FROM bounds AS b),
    groups AS (
        SELECT u.minute, u.key_id, u.outcome, u.requests, u.cost
          FROM flint.usage AS u, bounds AS b
         WHERE u.merchant_id = $1
           AND u.minute >= b.lo AND u.minute < b.hi
           AND ($5 IS NULL OR u.key_id = $5)
        UNION ALL
        SELECT date_trunc('minute', l.at), l.key_id, l.outcome, count(*), sum(COALESCE(l.cost, 1))
          FROM spans AS s
          JOIN LATERAL (SELECT * FROM flint.request_log AS r
                         WHERE r.merchant_id = $1 AND r.at >= s.from_at AND r.at < s.to_at
                           AND ($5 IS NULL OR r.key_id = $5)) AS l ON true
         WHERE s.from_at < s.to_at
         GROUP BY 1, 2, 3)
    SELECT date_trunc($4, g.minute AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', g.key_id, g.outcome,
           sum(g.requests)::bigint, sum(g.cost)::bigint
      FROM groups AS g
     WHERE flint._usage_args_ok($1, $2, $3, $4)
     GROUP BY 1, 2, 3
     ORDER BY 1, 2, 3
$$;

-- The checks of flint_set_merchant_limits and flint_clear_merchant_limits:
-- admins only, outside a context; the merchant's row, locked.
CREATE FUNCTION flint._merchant_for_limits(merchant uuid) RETURNS flint.merchants
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    m flint.merchants;
BEGIN
    IF @extschema@.flint_current_key() IS NOT NULL THEN
        RAISE EXCEPTION 'merchant limits are set by admins, outside an authenticated transaction'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM flint._authorize_caller();
    IF merchant IS NULL THEN
        RAISE EXCEPTION 'merchant must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO m FROM flint.merchants AS x WHERE x.id = merchant FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no merchant with id %', merchant USING ERRCODE = 'no_data_found';
    END IF;
    RETURN m;
END
$$;
REVOKE ALL ON FUNCTION flint._merchant_for_limits(uuid) FROM PUBLIC;

-- One meaning for NULL (1.3): as in flint_set_key_limits, a NULL argument
-- leaves that part of the merchant's limit as it is; flint_clear_merchant_limits
-- removes the limit. A call with neither (which would change nothing) still
-- removes it, as 1.2 documented, with a NOTICE naming the explicit form.
CREATE OR REPLACE FUNCTION @extschema@.flint_set_merchant_limits(merchant uuid, rate_limit integer DEFAULT NULL,
                                                                 rate_window interval DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    m flint.merchants;
BEGIN
    m := flint._merchant_for_limits(merchant);
    IF rate_limit IS NULL AND rate_window IS NULL THEN
        RAISE NOTICE 'flint_set_merchant_limits with no limit removes the merchant''s limit'
            USING HINT = 'flint_clear_merchant_limits(merchant) says so explicitly.';
    ELSE
        rate_limit := COALESCE(rate_limit, m.rate_limit);
        rate_window := COALESCE(rate_window, m.rate_window);
        IF rate_limit IS NULL OR rate_window IS NULL THEN
            RAISE EXCEPTION 'this merchant has no rate limit yet: give both rate_limit and rate_window'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM flint._check_rate(rate_limit, rate_window);
    END IF;
    UPDATE flint.merchants AS x SET rate_limit = flint_set_merchant_limits.rate_limit,
                                    rate_window = flint_set_merchant_limits.rate_window
     WHERE x.id = merchant;
END
$$;
CREATE FUNCTION @extschema@.flint_clear_merchant_limits(merchant uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM flint._merchant_for_limits(merchant);
    UPDATE flint.merchants AS x SET rate_limit = NULL, rate_window = NULL WHERE x.id = merchant;
END
$$;
REVOKE ALL ON FUNCTION @extschema@.flint_clear_merchant_limits(uuid) FROM PUBLIC;

-- A key's rate limits as this server's buckets hold them now (1.3): what
-- X-RateLimit-Remaining and a console show. Read without taking a token.
CREATE FUNCTION flint._rate_bucket(id uuid, merchant_wide boolean, rate_limit integer, rate_window interval)
    RETURNS bigint[]
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'flint_rate_bucket';
REVOKE ALL ON FUNCTION flint._rate_bucket(uuid, boolean, integer, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION flint._day_partition_comment(date) FROM PUBLIC;
CREATE FUNCTION @extschema@.flint_rate_limit_state(key_id uuid)
    RETURNS TABLE(applies_to text, rate_limit integer, rate_window interval, tokens integer, full_at timestamptz)
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT l.applies_to, l.rate_limit, l.rate_window, b.v[1]::integer,
           clock_timestamp() + b.v[2] * interval '1 microsecond'
      FROM flint.api_keys AS k
      JOIN flint.merchants AS m ON m.id = k.merchant_id,
           LATERAL (VALUES ('key', k.id, false, k.rate_limit, k.rate_window),
                           ('merchant', k.merchant_id, true, m.rate_limit, m.rate_window))
                AS l(applies_to, id, merchant_wide, rate_limit, rate_window),
           LATERAL flint._rate_bucket(l.id, l.merchant_wide, l.rate_limit, l.rate_window) AS b(v)
     WHERE k.id = $1 AND flint._caller_sees(k.merchant_id) AND l.rate_limit IS NOT NULL
     ORDER BY 1
$$;
REVOKE ALL ON FUNCTION @extschema@.flint_rate_limit_state(uuid) FROM PUBLIC;

-- Called by the log worker: drops rollups older than flint.usage_retention.
CREATE FUNCTION flint._prune_usage(retention interval) RETURNS bigint
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    AS $$
    WITH gone AS (DELETE FROM flint.usage AS u WHERE u.minute < now() - retention RETURNING 1)
    SELECT count(*) FROM gone
$$;

REVOKE ALL ON FUNCTION flint._role_event(uuid, uuid, text, jsonb, jsonb), flint._role_for_update(uuid),
    flint._role_by_name(uuid, text), flint._prune_usage(interval), flint._roll_up_usage(timestamptz),
    flint._change_key_role(uuid, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.flint_create_role(uuid, text, text[]), @extschema@.flint_update_role(uuid, text[]),
    @extschema@.flint_drop_role(uuid), @extschema@.flint_grant_role(uuid, text), @extschema@.flint_revoke_role(uuid, text),
    @extschema@.flint_usage(uuid, timestamptz, timestamptz, text, uuid) FROM PUBLIC;

------------------------------------------------------------------------------
-- What psql shows: every object's purpose (\df+, \dt+, \dv+, \dx+)
------------------------------------------------------------------------------

-- Schema
COMMENT ON SCHEMA flint IS 'flint_keys: key, merchant and scope tables, key events, the request log and views; internal functions (flint._*) are not API.';

-- Functions
COMMENT ON FUNCTION @extschema@.flint_verify_key(text, text, uuid) IS 'Verifies a secret for a scope and merchant; returns the key id or raises FK001-FK012. Logs one request-log row either way.';
COMMENT ON FUNCTION @extschema@.flint_verify_key(text, text, uuid, inet, integer) IS 'flint_verify_key plus client_ip (checked against the key''s IP allowlist; NULL: the connection''s address) and cost against its quota.';
COMMENT ON FUNCTION @extschema@.flint_check_key(text, text, uuid) IS 'Like flint_verify_key but never raises on a refusal: returns (ok, key_id, code, sqlstate). Logs one request-log row.';
COMMENT ON FUNCTION @extschema@.flint_check_key(text, text, uuid, inet, integer) IS 'flint_check_key plus client_ip (checked against the key''s IP allowlist; NULL: the connection''s address) and cost against its quota.';
COMMENT ON FUNCTION @extschema@.flint_authenticate(text) IS 'Verifies a secret and sets the transaction''s auth context (cleared at COMMIT/ROLLBACK); returns key_id, merchant_id, mode, scopes. Logged.';
COMMENT ON FUNCTION @extschema@.flint_authenticate(text, inet, integer) IS 'flint_authenticate plus client_ip (checked against the key''s IP allowlist; NULL: the connection''s address) and cost against its quota.';
COMMENT ON FUNCTION @extschema@.flint_current_merchant() IS 'The auth context''s merchant id, NULL outside a context; raises the key''s code if that key has since died (revoked, expired...).';
COMMENT ON FUNCTION @extschema@.flint_current_key() IS 'The auth context''s key id, NULL outside a context; raises the key''s code if that key has since died (revoked, expired...).';
COMMENT ON FUNCTION @extschema@.flint_current_mode() IS 'The auth context''s key mode (''live'' or ''test''), NULL outside a context; protected tables'' policies show test keys no live rows.';
COMMENT ON FUNCTION @extschema@.flint_has_scope(text) IS 'True when the auth context''s key holds the scope (x:write grants x:read, x:* grants all of x); false outside a context. Not logged.';
COMMENT ON FUNCTION @extschema@.flint_require_scope(text) IS 'Raises missing_scope (FK005), or unknown_scope (FK008), unless the auth context''s key holds the scope; fails outside a context. Logged.';
COMMENT ON FUNCTION @extschema@.flint_create_key(uuid, text, text[], timestamptz, text, jsonb) IS 'Creates a key (merchant, name, scopes, expires_at, mode, metadata); returns key_id, the secret (shown once, never stored), display_prefix. In a context it inherits the caller''s rate limit and allowlist.';
COMMENT ON FUNCTION @extschema@.flint_list_keys(uuid, boolean) IS 'A merchant''s keys as flint.key_info rows (no hashes), oldest first; revoked keys only with include_revoked. Needs keys:read in a context.';
COMMENT ON FUNCTION @extschema@.flint_get_key(uuid) IS 'One key as a flint.key_info row; P0002 for an unknown key (or another merchant''s, in a context). Needs keys:read in a context.';
COMMENT ON FUNCTION @extschema@.flint_update_key(uuid, text, text[], timestamptz, jsonb) IS 'Changes a key''s name, scopes, expires_at or metadata (NULL: unchanged); returns its flint.key_info row. Revoked keys cannot be changed.';
COMMENT ON FUNCTION @extschema@.flint_revoke_key(uuid, text) IS 'Revokes a key for good (key_revoked, FK003) with an optional reason; revoking twice keeps the first time and reason. Returns key_info.';
COMMENT ON FUNCTION @extschema@.flint_rotate_key(uuid, interval) IS 'Gives a key a new secret (same key id); the old one works for grace (0 to 30 days, default 0). Returns key_id, secret (shown once), prefix.';
COMMENT ON FUNCTION @extschema@.flint_disable_key(uuid, text) IS 'Pauses a key (reversible): it fails with key_disabled (FK012) until flint_enable_key by a caller at least as privileged. Revoked keys are refused.';
COMMENT ON FUNCTION @extschema@.flint_enable_key(uuid) IS 'Re-enables a disabled key: an admin''s disable only by an admin, a context key''s by a key holding its scopes; within lifetime bounds. Returns key_info.';
COMMENT ON FUNCTION @extschema@.flint_report_leaked(text[], text) IS 'Leak report: revokes each key whose current or in-grace secret is listed (reason ''leaked via <source>''); outcome per token. Max 10,000.';
COMMENT ON FUNCTION @extschema@.flint_set_key_limits(uuid, integer, interval, bigint, bigint, text, cidr[]) IS 'Sets a key''s rate limit, usage quota (remaining, refill per day/month) and IP allowlist; NULL: unchanged. Returns the key''s key_info.';
COMMENT ON FUNCTION @extschema@.flint_clear_key_limits(uuid, text[]) IS 'Removes a key''s limits of the kinds named: rate, quota, ips (default all three). Returns the key''s flint.key_info row.';
COMMENT ON FUNCTION @extschema@.flint_set_merchant_limits(uuid, integer, interval) IS 'Sets one rate limit shared by all of a merchant''s keys; a NULL part stays as it is (neither: removes it, as in 1.2). Admins only, outside an authenticated transaction.';
COMMENT ON FUNCTION flint._merchant_for_limits(uuid) IS 'Internal: the checks of setting or clearing a merchant''s limits (admins, outside a context, an existing merchant); its row, locked.';
COMMENT ON FUNCTION @extschema@.flint_clear_merchant_limits(uuid) IS 'Removes a merchant''s shared rate limit. Admins only, outside an authenticated transaction.';
COMMENT ON FUNCTION @extschema@.flint_recent_failures(uuid, interval) IS 'Refused requests of a merchant''s keys in the last `since` (default 1 hour), per key and outcome, newest first. Runs as the caller (RLS).';
COMMENT ON FUNCTION @extschema@.flint_flush_log() IS 'Waits until every request-log row queued so far is in flint.request_log (on a standby: on the primary); errors after 30 s without progress (a backlog it works through is waited for, up to 10 minutes).';
COMMENT ON FUNCTION @extschema@.flint_log_status() IS 'Request-log status, one row per server: this one''s queue, spool and forwarding counters, then each standby forwarding rows here.';
COMMENT ON FUNCTION @extschema@.flint_purge_request_log(interval, date) IS 'Drops request-log day partitions older than older_than and such default-partition rows; busy ones are kept (WARNING). Returns how many it dropped.';
COMMENT ON FUNCTION @extschema@.flint_protect_table(regclass, name, text, text) IS 'Confines a table to the authenticated merchant (live mode): RLS policies for read/write scope, the flint_guard_write trigger. Owner only.';
COMMENT ON FUNCTION @extschema@.flint_unprotect_table(regclass) IS 'Removes what flint_protect_table added (policies, guard trigger) and disables row-level security; the merchant index stays. Owner only.';
COMMENT ON FUNCTION @extschema@.flint_guard_write() IS 'Row trigger installed by flint_protect_table: raises missing_scope / wrong_merchant for writes by roles subject to RLS, and logs each write.';

-- Internal functions
COMMENT ON FUNCTION flint._install_checks() IS 'Internal: warnings at CREATE EXTENSION and update: other roles may CREATE in the extension''s schema, or this is not flint.database.';
COMMENT ON FUNCTION flint._actor() IS 'Internal: the acting role as SET ROLE left it, even inside SECURITY DEFINER functions (created_by, key_events.actor, admin checks).';
COMMENT ON FUNCTION flint._authorize(uuid, text) IS 'Internal: may the caller manage this merchant''s keys (admin, or context with the scope and merchant)? Called by create, list and _authorize_key.';
COMMENT ON FUNCTION flint._authorize_caller() IS 'Internal: refuses key management on a standby, by non-admins outside a context, and in a context opened with a pre-rotation secret.';
COMMENT ON FUNCTION flint._authorize_key(flint.api_keys, text) IS 'Internal: _authorize for the key''s merchant; to change it a context key also needs its mode and all its effective scopes (called by _key_for_update).';
COMMENT ON FUNCTION flint._bookkeeping_now() IS 'Internal: true in the log worker and inside _receive_last_used; first term of the key_events_update trigger''s WHEN clause.';
COMMENT ON FUNCTION flint._check_grantable(text[]) IS 'Internal: in a context, raises missing_scope (FK005) for a scope the calling key does not hold (called by flint_create_key, flint_update_key).';
COMMENT ON FUNCTION flint._check_lifetime(uuid, timestamptz) IS 'Internal: raises 22023 if an expiry (NULL: none) outlives _expiry_bound for the merchant (called by create, update, rotate, enable).';
COMMENT ON FUNCTION flint._looser_limit(flint.api_keys, flint.api_keys, flint.api_keys) IS 'Internal: the first limit (rate limit, usage quota, IP allowlist) that changes from old to new and is looser than bound''s, else NULL.';
COMMENT ON FUNCTION flint._check_not_looser(flint.api_keys, flint.api_keys) IS 'Internal: in a context, refuses (FK005) a change that loosens the calling key''s own limits or makes any key''s looser than the caller''s (called by _store_limits).';
COMMENT ON FUNCTION flint._check_rate(integer, interval) IS 'Internal: validates a rate limit: 1 to 1,000,000 calls per 1 second to 1 day; NULL parts unchecked (called by the set-limits functions).';
COMMENT ON FUNCTION flint._check_scopes(text[]) IS 'Internal: checks scopes against flint.scopes (FK008 with the closest name); returns them sorted, no duplicates (create, update, protect).';
COMMENT ON FUNCTION flint._checked_expiry(timestamptz) IS 'Internal: expires_at for create/update: ''infinity'' becomes NULL (no expiry), a past time raises 22023, else returned unchanged.';
COMMENT ON FUNCTION flint._checked_metadata(jsonb) IS 'Internal: key metadata must be a JSON object of at most 8 KiB as text (22023/54000); returned with tokens scrubbed (create, update).';
COMMENT ON FUNCTION flint._checked_text(text, text, integer) IS 'Internal: client text (revoke/disable reasons, leak-report source): raises 54000 past max_chars, returns it with tokens scrubbed.';
COMMENT ON FUNCTION flint._context_via_grace() IS 'Internal: true when the auth context was opened with a pre-rotation secret still in its grace (checked by _authorize_caller).';
COMMENT ON FUNCTION flint._counters() IS 'Internal: (name, value) from shared memory: log rows per outcome since start, cache_hits, cache_misses, worker_lag_us. Feeds the metrics views.';
COMMENT ON FUNCTION flint._current_mode() IS 'Internal: the auth context''s key mode, NULL outside a context (the management checks'' twin of flint_current_mode).';
COMMENT ON FUNCTION flint._current_scopes() IS 'Internal: the auth context''s key''s effective scopes (own and roles''), NULL outside a context (used by _check_grantable and _authorize_key).';
COMMENT ON FUNCTION flint._expiry_bound(uuid) IS 'Internal: the latest expiry a merchant''s key may get: the calling key''s expiry or now() + max_key_lifetime, with why (for _check_lifetime).';
COMMENT ON FUNCTION flint._invalidate_key_cache() IS 'Internal: ALWAYS statement trigger on api_keys, merchants and scopes: every backend''s key cache reloads once the change commits.';
COMMENT ON FUNCTION flint._key_events_trigger() IS 'Internal: ALWAYS row trigger on api_keys: one flint.key_events row per change (no hashes), NOTIFY flint_key_events with the event id.';
COMMENT ON FUNCTION flint._key_for_update(uuid, text) IS 'Internal: authorizes the caller, then locks and returns the key (P0002 if unknown or another merchant''s); used by every key-changing function.';
COMMENT ON FUNCTION flint._leaked_key(text) IS 'Internal: for flint_report_leaked: the key whose current or in-grace secret the token is, else NULL; logs one row (source report_leaked).';
COMMENT ON FUNCTION flint._lease_quota(uuid, bigint, timestamptz, bigint) IS 'Internal: the log worker leases a key''s quota units (refilling in a new period); returns units granted, 0 if none, -1 if the quota changed.';
COMMENT ON FUNCTION flint._log_status_here() IS 'Internal: this server''s row of flint_log_status(): queue counters, server, role, forwarded and spooled rows, primary_connection.';
COMMENT ON FUNCTION flint._maintain_request_log(date, interval) IS 'Internal: called by the log worker: creates request-log day partitions a week ahead, indexed; with a retention, calls the purge.';
COMMENT ON FUNCTION flint._mint_token(text, uuid) IS 'Internal: a new token for a key: the secret (returned once), its display prefix and SHA-256 hash (called by create and _rotate_key).';
COMMENT ON FUNCTION flint._quota_period_start(text, timestamptz) IS 'Internal: the UTC start of the day or month (refill_interval) holding a moment (called by _store_limits).';
COMMENT ON FUNCTION flint._receive_last_used(uuid[], bigint[]) IS 'Internal: called by a standby''s forwarder on the primary: moves keys'' last_used_at forward (never back, never past now() + 5 min).';
COMMENT ON FUNCTION flint._receive_log_batch(uuid, bigint, text, bytea) IS 'Internal: called by a standby''s forwarder on the primary: inserts one batch of log rows once per origin; returns rows (0: already had it).';
COMMENT ON FUNCTION flint._refuse_revoked(flint.api_keys, text) IS 'Internal: refuses management of a revoked key (55000) (called by flint_update_key, _rotate_key, disable, enable, set and clear key limits).';
COMMENT ON FUNCTION flint._require_table_owner(regclass) IS 'Internal: caller must own the table; refuses partitioned, partition, temporary and flint/system tables (called by protect/unprotect).';
COMMENT ON FUNCTION flint._rotate_key(uuid, interval) IS 'Internal: the body of flint_rotate_key: checks grace, revocation, expiry and lifetime, then stores the new secret''s hash.';
COMMENT ON FUNCTION flint._scrub(text) IS 'Internal: masks any flint token in client text after its 16-character display prefix, before the text is stored.';
COMMENT ON FUNCTION flint._store_limits(flint.api_keys, flint.api_keys) IS 'Internal: stores a key''s new limits after _check_not_looser (a changed quota gets a new quota_version); returns key_info (set/clear limits).';
COMMENT ON FUNCTION flint._uncovered_scope(text[], text[]) IS 'Internal: the first wanted scope the held scopes do not cover, NULL if all are covered (used by _check_grantable, _authorize_key).';

-- Tables
COMMENT ON TABLE flint.merchants IS 'Merchants: name, status (active or suspended: its keys fail with merchant_suspended), merchant rate limit, max_key_lifetime policy.';
COMMENT ON TABLE flint.scopes IS 'The scope catalog (resource:action); builtin rows are seeded by the extension, custom rows are dumped. Keys and checks use only these.';
COMMENT ON TABLE flint.api_keys IS 'API keys: merchant, name, mode, scopes, SHA-256 of the secret (never the secret), expiry, revoke/disable, limits, last_used_at. RLS.';
COMMENT ON TABLE flint.key_events IS 'Audit trail: one row per key or role change (created, updated, rotated, revoked, leaked, disabled, enabled, deleted, role_granted, role_revoked, role_changed), actor, old/new, no hashes. RLS.';
COMMENT ON SEQUENCE flint.key_events_id_seq IS 'Identity sequence of flint.key_events.id (the id NOTIFY flint_key_events carries).';
COMMENT ON TABLE flint.log_origins IS 'Per origin (a log worker''s run that spooled rows), the last batch inserted: forwarded or spooled batches are inserted once.';
COMMENT ON TABLE flint.request_log IS 'One row per verification, authenticate, require_scope, guarded write and leak check, written by the log worker; by UTC day. RLS.';
COMMENT ON TABLE flint.request_log_default IS 'Default partition of flint.request_log: rows of days without their own partition; they stay here and are purged by DELETE.';

-- Views
COMMENT ON VIEW flint.key_info IS 'Keys as a DBA reads them, without hashes: status (active, expired, disabled, revoked), dates, reasons, limits, roles and effective scopes. Runs as the caller (RLS).';
COMMENT ON VIEW flint.expiring_keys IS 'Active keys expiring within 14 days: rotate them.';
COMMENT ON VIEW flint.unused_keys IS 'Active keys not used for 90 days (never used: created over 90 days ago): revoke them.';
COMMENT ON VIEW flint.keys_beyond_policy IS 'Active or disabled keys breaking their merchant''s max_key_lifetime (no expiry, or later than now() + max): they still work; rotate them.';
COMMENT ON VIEW flint.recent_requests IS 'Request-log rows of the last day. Runs as the caller (RLS).';
COMMENT ON VIEW flint.request_summary IS 'Request-log rows per key, merchant and outcome: requests, first_at, last_at. Runs as the caller (RLS).';
COMMENT ON VIEW flint.verification_counts IS 'Logged checks per outcome (ok, malformed_key, invalid_key, ...) since the server started. Readable by pg_monitor.';
COMMENT ON VIEW flint.metrics IS 'One row for monitoring: log queue depth and totals, worker_up, worker lag, key-cache hits/misses, keys by status (all merchants). pg_monitor.';

-- 1.3: roles and usage
COMMENT ON TABLE flint.roles IS 'Roles: named scope bundles of one merchant (names unique per merchant). A key''s effective scopes are its own and its roles''. RLS.';
COMMENT ON TABLE flint.key_roles IS 'Which key holds which role (flint_grant_role, flint_revoke_role); merchant_id is the key''s, for RLS.';
COMMENT ON TABLE flint.usage IS 'Usage rollups: requests and cost per minute, merchant, key and outcome of the log rows before flint.usage_watermark; kept for flint.usage_retention. RLS.';
COMMENT ON VIEW flint.usage_totals IS 'Usage per hour and outcome over all merchants (no merchant or key): readable by pg_monitor.';
COMMENT ON FUNCTION @extschema@.flint_create_role(uuid, text, text[]) IS 'Creates a merchant''s role (1-100 character name, scopes from the catalog); returns its id. In a context: keys:write and only scopes the key holds.';
COMMENT ON FUNCTION @extschema@.flint_update_role(uuid, text[]) IS 'Sets a role''s scopes; every key holding it verifies with them from its next call (event role_changed). In a context: keys:write, held scopes only.';
COMMENT ON FUNCTION @extschema@.flint_drop_role(uuid) IS 'Drops a role; refused (2BP01, with the count) while an unrevoked key holds it.';
COMMENT ON FUNCTION @extschema@.flint_grant_role(uuid, text) IS 'Gives a key its merchant''s role of that name (event role_granted); returns key_info. In a context the calling key must hold the role''s scopes.';
COMMENT ON FUNCTION @extschema@.flint_revoke_role(uuid, text) IS 'Takes a role from a key (event role_revoked; a no-op when the key does not hold it); returns key_info.';
COMMENT ON FUNCTION flint._day_partition_comment(date) IS 'Internal: the COMMENT of a request-log day partition.';
COMMENT ON FUNCTION @extschema@.flint_rate_limit_state(uuid) IS 'A key''s rate limits (its own, its merchant''s) as this server''s buckets hold them: whole tokens left and when full again; takes nothing. Its context''s merchant, or an admin.';
COMMENT ON FUNCTION flint._rate_bucket(uuid, boolean, integer, interval) IS 'Internal: {tokens left, microseconds until full} of this server''s bucket for a key or a merchant (shared memory), read without taking.';
COMMENT ON FUNCTION @extschema@.flint_usage(uuid, timestamptz, timestamptz, text, uuid) IS 'A merchant''s requests and cost per bucket (minute, hour, day; UTC), key and outcome in [since, until), from flint.usage. Runs as the caller (RLS); logs:read in a context.';
COMMENT ON FUNCTION flint._keys_changed(regclass, uuid[]) IS 'Internal: at commit, key caches everywhere forget just these keys (a role''s holders); standbys reload every key on replay.';
COMMENT ON FUNCTION flint._role_holders_changed() IS 'Internal: ALWAYS statement triggers on flint.roles and flint.key_roles: passes the keys a role change concerns to _keys_changed.';
COMMENT ON FUNCTION flint._context_merchant() IS 'Internal: the auth context''s merchant even after its key died (flint_current_merchant raises then), NULL outside a context.';
COMMENT ON FUNCTION flint._caller_sees(uuid) IS 'Internal: may the caller see this merchant''s roles and leased units: its context''s merchant, or an admin outside a context.';
COMMENT ON FUNCTION flint._leased_units(uuid, bigint, timestamptz) IS 'Internal: quota units of that version and period this server has leased for the key and not spent (shared memory).';
COMMENT ON FUNCTION flint._unspent_lease(uuid) IS 'Internal: the key''s leased, unspent quota units (as the caller may see them); flint.key_info.remaining adds them.';
COMMENT ON FUNCTION flint._key_role_names(uuid) IS 'Internal: the names of a key''s roles, sorted, as the caller may see them (its context''s merchant, or an admin); flint.key_info.roles.';
COMMENT ON FUNCTION flint._effective_scopes(uuid, text[]) IS 'Internal: a key''s own scopes and its roles'' (as the caller may see them), sorted; flint.key_info.effective_scopes and _authorize_key.';
COMMENT ON FUNCTION flint._role_event(uuid, uuid, text, jsonb, jsonb) IS 'Internal: one key_events row for a role change (role_granted, role_revoked, role_changed) and NOTIFY flint_key_events with its id.';
COMMENT ON FUNCTION flint._role_for_update(uuid) IS 'Internal: authorizes the caller for a role''s merchant (keys:write, its scopes held) and locks it; no_data_found if unknown or another merchant''s.';
COMMENT ON FUNCTION flint._role_by_name(uuid, text) IS 'Internal: a merchant''s role by name, locked FOR SHARE; no_data_found if none (called by flint_grant_role, flint_revoke_role).';
COMMENT ON FUNCTION flint._change_key_role(uuid, text, boolean) IS 'Internal: grants or revokes a role of a key, with its key event (called by flint_grant_role and flint_revoke_role).';
COMMENT ON FUNCTION flint._usage_args_ok(uuid, timestamptz, timestamptz, text) IS 'Internal: flint_usage''s checks (NULLs, bucket, since <= until; logs:read and the merchant in a context): raises, else true.';
COMMENT ON TABLE flint.usage_watermark IS 'The time before which every request-log row is in flint.usage (one row; moved by the log worker every 2 seconds).';
COMMENT ON FUNCTION flint._usage_watermark() IS 'Internal: flint.usage_watermark''s time, for flint_usage (which runs as the caller and adds the log rows after it).';
COMMENT ON FUNCTION flint._roll_up_usage(timestamptz) IS 'Internal: called by the log worker every 2 seconds: adds the log rows between the watermark and upto to flint.usage, then moves the mark.';
COMMENT ON FUNCTION flint._prune_usage(interval) IS 'Internal: called by the log worker: deletes flint.usage rows older than flint.usage_retention; returns how many.';

SELECT flint._install_checks();
