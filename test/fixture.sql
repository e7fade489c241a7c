\set ECHO none
-- The shared setup of every sql/ regression file, so that any one of them runs alone
-- on a fresh database (pg_regress --load-extension=flint_keys) or after any
-- other in the same database, with the same output. Each file includes it:
--
--     \getenv abs_srcdir PG_ABS_SRCDIR
--     \set fixture :abs_srcdir '/test/fixture.sql'
--     \i :fixture
--
-- (pg_regress sets PG_ABS_SRCDIR to its absolute --inputdir, the top level.) It is
-- not echoed: only its errors, if any, reach the expected output. It leaves:
-- flint_keys and pgcrypto (an independent SHA-256 oracle) installed; the
-- helper public.try(); empty key, role, event, request-log and usage tables; exactly the
-- two merchants Acme and Bolt, active, without a lifetime policy; and the
-- psql variables :acme and :bolt holding their quoted ids.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS flint_keys;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
RESET client_min_messages;

-- Run a statement, return 'ok' or its SQLSTATE and message, with the random
-- part of display prefixes and random uuids masked.
CREATE OR REPLACE FUNCTION public.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    hint text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
    RETURN SQLSTATE || ' ' || regexp_replace(regexp_replace(SQLERRM, 'fk_(live|test)_[0-9A-Za-z]{8}', 'fk_\1_XXXXXXXX', 'g'),
                                             '[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}', '<random uuid>', 'g')
        || CASE WHEN hint = '' THEN '' ELSE ' (hint: ' || hint || ')' END;
END
$$;

-- What an earlier file left: its queued log rows written, then every key,
-- event, log row and merchant gone. (DELETE, not TRUNCATE: a TRUNCATE here
-- gave memcheck reports in the log worker, inside PostgreSQL's processing of
-- the relation-file invalidations it sends, under the valgrind suite.)
-- The usage watermark's lock first: a roll-up the log worker is running
-- (it holds that lock) commits before these deletes, and one that starts
-- later sees them.
SELECT flint_flush_log() IS NULL AS flushed \gset
BEGIN;
SELECT true AS locked FROM flint.usage_watermark FOR UPDATE \gset
DELETE FROM flint.key_roles;
DELETE FROM flint.roles;
DELETE FROM flint.api_keys;
DELETE FROM flint.key_events;
DELETE FROM flint.request_log;
DELETE FROM flint.usage;
UPDATE flint.usage_watermark SET rolled_up_to = date_trunc('minute', now());
DELETE FROM flint.merchants;
COMMIT;

-- Two merchants used throughout.
INSERT INTO flint.merchants (id, name) VALUES
    ('aaaaaaaa-0000-0000-0000-000000000001', 'Acme Payments'),
    ('bbbbbbbb-0000-0000-0000-000000000002', 'Bolt Shop');
\set acme '\'aaaaaaaa-0000-0000-0000-000000000001\''
\set bolt '\'bbbbbbbb-0000-0000-0000-000000000002\''
\set ECHO all
