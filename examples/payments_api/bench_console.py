#!/usr/bin/python3
"""The console's first page at scale: one merchant with 10,000 keys and
1,000,000 request-log rows (plus the app's 1,000,000 api_requests rows) over
the last 24 hours, rolled up into flint.usage as the log worker does.
Starts server.py, then times GET /dashboard (the console's first page) and
the next pages, and prints render time (client-measured, median and p95 of
--runs) and bytes.

    ./bench_console.py --admin-dsn "host=/tmp dbname=bench user=postgres" \\
                       --app-dsn "host=/tmp dbname=bench user=checkout_app"

The database needs flint_keys preloaded (flint.database naming it) and
created, and examples/payments_api/schema.sql applied. The data goes to a
merchant of its own (named "Bench"), created each run; --keep leaves it.
"""
import argparse
import http.client
import os
import statistics
import subprocess
import sys
import time
import uuid

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--admin-dsn", required=True)
    ap.add_argument("--app-dsn", required=True)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--port", type=int, default=8097)
    ap.add_argument("--keep", action="store_true", help="leave the data (and print the merchant id)")
    ap.add_argument("--merchant", help="measure a merchant a --keep run left, without setting up again")
    args = ap.parse_args()

    merchant = args.merchant or str(uuid.uuid4())
    t0 = time.time()
    with psycopg.connect(args.admin_dsn, autocommit=True) as db:
        if args.merchant:
            secret = db.execute("SELECT secret FROM flint_create_key(%s, 'console', '{keys:read,logs:read}')",
                                (merchant,)).fetchone()[0]
        else:
            db.execute("INSERT INTO flint.merchants (id, name) VALUES (%s, 'Bench')", (merchant,))
            secret = db.execute("SELECT secret FROM flint_create_key(%s, 'console', '{keys:read,logs:read}')",
                                (merchant,)).fetchone()[0]
            db.execute("SELECT count(*) FROM generate_series(1, %s) AS g, "
                       "LATERAL flint_create_key(%s, 'bulk ' || g, '{payments:read,payments:write}') AS k",
                       (args.keys - 1, merchant))
            # 1M authentication rows over 24 hours, 1 in 20 with a guarded write, a
            # realistic mix of refusals, each with an api_requests row.
            db.execute("""
                CREATE TEMP TABLE bench_rows AS
                SELECT now() - (g * interval '86400 seconds' / %(rows)s) AS at, k.id AS key_id, k.display_prefix,
                       CASE WHEN g %% 50 = 0 THEN 'rate_limited' WHEN g %% 97 = 0 THEN 'invalid_key'
                            WHEN g %% 211 = 0 THEN 'ip_not_allowed' ELSE 'ok' END AS outcome,
                       'bench-' || g AS request_id, g
                  FROM generate_series(1, %(rows)s) AS g
                  JOIN (SELECT id, display_prefix, row_number() OVER (ORDER BY id) - 1 AS n
                          FROM flint.api_keys WHERE merchant_id = %(m)s) AS k ON k.n = g %% %(keys)s""",
                       {"rows": args.rows, "m": merchant, "keys": args.keys})
            # One transaction with the worker's mark locked, as a late batch:
            # the log rows, then their groups before the mark into flint.usage.
            db.execute("BEGIN")
            db.execute("SELECT 1 FROM flint.usage_watermark FOR UPDATE")
            db.execute("""
                INSERT INTO flint.request_log (at, key_id, display_prefix, merchant_id, scope, outcome, sqlstate,
                                               client_addr, request_id, backend_pid, source, cost)
                SELECT at, key_id, display_prefix, %(m)s::uuid, NULL, outcome,
                       CASE outcome WHEN 'ok' THEN '00000' WHEN 'rate_limited' THEN 'FK009'
                                    WHEN 'invalid_key' THEN 'FK002' ELSE 'FK011' END,
                       ('198.51.100.' || (g %% 250))::inet, request_id, 4242, 'authenticate', 1 FROM bench_rows
                UNION ALL
                SELECT at + interval '2 ms', key_id, display_prefix, %(m)s::uuid, 'payments:write', 'ok', '00000',
                       ('198.51.100.' || (g %% 250))::inet, request_id, 4242, 'guarded_write', 1
                  FROM bench_rows WHERE outcome = 'ok' AND g %% 20 = 0""", {"m": merchant})
            db.execute("""
                INSERT INTO api_requests (at, key_id, request_id, method, path, status, latency_ms)
                SELECT at, key_id, request_id, CASE WHEN g % 20 = 0 THEN 'POST' ELSE 'GET' END, '/payments',
                       CASE outcome WHEN 'ok' THEN CASE WHEN g % 20 = 0 THEN 201 ELSE 200 END
                                    WHEN 'rate_limited' THEN 429 WHEN 'invalid_key' THEN 401 ELSE 403 END,
                       3 + (g % 17) FROM bench_rows""")
            # Rows before the worker's watermark are not rolled up by it any more:
            # add their groups as a late batch does.
            db.execute("""
                INSERT INTO flint.usage AS u (minute, merchant_id, key_id, outcome, requests, cost)
                SELECT date_trunc('minute', l.at), l.merchant_id, l.key_id, l.outcome, count(*), sum(coalesce(l.cost, 1))
                  FROM flint.request_log AS l
                 WHERE l.merchant_id = %s AND l.at < (SELECT rolled_up_to FROM flint.usage_watermark)
                 GROUP BY 1, 2, 3, 4
                ON CONFLICT (minute, merchant_id, key_id, outcome)
                DO UPDATE SET requests = u.requests + EXCLUDED.requests, cost = u.cost + EXCLUDED.cost""", (merchant,))
            db.execute("COMMIT")
            db.execute("VACUUM ANALYZE flint.api_keys")
            db.execute("ANALYZE flint.request_log")
            db.execute("ANALYZE flint.usage")
            db.execute("VACUUM ANALYZE api_requests")
        n_log = db.execute("SELECT count(*) FROM flint.request_log WHERE merchant_id = %s", (merchant,)).fetchone()[0]
        n_keys = db.execute("SELECT count(*) FROM flint.api_keys WHERE merchant_id = %s", (merchant,)).fetchone()[0]
        n_usage = db.execute("SELECT count(*) FROM flint.usage WHERE merchant_id = %s", (merchant,)).fetchone()[0]
    print(f"data: {n_keys} keys, {n_log} request-log rows, {n_usage} usage rows of merchant {merchant} "
          f"(set up in {time.time() - t0:.0f} s)", flush=True)

    server = subprocess.Popen([sys.executable, os.path.join(HERE, "server.py"), "--port", str(args.port)],
                              env={**os.environ, "FLINT_DSN": args.app_dsn}, stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                http.client.HTTPConnection("127.0.0.1", args.port, timeout=2).request("GET", "/ping")
                break
            except OSError:
                time.sleep(0.1)

        def get(path):
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
            t = time.perf_counter()
            conn.request("GET", path, headers={"Authorization": f"Bearer {secret}"})
            res = conn.getresponse()
            body = res.read()
            ms = (time.perf_counter() - t) * 1000
            if res.status != 200:
                raise SystemExit(f"GET {path}: {res.status} {body[:300]!r}")
            return ms, body

        def measure(label, path):
            get(path)  # warm: connections, caches
            times, size, body = [], 0, b""
            for _ in range(args.runs):
                ms, body = get(path)
                times.append(ms)
                size = len(body)
            times.sort()
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            print(f"{label:<44} median {statistics.median(times):7.1f} ms  p95 {p95:7.1f} ms  "
                  f"{size / 1000:6.1f} kB", flush=True)
            return body

        import html
        import re
        first = measure("first page (/dashboard, 1 hour)", "/dashboard")
        nxt = html.unescape(re.search(rb'id="keys-next" href="([^"]+)"', first).group(1).decode())
        measure("keys page 2 (keyset cursor)", nxt.replace("/console", "/dashboard", 1))
        older = html.unescape(re.search(rb'id="log-next" href="([^"]+)"', first).group(1).decode())
        measure("log page 2 (keyset cursor)", older.replace("/console", "/dashboard", 1))
        measure("24 hours (hourly chart of 1M rows)", "/dashboard?range=24h")
        measure("filtered to one key, 24 hours", "/dashboard?range=24h&key=" +
                re.search(rb'data-key-id="([0-9a-f-]{36})"', first.split(b'id="keys"')[1]).group(1).decode())
        measure("request id search (bench-500000)", "/dashboard?range=24h&q=bench-500000")
        measure("outcome ip_not_allowed, 1 hour", "/dashboard?outcome=ip_not_allowed")
    finally:
        server.terminate()
        server.wait()
        if not args.keep:
            with psycopg.connect(args.admin_dsn, autocommit=True) as db:
                db.execute("DELETE FROM api_requests WHERE request_id LIKE 'bench-%'")
                db.execute("DELETE FROM flint.request_log WHERE merchant_id = %s", (merchant,))
                db.execute("DELETE FROM flint.usage WHERE merchant_id = %s", (merchant,))


if __name__ == "__main__":
    main()
