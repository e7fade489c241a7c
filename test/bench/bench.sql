-- Helpers for test/bench/run.sh: timing in the same session, interleaved.
CREATE SCHEMA IF NOT EXISTS bench;

-- Runs a and b alternately `reps` times; medians in milliseconds.
CREATE OR REPLACE FUNCTION bench.compare(a text, b text, reps int, flush boolean DEFAULT true)
RETURNS TABLE (a_ms float8, b_ms float8, ratio float8) LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    ta float8[] := '{}';
    tb float8[] := '{}';
BEGIN
    FOR i IN 1..reps LOOP
        IF flush THEN PERFORM flint_flush_log(); END IF;
        t0 := clock_timestamp();
        EXECUTE a;
        ta := ta || extract(epoch FROM clock_timestamp() - t0) * 1000;
        t0 := clock_timestamp();
        EXECUTE b;
        tb := tb || extract(epoch FROM clock_timestamp() - t0) * 1000;
    END LOOP;
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) INTO a_ms FROM unnest(ta) x;
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) INTO b_ms FROM unnest(tb) x;
    ratio := a_ms / b_ms;
    RETURN NEXT;
END
$$;

-- Median milliseconds of `reps` runs of one statement.
CREATE OR REPLACE FUNCTION bench.time_ms(q text, reps int) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    t float8[] := '{}';
BEGIN
    FOR i IN 1..reps LOOP
        t0 := clock_timestamp();
        EXECUTE q;
        t := t || extract(epoch FROM clock_timestamp() - t0) * 1000;
    END LOOP;
    RETURN (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM unnest(t) x);
END
$$;

-- Adds keys for merchant m until there are n, remembering their tokens.
CREATE TABLE IF NOT EXISTS bench.keys (n bigserial PRIMARY KEY, id uuid NOT NULL, tok text NOT NULL);
CREATE OR REPLACE FUNCTION bench.grow_keys(m uuid, n int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE have int := (SELECT count(*) FROM bench.keys);
BEGIN
    IF have >= n THEN RETURN; END IF;
    ALTER TABLE flint.api_keys DISABLE TRIGGER key_events;  -- bulk load: no audit rows
    CREATE TEMP TABLE new_keys ON COMMIT DROP AS
        SELECT id, (flint._mint_token('live', id)).secret AS tok
          FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, n - have)) s;
    INSERT INTO flint.api_keys (id, merchant_id, name, mode, scopes, display_prefix, secret_hash, created_by)
    SELECT id, m, 'bench', 'live', '{payments:write}', left(tok, 16), sha256(convert_to(tok, 'UTF8')), 'bench'
      FROM new_keys;
    INSERT INTO ref.keys (id, merchant_id, secret_hash, scopes)
    SELECT id, m, sha256(convert_to(tok, 'UTF8')), '{payments:write}' FROM new_keys;
    INSERT INTO bench.keys (id, tok) SELECT id, tok FROM new_keys;
    ALTER TABLE flint.api_keys ENABLE TRIGGER key_events;
END
$$;

-- 20,000 tokens drawn from `k` keys picked at random among all keys (each
-- key used 20,000/k times): the same working set whatever the table size.
CREATE OR REPLACE FUNCTION bench.make_tokens(k int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DROP TABLE IF EXISTS bench.tokens;
    CREATE TABLE bench.tokens AS
        WITH picked AS (SELECT tok, row_number() OVER () AS r FROM (SELECT tok FROM bench.keys ORDER BY random() LIMIT k) s)
        SELECT p.tok FROM generate_series(1, 20000) AS g(i) JOIN picked p ON p.r = 1 + ((g.i - 1) % k)
         ORDER BY random();
    ANALYZE bench.tokens;
END
$$;
