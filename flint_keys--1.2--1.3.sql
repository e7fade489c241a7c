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

-- Arrays of different lengths, or NULL entries, are refused or skipped: a
-- NULL time would have become now() + 5 minutes (least() ignores NULLs) and
-- hidden the key from flint.unused_keys. One rule with the worker's own
-- UPDATE: never earlier than what is stored, never ahead of now() + 5 min.
-- Marks the statements between on and off as bookkeeping: the cache
-- invalidation trigger (an ALWAYS trigger) skips them. Not for PUBLIC.
CREATE FUNCTION flint._bookkeeping(on_off boolean) RETURNS void
    AS 'MODULE_PATHNAME', 'flint_bookkeeping' LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION flint._bookkeeping(boolean) FROM PUBLIC;

CREATE OR REPLACE FUNCTION flint._receive_last_used(ids uuid[], used_at bigint[]) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET session_replication_role = replica SET lock_timeout = '100ms'
AS $$
BEGIN
    IF ids IS NULL OR used_at IS NULL OR cardinality(ids) <> cardinality(used_at) THEN
        RAISE EXCEPTION 'ids and used_at must be two arrays of the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- last_used_at alone: no key cache anywhere needs to reload for it.
    PERFORM flint._bookkeeping(true);
    WITH u AS MATERIALIZED (
            SELECT u.id, least(timestamptz '2000-01-01 00:00:00+00' + u.at_us * interval '1 microsecond',
                               now() + interval '5 minutes') AS at
              FROM unnest(ids, used_at) AS u(id, at_us)
             WHERE u.id IS NOT NULL AND u.at_us IS NOT NULL),
         locked AS MATERIALIZED (SELECT k.id FROM flint.api_keys k WHERE k.id = ANY (ids) FOR UPDATE SKIP LOCKED)
    UPDATE flint.api_keys k SET last_used_at = u.at
      FROM locked l JOIN u ON u.id = l.id
     WHERE k.id = l.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at);
    PERFORM flint._bookkeeping(false);
END
$$;
