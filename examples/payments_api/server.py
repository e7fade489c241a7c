#!/usr/bin/python3
"""A small payments API on top of flint_keys.

Each request's transaction starts with flint_authenticate(<bearer token>);
row-level security then confines every query to that key's merchant, and the
flint error codes map to HTTP statuses. Standard library + psycopg 3 only.

    FLINT_DSN="host=/tmp dbname=payments user=checkout_app" ./server.py --port 8080

    POST /payments      {"amount_cents": 1250, "currency": "EUR"}   needs payments:write
    GET  /payments                                                  needs payments:read
    GET  /requests      this key's request-log rows, newest first
"""
import argparse
import json
import os
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

# flint SQLSTATEs -> HTTP status. Authentication failures are 401, authorisation 403.
STATUS_BY_SQLSTATE = {
    "FK001": 401,  # malformed_key
    "FK002": 401,  # invalid_key
    "FK003": 401,  # key_revoked
    "FK004": 401,  # key_expired
    "FK005": 403,  # missing_scope
    "FK006": 403,  # wrong_merchant
    "FK007": 403,  # merchant_suspended
    "FK008": 400,  # unknown_scope
    "53000": 503,  # log_queue_full: fail closed, retry later
}


class Pool:
    """A few long-lived connections. Prepared statements are off so the same
    code works through PgBouncer in transaction pooling mode."""

    def __init__(self, dsn, size):
        self._dsn = dsn
        self._free = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    def get(self):
        self._slots.acquire()
        try:
            conn = self._free.get_nowait()
            if not conn.closed:
                return conn
        except queue.Empty:
            pass
        return psycopg.connect(self._dsn, prepare_threshold=None, autocommit=False)

    def put(self, conn):
        if not conn.closed:
            self._free.put(conn)
        self._slots.release()


class ApiError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Handler(BaseHTTPRequestHandler):
    pool = None
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep test output quiet; never log headers (they hold keys)
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _token(self):
        header = self.headers.get("Authorization", "")
        return header[7:].strip() if header.startswith("Bearer ") else None

    def _in_transaction(self, work):
        """Runs work(cur) in one transaction that starts by authenticating."""
        conn = self.pool.get()
        try:
            with conn.transaction():
                with conn.cursor() as cur:
                    request_id = self.headers.get("X-Request-Id")
                    if request_id:
                        cur.execute("SELECT set_config('flint.request_id', %s, true)", (request_id,))
                    # The token travels as a bind parameter, never in SQL text.
                    cur.execute("SELECT merchant_id, scopes FROM flint_authenticate(%s)", (self._token(),))
                    return work(cur)
        except psycopg.Error as e:
            sqlstate = e.sqlstate or ""
            if sqlstate in STATUS_BY_SQLSTATE:
                message = e.diag.message_primary or ""
                raise ApiError(STATUS_BY_SQLSTATE[sqlstate], message.split(":", 1)[0], message)
            if sqlstate == "22P02":
                raise ApiError(400, "bad_request", "invalid input")
            raise ApiError(500, "internal_error", "database error")
        finally:
            self.pool.put(conn)

    def _handle(self, method):
        try:
            if method == "GET" and self.path == "/payments":
                rows = self._in_transaction(lambda cur: cur.execute(
                    "SELECT id, merchant_id::text, amount_cents, currency FROM payments ORDER BY id").fetchall())
                self._send(200, {"payments": [
                    {"id": r[0], "merchant_id": r[1], "amount_cents": r[2], "currency": r[3]} for r in rows]})
            elif method == "POST" and self.path == "/payments":
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                    amount, currency = int(body["amount_cents"]), str(body.get("currency", "EUR"))
                    # A client may name a merchant; the guard trigger refuses any but its own.
                    merchant = body.get("merchant_id")
                except (ValueError, KeyError, TypeError):
                    raise ApiError(400, "bad_request", "amount_cents is required")
                row = self._in_transaction(lambda cur: cur.execute(
                    "INSERT INTO payments (merchant_id, amount_cents, currency) "
                    "VALUES (coalesce(%s::uuid, flint_current_merchant()), %s, %s) RETURNING id, merchant_id::text",
                    (merchant, amount, currency)).fetchone())
                self._send(201, {"id": row[0], "merchant_id": row[1], "amount_cents": amount, "currency": currency})
            elif method == "GET" and self.path == "/requests":
                rows = self._in_transaction(lambda cur: cur.execute(
                    "SELECT at::text, scope, outcome, source, request_id FROM flint.request_log "
                    "WHERE key_id = flint_current_key() ORDER BY at DESC LIMIT 100").fetchall())
                self._send(200, {"requests": [
                    {"at": r[0], "scope": r[1], "outcome": r[2], "source": r[3], "request_id": r[4]} for r in rows]})
            else:
                raise ApiError(404, "not_found", "no such endpoint")
        except ApiError as e:
            self._send(e.status, {"error": {"code": e.code, "message": e.message}})

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--pool-size", type=int, default=4)
    args = parser.parse_args()
    Handler.pool = Pool(os.environ["FLINT_DSN"], args.pool_size)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"payments_api listening on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
