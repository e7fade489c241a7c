#!/usr/bin/python3
r"""A small payments API and merchant console on top of flint_keys.

Starlette + uvicorn + Jinja2 + a psycopg_pool connection pool (Debian:
python3-starlette python3-uvicorn python3-jinja2 python3-psycopg
python3-psycopg-pool; python3-cryptography for signed secret scanning).

Each request's transaction starts with flint_authenticate(<bearer token>,
<client address>, <cost>); row-level security then confines every query to
that key's merchant, and the flint error codes map to HTTP statuses.

    FLINT_DSN="host=/tmp dbname=payments user=checkout_app" ./server.py --port 8080

    POST /payments      {"amount_cents": 1250, "currency": "EUR"}   needs payments:write   cost 1
    GET  /payments      ?limit=N (1-1000, default 100)&after=ID     needs payments:read    cost 0
    GET  /requests      this key's request-log rows, newest first   ?limit=N               cost 0
    GET  /console       HTML: the merchant console (sign in with a key holding keys:read;
                        keys:write for create/rotate/disable/enable/revoke; logs:read for charts)
    GET  /dashboard     the console's overview for `Authorization: Bearer` or the demo key
    POST /secret-scanning   GitHub secret scanning partner receiver (off unless configured)

Every response carries X-Request-Id: the request's X-Request-Id when it is
1-63 characters of [A-Za-z0-9._:@/+=-] (and no token prefix), else a generated "req_<hex>"
("scan-<hex>" for the receiver). It is set as flint.request_id in the
request's transaction, so the request-log rows carry it, and the console
finds a request by it.

Refusals (JSON body {"error": {"code", "message", ...}}):
    FK001-FK004, FK012  401 with WWW-Authenticate: Bearer realm="payments", error="invalid_token"
                        (no token at all: WWW-Authenticate: Bearer realm="payments")
    FK005-FK007, FK011  403 (ip_not_allowed adds "client_ip": the address that was checked)
    FK008               400
    FK009 rate_limited  429, Retry-After: seconds until a request can succeed again
                        (the DETAIL's "retry after N ms" rounded up, at least 1); the body
                        adds "retry_after_seconds" and "limit" ("key" or "merchant")
    FK010 usage_exceeded 429, no Retry-After (a quota refills per day or month, if at all)
    53000 log_queue_full 503

X-RateLimit-Limit / -Remaining / -Reset on every authenticated answer of a
key with a rate limit (and on its 429s): Limit is the key's rate_limit (per
rate_window); Remaining is an estimate: the whole tokens left in this app
process's mirror of the key's token bucket (the same burst and refill as
flint's bucket, spent by this process's requests; a 429 sets it to flint's
Retry-After). flint keeps the real bucket in each PostgreSQL server's shared
memory; flint_rate_limit_state reads it (the console shows it), but a call
costs about 0.4 ms of database time, three times a request's whole
authentication (0.15 ms), so the headers keep the mirror. Remaining is exact
only while this process is the key's only client on that server; other
clients (another app process, psql) make it an upper bound, never a promise:
a request can still get 429. Reset is the seconds until the mirror is full
again (Retry-After on a 429). A 429 of a key this process has not answered
yet reads its limit once through payments_rate_limit (schema.sql): the
refused call set no context to read the key in.

Client address: the HTTP peer (an IPv4-mapped IPv6 peer taken as IPv4), or
with --trust-forwarded-for the X-Forwarded-For entry your proxy added, the
last one (--forwarded-hops N: the N-th from the end; 400 when the entry is
not an address or there are fewer entries). Only behind proxies of yours.

Traffic costs: POST /payments costs 1 against the key's quota; reads cost 0.
A refused write has spent its unit.

The console and the HTTP request log: after each request of a key the app
writes one row to its table api_requests (method, path, HTTP status,
latency, request id, key id), in its own short transaction after the
answer is ready. The console lists one row per HTTP request: flint's
authentication row (outcome, scope, client address, cost) joined with that
row; the later rows of the same request (a guarded write, a scope check)
are folded into it and marked as such. Sessions: signing in with a secret keeps
it in this process's memory (never in the cookie, which holds a random
session id; HttpOnly, SameSite=Strict); every page and action authenticates
with it again, so a key revoked or disabled meanwhile is signed out at its
next click. Actions are POST forms with a per-session CSRF token and go
through flint_create_key, flint_rotate_key, flint_disable_key,
flint_enable_key and flint_revoke_key in the key's context: SQL decides
(keys:write, no escalation), the page only shows the answer. Every form POST,
the sign-in too, is refused (403) when its Origin is another site or "null";
the pages send Referrer-Policy same-origin, so a browser sends their origin.
A key's panel shows this server's token buckets of the key
(flint_rate_limit_state: tokens left, when full again).

Demo mode: --demo-merchant-key-file PATH (first line a keys:read secret)
serves /dashboard and /console to a browser without signing in. A secret in
a URL (?key=...) is refused (400).

Secret scanning (the protocol of GitHub's partner program, as before):
--scanner-public-keys PATH (GitHub's key file or {id: PEM}; re-read when it
changes) or --scanner-insecure-no-signature (local demos only). The receiver
uses FLINT_RECEIVER_DSN (a role holding only EXECUTE on
flint_report_leaked), or FLINT_DSN. GitHub posts [{"token", "type", "url",
"source"}, ...] (at most 1000; a body over 1 MiB is 413, no Content-Length
411); each token that is a key's current or in-grace secret revokes it with
reason 'leaked via github:<source>'; the answer is [{"token_hash",
"token_type", "label"}] in input order. Tokens never reach a log.
"""
import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import json
import math
import os
import re
import secrets as pysecrets
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlencode

import psycopg
from psycopg_pool import AsyncConnectionPool
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.routing import Route

HERE = os.path.dirname(os.path.abspath(__file__))

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
    "FK009": 429,  # rate_limited: with Retry-After
    "FK010": 429,  # usage_exceeded
    "FK011": 403,  # ip_not_allowed
    "FK012": 401,  # key_disabled
    "53000": 503,  # log_queue_full: fail closed, retry later
}

# The DETAIL of a rate_limited error: "retry after N ms", then " (the merchant's
# rate limit)" when the merchant's limit refused the call.
RETRY_AFTER = re.compile(r"^retry after (\d+) ms")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,63}$")  # flint keeps 63 bytes
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TOKEN_SHAPE = re.compile(r"^fk_(live|test)_[0-9A-Za-z]{61}$")


def retry_after_seconds(detail):
    """Whole seconds for Retry-After: the ms of the DETAIL rounded up, at least 1."""
    m = RETRY_AFTER.match(detail or "")
    return max(1, math.ceil(int(m.group(1)) / 1000)) if m else 1


def parse_address(text):
    """An address as a peer or X-Forwarded-For gives it ("a.b.c.d", "a.b.c.d:port",
    "v6", "[v6]:port", "fe80::1%eth0") -> its text form for inet; an IPv4-mapped
    IPv6 address becomes the IPv4 address. Raises ValueError for anything else."""
    t = text.strip()
    if t.startswith("[") and "]" in t:
        t = t[1:t.index("]")]
    elif t.count(":") == 1:
        t = t.split(":", 1)[0]
    ip = ipaddress.ip_address(t.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip)


def token_key_id(token):
    """The key id a well-formed token names (not a secret: its display prefix
    shows part of it), or None. Used only to file the HTTP row of a request
    under the key flint logged it against."""
    if not token or not TOKEN_SHAPE.match(token):
        return None
    n = 0
    for c in token[8:30]:
        n = n * 62 + BASE62.index(c)
    return str(uuid.UUID(int=n)) if n < 1 << 128 else None


def warn(message):
    print(message, file=sys.stderr, flush=True)


class ApiError(Exception):
    def __init__(self, status, code, message, headers=None, extra=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}  # extra response headers (Retry-After, WWW-Authenticate)
        self.extra = extra or {}      # extra members of the JSON error object

    def body(self):
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


# POST /secret-scanning limits.
SCAN_MAX_TOKENS = 1000
SCAN_MAX_BODY = 1 << 20
# field -> (required, at most this many characters)
SCAN_FIELDS = {"token": (True, 1024), "type": (True, 100), "source": (True, 100), "url": (False, 2048)}


def load_scanner_keys(path):
    """The trusted scanner keys of a JSON file: GitHub's
    {"public_keys": [{"key_identifier": ..., "key": PEM}, ...]} or a plain
    {key identifier: PEM} map. Returns {identifier: public key}; raises
    ValueError (or OSError) when the file is not usable."""
    # Imported here: the rest of the server does not need the package.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict) and isinstance(data.get("public_keys"), list):
        pairs = []
        for entry in data["public_keys"]:
            if not isinstance(entry, dict):
                raise ValueError("public_keys: every entry must be an object")
            pairs.append((entry.get("key_identifier"), entry.get("key")))
    elif isinstance(data, dict):
        pairs = list(data.items())
    else:
        raise ValueError('expected {"public_keys": [...]} or an object of key identifier -> PEM')
    keys = {}
    for key_id, pem in pairs:
        if not isinstance(key_id, str) or not key_id or not isinstance(pem, str):
            raise ValueError("every key needs a non-empty string identifier and a PEM string")
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except ValueError:
            raise ValueError(f"key {key_id!r}: not a PEM public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"key {key_id!r}: not an ECDSA P-256 public key")
        keys[key_id] = key
    if not keys:
        raise ValueError("no keys in the file")
    return keys


class ScannerKeys:
    """The trusted scanner keys, re-read when the file changes (GitHub rotates
    its keys). A broken new file keeps the keys already loaded."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._keys = load_scanner_keys(path)

    def _file_stamp(self):
        st = os.stat(self.path)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def get(self, key_id):
        with self._lock:
            try:
                stamp = self._file_stamp()
                if stamp != self._stamp:
                    self._stamp = stamp
                    self._keys = load_scanner_keys(self.path)
                    warn(f"secret-scanning: reloaded {len(self._keys)} scanner key(s) from {self.path}")
            except (OSError, ValueError) as e:
                warn(f"secret-scanning: keeping the loaded scanner keys; {self.path}: {e}")
            return self._keys.get(key_id)

    def verify(self, headers, body):
        """Raises ApiError(401) unless body carries a valid signature by a trusted key."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        key_id = (headers.get("Github-Public-Key-Identifier") or "").strip()
        signature = (headers.get("Github-Public-Key-Signature") or "").strip()
        if not key_id or not signature:
            raise ApiError(401, "signature_required",
                           "Github-Public-Key-Identifier and Github-Public-Key-Signature are required")
        key = self.get(key_id)
        if key is None:
            raise ApiError(401, "unknown_key_identifier", "the signing key is not trusted")
        try:
            key.verify(base64.b64decode(signature, validate=True), body, ec.ECDSA(hashes.SHA256()))
        except (binascii.Error, ValueError, InvalidSignature):
            raise ApiError(401, "bad_signature", "the signature does not verify") from None


def parse_scanner_matches(body):
    """The partner payload: a JSON array of {"token", "type", "url", "source"}.
    Messages name the entry and field, never a value."""
    try:
        matches = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "bad_request", "the body is not valid JSON") from None
    if not isinstance(matches, list):
        raise ApiError(400, "bad_request", "the body must be a JSON array of matches")
    if len(matches) > SCAN_MAX_TOKENS:
        raise ApiError(413, "too_many_tokens", f"at most {SCAN_MAX_TOKENS} tokens per request (got {len(matches)})")
    for i, match in enumerate(matches):
        if not isinstance(match, dict):
            raise ApiError(400, "bad_request", f"entry {i} is not an object")
        for field, (required, limit) in SCAN_FIELDS.items():
            value = match.get(field)
            if value is None and not required:
                continue
            if not isinstance(value, str) or not value:
                raise ApiError(400, "bad_request", f'entry {i}: "{field}" must be a non-empty string')
            if len(value) > limit:
                raise ApiError(400, "bad_request", f'entry {i}: "{field}" is longer than {limit} characters')
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(400, "bad_request", f'entry {i}: "{field}" is not valid Unicode') from None
            if "\x00" in value or (field in ("type", "source") and not value.isprintable()):
                raise ApiError(400, "bad_request", f'entry {i}: "{field}" holds control characters')
    return matches


async def report_leaked(cur, matches):
    """One flint_report_leaked call per distinct source, in this transaction.
    Returns (key_id, outcome) per match, in input order."""
    by_source = {}
    for i, match in enumerate(matches):
        by_source.setdefault(match["source"], []).append(i)
    results = [None] * len(matches)
    for source, positions in by_source.items():
        await cur.execute(
            "SELECT key_id::text, outcome FROM flint_report_leaked(%s::text[], %s) WITH ORDINALITY "
            "AS r(display_prefix, key_id, outcome, ord) ORDER BY ord",
            ([matches[i]["token"] for i in positions], "github:" + source))
        rows = await cur.fetchall()
        if len(rows) != len(positions):
            raise RuntimeError("flint_report_leaked answered a different number of rows")
        for i, row in zip(positions, rows):
            results[i] = row
    return results



###############################################################################
# Application state (set by main()).
###############################################################################
class State:
    pool = None            # AsyncConnectionPool on FLINT_DSN (checkout_app)
    receiver_pool = None   # AsyncConnectionPool on FLINT_RECEIVER_DSN (leak_receiver)
    scanner_keys = None    # --scanner-public-keys
    scanner_insecure = False
    trust_forwarded_for = False
    forwarded_hops = 1
    demo_key = None        # --demo-merchant-key-file
    cookie_secure = False  # --cookie-secure


SESSION_COOKIE = "flint_console"
SESSION_SECONDS = 8 * 3600
SESSIONS = {}  # session id -> {"secret", "csrf", "expires", "prefix"}: this process's memory only


class RateMirror:
    """This process's copy of each rate-limited key's token bucket (burst
    rate_limit, refilled at rate_limit per rate_window), spent by its own
    requests: the estimate behind X-RateLimit-Remaining (see the docstring)."""

    def __init__(self):
        self._buckets = {}  # key id -> [tokens, at, limit, window seconds]

    def spend(self, key_id, limit, window):
        now = time.monotonic()
        b = self._buckets.get(key_id)
        if b is None or b[2] != limit or b[3] != window:
            b = self._buckets[key_id] = [float(limit), now, limit, window]
        b[0] = min(float(limit), b[0] + (now - b[1]) * limit / window)
        b[1] = now
        b[0] = max(0.0, b[0] - 1)
        return self.headers(key_id)

    def knows(self, key_id):
        return key_id in self._buckets

    def refused(self, key_id, seconds, limit=None, window=None):
        """A 429 of the key's own limit: its bucket is empty. limit and window
        (per second) start the entry of a key this process has not seen yet."""
        b = self._buckets.get(key_id)
        if b is None and limit:
            b = self._buckets[key_id] = [0.0, None, limit, window]
        headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(seconds)}
        if b:  # flint's bucket gives its next token in `seconds`: so does the mirror
            b[0], b[1] = max(0.0, 1 - seconds * b[2] / b[3]), time.monotonic()
            headers["X-RateLimit-Limit"] = str(b[2])
        return headers

    def headers(self, key_id):
        tokens, _, limit, window = self._buckets[key_id]
        return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(int(tokens)),
                "X-RateLimit-Reset": str(math.ceil((limit - tokens) * window / limit))}


RATES = RateMirror()


class Ctx:
    """One HTTP request: its id, timing, and what authentication found."""

    def __init__(self, request, scanner=False):
        self.started = time.monotonic()
        given = (request.headers.get("x-request-id") or "").strip()
        if given and REQUEST_ID.match(given) and "fk_live_" not in given and "fk_test_" not in given:
            self.request_id = given
        else:
            self.request_id = ("scan-" if scanner else "req_") + uuid.uuid4().hex
        self.token = None      # the secret this request authenticated with
        self.key_id = None     # from flint_authenticate, or the token's key id
        self.scopes = []
        self.mode = None
        self.merchant = None
        self.headers = {}      # X-RateLimit-*
        self.client_ip = None


def client_ip(request):
    """The end client's address: the peer's, or with --trust-forwarded-for the
    X-Forwarded-For entry our nearest proxy added (--forwarded-hops from the end)."""
    if State.trust_forwarded_for:
        forwarded = request.headers.getlist("x-forwarded-for")
        if forwarded:
            entries = [e.strip() for e in ",".join(forwarded).split(",")]
            if len(entries) < State.forwarded_hops:
                raise ApiError(400, "bad_request", "X-Forwarded-For has fewer entries than --forwarded-hops")
            try:
                return parse_address(entries[-State.forwarded_hops])
            except ValueError:
                raise ApiError(400, "bad_request", "the trusted X-Forwarded-For entry is not an IP address") from None
    return parse_address(request.client.host)


def bearer(request):
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.startswith("Bearer ") else None


def db_error(e, ctx):
    """A psycopg error -> ApiError (flint's codes mapped to HTTP)."""
    sqlstate = getattr(e, "sqlstate", None) or ""
    diag = getattr(e, "diag", None)
    message = (diag.message_primary if diag else None) or ""
    if sqlstate in STATUS_BY_SQLSTATE:
        code = message.split(":", 1)[0] if sqlstate != "53000" else "log_queue_full"
        status = STATUS_BY_SQLSTATE[sqlstate]
        if sqlstate == "FK009":
            detail = diag.message_detail or ""
            seconds = retry_after_seconds(detail)
            who = "merchant" if "merchant" in detail else "key"
            headers = {"Retry-After": str(seconds)}  # X-RateLimit-* added by in_transaction
            return ApiError(429, code, message, headers=headers, extra={"retry_after_seconds": seconds, "limit": who})
        if status == 401:
            challenge = 'Bearer realm="payments"' if not ctx.token else 'Bearer realm="payments", error="invalid_token"'
            return ApiError(401, code, message, headers={"WWW-Authenticate": challenge})
        if sqlstate == "FK011":
            return ApiError(403, code, f"{message} (address checked: {ctx.client_ip})", extra={"client_ip": ctx.client_ip})
        return ApiError(status, code, message)
    if sqlstate == "22P02":
        return ApiError(400, "bad_request", "invalid input")
    # The console's actions: flint's own argument and state errors, with their (secret-free) messages.
    if sqlstate in ("22004", "22023", "22007", "22008", "54000", "55000", "23505", "2BP01"):
        return ApiError(400 if sqlstate[:2] in ("22", "54") else 409, "refused", message)
    if sqlstate == "P0002":
        return ApiError(404, "not_found", message)
    if sqlstate == "42501":
        return ApiError(403, "insufficient_privilege", message)
    if isinstance(e, (psycopg.OperationalError,)) or type(e).__name__ == "PoolTimeout":
        return ApiError(503, "database_unavailable", "the database cannot be reached; retry later")
    return ApiError(500, "internal_error", "database error")


async def rate_refused(conn, ctx, e, seconds):
    """X-RateLimit-* of a 429 by the key's own limit: its bucket is empty. For a
    key this process has no mirror of yet, its limit comes from
    payments_rate_limit (schema.sql), once: the refused call set no context,
    so RLS hides the key's row."""
    key_id = token_key_id(ctx.token)
    if not key_id or not RETRY_AFTER.match(e.diag.message_detail or ""):  # not a bucket (a full table)
        return {}
    limit = window = None
    if not RATES.knows(key_id):
        try:
            async with conn.transaction():
                cur = await conn.execute("SELECT rate_limit, extract(epoch FROM rate_window)::float8 "
                                         "FROM payments_rate_limit(%s::uuid)", (key_id,))
                limit, window = await cur.fetchone() or (None, None)
        except psycopg.Error as e2:  # the 429 stands without X-RateLimit-Limit
            warn(f"payments_rate_limit: not read ({type(e2).__name__} {e2.sqlstate or ''})")
    return RATES.refused(key_id, seconds, limit, window)


async def in_transaction(request, ctx, work, token, cost, snapshot=False):
    """Runs await work(cur) in one transaction that starts with
    flint_authenticate(token, client address, cost), the request id set as
    flint.request_id. Sets ctx's key, scopes and X-RateLimit headers."""
    ctx.token = token
    ctx.client_ip = client_ip(request)
    try:
        async with State.pool.connection() as conn:
            try:
                async with conn.transaction():
                    cur = conn.cursor()
                    if snapshot:  # one snapshot for the whole page: rows the log worker commits meanwhile stay out
                        await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        # The page's queries are LIMITed index scans that the planner
                        # costs high enough for JIT: compiling took 350 ms of a 0.6 s page.
                        await cur.execute("SET LOCAL jit = off")
                    await cur.execute("SELECT set_config('flint.request_id', %s, true)", (ctx.request_id,))
                    # The token travels as a bind parameter, never in SQL text.
                    await cur.execute("SELECT key_id::text, merchant_id::text, mode, scopes "
                                      "FROM flint_authenticate(%s, %s::inet, %s)", (token, ctx.client_ip, cost))
                    ctx.key_id, ctx.merchant, ctx.mode, ctx.scopes = await cur.fetchone()
                    await cur.execute("SELECT rate_limit, extract(epoch FROM rate_window)::float8 FROM flint.api_keys "
                                      "WHERE id = %s", (ctx.key_id,))
                    row = await cur.fetchone()
                    if row and row[0]:
                        ctx.headers.update(RATES.spend(ctx.key_id, row[0], row[1]))
                    return await work(cur)
            except psycopg.Error as e:
                error = db_error(e, ctx)
                if error.extra.get("limit") == "key":  # FK009 of the key's own bucket
                    error.headers.update(await rate_refused(conn, ctx, e, error.extra["retry_after_seconds"]))
                raise error from None
    except psycopg.Error as e:  # connecting
        raise db_error(e, ctx) from None
    except ApiError:
        raise
    except Exception as e:  # PoolTimeout and friends
        if type(e).__name__ == "PoolTimeout":
            raise ApiError(503, "database_unavailable", "the database cannot be reached; retry later") from None
        raise


async def record_http(ctx, request, status):
    """One api_requests row per HTTP request of a key: what the console shows
    next to flint's request-log row of the same request id and key."""
    key_id = ctx.key_id or token_key_id(ctx.token)
    if not key_id:
        return
    latency = (time.monotonic() - ctx.started) * 1000
    try:
        async with State.pool.connection() as conn:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO api_requests (at, key_id, request_id, method, path, status, latency_ms) "
                    "VALUES (clock_timestamp() - make_interval(secs => %s), %s, %s, %s, %s, %s, %s)",
                    (latency / 1000, key_id, ctx.request_id, request.method, request.url.path[:200], status,
                     round(latency, 2)))
    except Exception as e:  # the answer is ready: a missing HTTP row must not fail the request
        warn(f"api_requests: not recorded ({type(e).__name__} {getattr(e, 'sqlstate', '') or ''})")


def endpoint(handler, html=False, record=True, scanner=False):
    async def run(request):
        ctx = Ctx(request, scanner=scanner)
        try:
            response = await handler(request, ctx)
        except ApiError as e:
            response = error_page(e) if html else JSONResponse(e.body(), e.status)
            response.headers.update(e.headers)
        response.headers.update(ctx.headers)
        response.headers["X-Request-Id"] = ctx.request_id
        if record:
            await record_http(ctx, request, response.status_code)
        return response
    return run


def query_int(request, name, default, low, high):
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be an integer") from None
    if not low <= n <= high:
        raise ApiError(400, "bad_request", f"{name} must be between {low} and {high}")
    return n


###############################################################################
# The payments API.
###############################################################################
async def list_payments(request, ctx):
    limit = query_int(request, "limit", 100, 1, 1000)
    after = query_int(request, "after", 0, 0, 2**62)

    async def work(cur):
        await cur.execute("SELECT id, merchant_id::text, amount_cents, currency FROM payments "
                          "WHERE id > %s ORDER BY id LIMIT %s", (after, limit))
        return await cur.fetchall()
    rows = await in_transaction(request, ctx, work, bearer(request), cost=0)
    return JSONResponse({"payments": [{"id": r[0], "merchant_id": r[1], "amount_cents": r[2], "currency": r[3]}
                                      for r in rows]})


async def create_payment(request, ctx):
    try:
        body = json.loads(await request.body() or b"{}")
        amount, currency = int(body["amount_cents"]), str(body.get("currency", "EUR"))
        # A client may name a merchant; the guard trigger refuses any but its own.
        merchant = body.get("merchant_id")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ApiError(400, "bad_request", "amount_cents is required") from None

    async def work(cur):
        await cur.execute("INSERT INTO payments (merchant_id, amount_cents, currency) "
                          "VALUES (coalesce(%s::uuid, flint_current_merchant()), %s, %s) RETURNING id, merchant_id::text",
                          (merchant, amount, currency))
        return await cur.fetchone()
    row = await in_transaction(request, ctx, work, bearer(request), cost=1)
    return JSONResponse({"id": row[0], "merchant_id": row[1], "amount_cents": amount, "currency": currency}, 201)


async def list_requests(request, ctx):
    limit = query_int(request, "limit", 100, 1, 1000)

    async def work(cur):
        await cur.execute("SELECT at::text, scope, outcome, source, request_id FROM flint.request_log "
                          "WHERE key_id = flint_current_key() AND merchant_id = flint_current_merchant() "
                          "ORDER BY at DESC LIMIT %s", (limit,))
        return await cur.fetchall()
    rows = await in_transaction(request, ctx, work, bearer(request), cost=0)
    return JSONResponse({"requests": [{"at": r[0], "scope": r[1], "outcome": r[2], "source": r[3], "request_id": r[4]}
                                      for r in rows]})


###############################################################################
# POST /secret-scanning
###############################################################################
async def secret_scanning(request, ctx):
    if not (State.scanner_keys or State.scanner_insecure):
        raise ApiError(404, "not_found", "secret scanning is not configured (--scanner-public-keys)")
    try:
        length = int(request.headers.get("content-length"))
    except (TypeError, ValueError):
        length = -1
    if length < 0:
        raise ApiError(411, "length_required", "a Content-Length is required", headers={"Connection": "close"})
    if length > SCAN_MAX_BODY:
        raise ApiError(413, "payload_too_large", f"the body is larger than {SCAN_MAX_BODY} bytes",
                       headers={"Connection": "close"})
    body = await request.body()
    if len(body) != length:
        raise ApiError(400, "bad_request", "the body is shorter than its Content-Length")
    if State.scanner_keys:
        try:
            State.scanner_keys.verify(request.headers, body)
        except ApiError as e:
            warn(f"secret-scanning {ctx.request_id}: refused, {e.code}")
            raise
    matches = parse_scanner_matches(body)
    results = []
    if matches:
        try:
            async with State.receiver_pool.connection() as conn:
                async with conn.transaction():
                    cur = conn.cursor()
                    await cur.execute("SELECT set_config('flint.request_id', %s, true)", (ctx.request_id,))
                    results = await report_leaked(cur, matches)
        except (psycopg.Error, RuntimeError) as e:
            # Class and SQLSTATE only: the (scrubbed) message is not needed here.
            sqlstate = getattr(e, "sqlstate", None) or ""
            warn(f"secret-scanning {ctx.request_id}: database error {type(e).__name__} {sqlstate}, nothing reported")
            if sqlstate == "53000":
                raise ApiError(503, "log_queue_full", "retry later") from None
            if isinstance(e, psycopg.OperationalError) and not sqlstate:
                raise ApiError(503, "database_unavailable", "retry later") from None
            raise ApiError(500, "internal_error", "database error") from None
        except Exception as e:
            if type(e).__name__ != "PoolTimeout":
                raise
            warn(f"secret-scanning {ctx.request_id}: cannot connect ({type(e).__name__}), nothing reported")
            raise ApiError(503, "database_unavailable", "retry later") from None
    answer, revoked, already, false_positives = [], [], 0, 0
    for match, (key_id, outcome) in zip(matches, results):
        hit = outcome in ("revoked", "already_revoked")
        if outcome == "revoked":
            revoked.append(key_id)
        elif outcome == "already_revoked":
            already += 1
        else:
            false_positives += 1
        answer.append({"token_hash": hashlib.sha256(match["token"].encode("utf-8")).hexdigest(),
                       "token_type": match["type"],
                       "label": "true_positive" if hit else "false_positive"})
    warn(f"secret-scanning {ctx.request_id}: {len(matches)} token(s): {len(revoked)} revoked now, "
         f"{already} already revoked, {false_positives} false positive(s)"
         + (f"; revoked keys {', '.join(revoked)}" if revoked else ""))
    return JSONResponse(answer)


###############################################################################
# The merchant console.
###############################################################################
# Colour-blind-safe (Okabe-Ito) colours per outcome family; every mark also
# carries its outcome as text (legend, badges, tooltips), so colour is never
# the only cue.
FAMILIES = [
    ("ok", "#0072B2", ["ok"]),
    ("authentication failed", "#E69F00",
     ["malformed_key", "invalid_key", "key_revoked", "key_expired", "key_disabled"]),
    ("forbidden", "#D55E00", ["missing_scope", "wrong_merchant", "merchant_suspended", "ip_not_allowed", "unknown_scope"]),
    ("limited", "#CC79A7", ["rate_limited", "usage_exceeded"]),
    ("server", "#000000", ["log_queue_full"]),
]
OUTCOMES = [o for _, _, os_ in FAMILIES for o in os_]
FAMILY_OF = {o: (name, colour) for name, colour, os_ in FAMILIES for o in os_}
STATUS_COLOURS = {"active": "#009E73", "disabled": "#E69F00", "expired": "#999999", "revoked": "#D55E00"}
RANGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
GRACES = {"0": "0", "1h": "1 hour", "1d": "1 day", "7d": "7 days"}
# Outcomes a guarded write or scope check of a request can have besides its
# authentication; any other outcome filter looks at the authentication rows
# only, so the folding join runs for the matching rows alone.
FOLDED_OUTCOMES = {"ok", "missing_scope", "wrong_merchant", "unknown_scope", "merchant_suspended"}
KEYS_PER_PAGE = 50
LOG_ROWS_PER_PAGE = 50
SCOPE = re.compile(r"^[a-z_]{1,40}:[a-z_*]{1,40}$")
PREFIX = re.compile(r"^fk_(live|test)_[0-9A-Za-z]{8}$")

TEMPLATES = Environment(loader=FileSystemLoader(HERE),  # console*.html next to this file
                        autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


def utc(ts, fmt="%Y-%m-%d %H:%M:%S"):
    return ts.astimezone(timezone.utc).strftime(fmt) if ts else ""


def family(outcome):
    return FAMILY_OF.get(outcome, ("other", "#999999"))


TEMPLATES.filters["utc"] = utc
TEMPLATES.globals.update(family=family, STATUS_COLOURS=STATUS_COLOURS, FAMILIES=FAMILIES, OUTCOMES=OUTCOMES,
                         GRACES=GRACES, RANGES=list(RANGES))

PAGE_HEADERS = {
    # Inline styles and SVG only: nothing is loaded from anywhere, no script runs.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    # Not no-referrer: with it a browser sends "Origin: null" on this site's
    # own form posts, which same_origin refuses. same-origin keeps every URL
    # (filters, request ids) from other sites all the same.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def page(template, status=200, **values):
    return HTMLResponse(TEMPLATES.get_template(template).render(**values), status, headers=dict(PAGE_HEADERS))


def error_page(e):
    return page("console_error.html", e.status, error=e)


def session_of(request):
    sid = request.cookies.get(SESSION_COOKIE)
    s = SESSIONS.get(sid) if sid else None
    if s and s["expires"] < time.time():
        SESSIONS.pop(sid, None)
        return None, None
    return sid, s


def same_origin(request):
    """A form POST must come from this site's own page (with SameSite=Strict and,
    but for the sign-in, the CSRF token). Browsers send Origin with every POST;
    "null" (a sandboxed frame, a data: or file: page, a cross-site redirect) is
    refused like another site: this site's pages send their origin
    (Referrer-Policy same-origin). No Origin at all: not a browser."""
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if origin not in (f"http://{host}", f"https://{host}"):
            raise ApiError(403, "csrf", "the form was posted from another site")


async def read_form(request, limit=16384):
    body = await request.body()
    if len(body) > limit:
        raise ApiError(413, "payload_too_large", "form too large")
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad_request", "not a form") from None
    return {k: v[0] for k, v in form.items()}, form


def console_filters(request, mode_default):
    """The console's query string, checked: every value reaches SQL as a bind parameter."""
    q = request.query_params
    f = {"mode": q.get("mode") or mode_default, "key": (q.get("key") or "").strip(), "outcome": q.get("outcome") or "",
         "scope": (q.get("scope") or "").strip(), "range": q.get("range") or "1h", "q": (q.get("q") or "").strip(),
         "since": (q.get("since") or "").strip(), "until": (q.get("until") or "").strip()}
    if f["mode"] not in ("live", "test"):
        raise ApiError(400, "bad_request", "mode is live or test")
    if f["key"]:
        try:
            f["key"] = str(uuid.UUID(f["key"]))
        except ValueError:
            if not PREFIX.match(f["key"]):
                raise ApiError(400, "bad_request", "key: a key id or a display prefix (fk_live_XXXXXXXX)") from None
    if f["outcome"] and f["outcome"] not in OUTCOMES:
        raise ApiError(400, "bad_request", "unknown outcome")
    if f["scope"] and not SCOPE.match(f["scope"]):
        raise ApiError(400, "bad_request", "scope: resource:action")
    if f["range"] not in RANGES:
        raise ApiError(400, "bad_request", "range: " + ", ".join(RANGES))
    if f["q"] and not REQUEST_ID.match(f["q"]):
        raise ApiError(400, "bad_request", "request id: 1-63 characters of A-Z a-z 0-9 . _ : @ / + = -")
    now = datetime.now(timezone.utc)
    until, since = now, now - RANGES[f["range"]]
    try:
        if f["until"]:
            until = datetime.fromisoformat(f["until"]).replace(tzinfo=timezone.utc)
        if f["since"]:
            since = datetime.fromisoformat(f["since"]).replace(tzinfo=timezone.utc)
        elif f["until"]:
            since = until - RANGES[f["range"]]
    except ValueError:
        raise ApiError(400, "bad_request", "since/until: YYYY-MM-DDTHH:MM (UTC)") from None
    if since >= until:
        raise ApiError(400, "bad_request", "since must be before until")
    f["since_ts"], f["until_ts"] = since, until
    f["kafter"] = q.get("kafter") or ""
    f["lcur"] = q.get("lcur") or ""
    return f


def link(f, **changes):
    """The console URL with the filters f, changed: cursors are dropped unless given."""
    params = {k: f[k] for k in ("mode", "key", "outcome", "scope", "range", "q", "since", "until") if f.get(k)}
    params.update(changes)
    return "/console?" + urlencode({k: v for k, v in params.items() if v not in (None, "")})


KEY_COLUMNS = ("key_id::text, name, mode, display_prefix, scopes, status, created_at, expires_at, revoked_at, "
               "revoked_reason, last_used_at, disabled_at, disabled_reason, rate_limit, rate_window::text, remaining, "
               "refill_amount, refill_interval::text, allowed_ips::text[], roles, effective_scopes, "
               "previous_secret_expires_at")
KEY_FIELDS = [c.split("::")[0].strip() for c in KEY_COLUMNS.split(",")]


def as_keys(rows):
    return [dict(zip(KEY_FIELDS, r)) for r in rows]


async def read_console(cur, ctx, f):
    """Everything the console shows, in the authenticated transaction: RLS
    confines every row to the key's merchant; the explicit merchant_id terms
    only let the planner use the (merchant_id, at) indexes."""
    await cur.execute("SELECT flint_require_scope('keys:read')")
    await cur.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
    if (await cur.fetchone())[0]:
        raise ApiError(500, "unsafe_role", "the console must run as a role subject to row-level security")
    await cur.execute("SELECT now(), (SELECT name FROM merchant_profile)")
    as_of, merchant_name = await cur.fetchone()
    data = {"as_of": as_of, "merchant_name": merchant_name, "merchant": ctx.merchant}

    # The key filter: an id or a display prefix of this merchant.
    key = None
    if f["key"]:
        column = "id" if not f["key"].startswith("fk_") else "display_prefix"
        await cur.execute(f"SELECT {KEY_COLUMNS} FROM flint.key_info WHERE key_id = "
                          f"(SELECT id FROM flint.api_keys WHERE {column} = %s LIMIT 1)", (f["key"],))
        found = as_keys(await cur.fetchall())
        if not found:
            raise ApiError(404, "not_found", "no such key for this merchant")
        key = found[0]
        f["key_id"] = key["key_id"]
        # This server's token buckets of the key (its own limit, its merchant's
        # shared one), read without taking a token.
        await cur.execute("SELECT applies_to, rate_limit, rate_window::text, tokens, full_at, full_at <= clock_timestamp() "
                          "FROM flint_rate_limit_state(%s::uuid)", (key["key_id"],))
        key["buckets"] = [dict(zip(("applies_to", "rate_limit", "rate_window", "tokens", "full_at", "full"), r))
                          for r in await cur.fetchall()]
    data["key"] = key

    # Keys: keyset pagination on (created_at, id); the page's ids first, then
    # key_info (whose per-key functions then run for these rows only).
    await cur.execute("SELECT count(*) FILTER (WHERE mode = %s), count(*) FILTER (WHERE mode = %s AND revoked_at IS NULL),"
                      "       count(*) FILTER (WHERE mode <> %s) FROM flint.api_keys"
                      " WHERE merchant_id = flint_current_merchant()", (f["mode"], f["mode"], f["mode"]))
    data["key_count"], data["unrevoked_count"], data["other_mode_count"] = await cur.fetchone()
    after_at, after_id = datetime(1970, 1, 1, tzinfo=timezone.utc), "00000000-0000-0000-0000-000000000000"
    if f["kafter"]:
        try:
            at_text, after_id = f["kafter"].split("|", 1)
            after_at, after_id = datetime.fromisoformat(at_text), str(uuid.UUID(after_id))
        except ValueError:
            raise ApiError(400, "bad_request", "bad keys cursor") from None
    await cur.execute(
        f"SELECT {KEY_COLUMNS} FROM flint.key_info WHERE key_id IN ("
        "  SELECT id FROM flint.api_keys WHERE merchant_id = flint_current_merchant() AND mode = %s"
        "     AND (created_at, id) > (%s, %s::uuid) ORDER BY created_at, id LIMIT %s) "
        "ORDER BY created_at, key_id", (f["mode"], after_at, after_id, KEYS_PER_PAGE + 1))
    keys = as_keys(await cur.fetchall())
    data["keys_next"] = None
    if len(keys) > KEYS_PER_PAGE:
        keys = keys[:KEYS_PER_PAGE]
        last = keys[-1]
        data["keys_next"] = link(f, kafter=f"{last['created_at'].isoformat()}|{last['key_id']}", lcur=f["lcur"])
    data["key_rows"] = keys

    # Request-id search: the app's own rows (indexed on request_id) bound the window.
    since, until = f["since_ts"], f["until_ts"]
    if f["q"]:
        await cur.execute("SELECT min(at) - interval '5 minutes', max(at) + interval '5 minutes' FROM api_requests "
                          "WHERE request_id = %s", (f["q"],))
        lo, hi = await cur.fetchone()
        if lo:
            since, until = lo, hi

    # Log rows: one per HTTP request (flint's authentication row, not the
    # guarded writes, which are folded in), newest first, keyset on (at, ties skipped).
    cur_at, skip = until, 0
    if f["lcur"]:
        try:
            at_text, skip_text = f["lcur"].split("|", 1)
            cur_at, skip = datetime.fromisoformat(at_text), int(skip_text)
        except ValueError:
            raise ApiError(400, "bad_request", "bad log cursor") from None
    await cur.execute(
        "SELECT r.at, r.key_id::text, r.display_prefix, r.scope, r.outcome, host(r.client_addr), r.request_id,"
        "       r.source, r.cost, h.method, h.path, h.status, h.latency_ms, g.writes"
        "  FROM flint.request_log AS r"
        "  LEFT JOIN LATERAL (SELECT a.method, a.path, a.status, a.latency_ms FROM api_requests AS a"
        "                      WHERE a.key_id = r.key_id AND a.request_id = r.request_id"
        "                      ORDER BY abs(extract(epoch FROM a.at - r.at)) LIMIT 1) AS h ON true"
        "  LEFT JOIN LATERAL (SELECT array_agg(CASE w.source WHEN 'guarded_write' THEN 'guarded write: '"
        "                                   WHEN 'require_scope' THEN 'scope check: ' ELSE w.source || ': ' END"
        "                                   || coalesce(w.scope || ' ', '') || w.outcome ORDER BY w.at) AS writes,"
        "                            array_agg(w.outcome) AS outcomes, array_agg(w.scope) AS scopes"
        "                       FROM flint.request_log AS w"
        "                      WHERE w.key_id = r.key_id AND w.merchant_id = r.merchant_id"
        "                        AND w.request_id = r.request_id AND w.source <> 'authenticate'"
        "                        AND w.at >= r.at AND w.at < r.at + interval '1 minute') AS g"
        "         ON r.source = 'authenticate' AND r.request_id IS NOT NULL"
        " WHERE r.merchant_id = flint_current_merchant() AND r.at >= %(since)s AND r.at < %(until)s"
        "   AND r.at <= %(cur_at)s"
        "   AND left(r.display_prefix, 8) = %(prefix)s"
        # A row after an authentication of the same request is folded into it.
        "   AND (r.source = 'authenticate' OR r.request_id IS NULL OR NOT EXISTS ("
        "        SELECT 1 FROM flint.request_log AS a WHERE a.key_id = r.key_id AND a.merchant_id = r.merchant_id"
        "           AND a.request_id = r.request_id AND a.source = 'authenticate'"
        "           AND a.at <= r.at AND a.at > r.at - interval '1 minute'))"
        "   AND (%(key)s::uuid IS NULL OR r.key_id = %(key)s::uuid)"
        + ("   AND (r.outcome = %(outcome)s OR %(outcome)s = ANY(g.outcomes))" if f["outcome"] in FOLDED_OUTCOMES
           else "   AND (%(outcome)s = '' OR r.outcome = %(outcome)s)") +
        "   AND (%(scope)s = '' OR r.scope = %(scope)s OR %(scope)s = ANY(g.scopes))"
        "   AND (%(q)s = '' OR r.request_id = %(q)s)"
        " ORDER BY r.at DESC OFFSET %(skip)s LIMIT %(n)s",
        {"since": since, "until": until, "cur_at": cur_at, "prefix": f"fk_{f['mode']}_", "key": f.get("key_id"),
         "outcome": f["outcome"], "scope": f["scope"], "q": f["q"], "skip": skip, "n": LOG_ROWS_PER_PAGE + 1})
    names = ("at", "key_id", "display_prefix", "scope", "outcome", "client", "request_id", "source", "cost",
             "method", "path", "status", "latency_ms", "writes")
    rows = [dict(zip(names, r)) for r in await cur.fetchall()]
    data["log_next"] = None
    if len(rows) > LOG_ROWS_PER_PAGE:
        rows = rows[:LOG_ROWS_PER_PAGE]
        last_at = rows[-1]["at"]
        ties = sum(1 for r in rows if r["at"] == last_at) + (skip if last_at == cur_at else 0)
        data["log_next"] = link(f, lcur=f"{last_at.isoformat()}|{ties}", kafter=f["kafter"])
    data["log"] = rows

    # The chart: what flint_usage counts (the rollups in flint.usage, plus the
    # log rows after the worker's watermark, flint._usage_watermark()), read
    # here with the watermark as a value: flint_usage itself took 0.6 s for any
    # window at 1M rollup rows of a merchant (its log branch is planned
    # generically, without the (merchant_id, at) index). Same rule as
    # flint_usage: only for a key holding logs:read. One snapshot for both.
    data["chart"] = None
    if any(s in ctx.scopes for s in ("logs:read", "logs:write", "logs:*")):
        span = until - since
        bucket = "minute" if span <= timedelta(hours=3) else "hour" if span <= timedelta(days=4) else "day"
        await cur.execute("SELECT flint._usage_watermark()")
        params = {"since": since, "until": until, "bucket": bucket, "key": f.get("key_id"), "mode": f["mode"],
                  "both_modes": data["other_mode_count"] > 0, "mark": (await cur.fetchone())[0]}
        await cur.execute(
            "WITH counts AS ("
            "  SELECT u.minute, u.key_id, u.outcome, u.requests FROM flint.usage AS u"
            "   WHERE u.merchant_id = flint_current_merchant()"
            "     AND u.minute >= date_trunc('minute', %(since)s::timestamptz) AND u.minute < %(until)s"
            "     AND (%(key)s::uuid IS NULL OR u.key_id = %(key)s::uuid)"
            "  UNION ALL"
            "  SELECT date_trunc('minute', l.at), l.key_id, l.outcome, 1 FROM flint.request_log AS l"
            "   WHERE l.merchant_id = flint_current_merchant()"
            "     AND l.at >= greatest(%(mark)s::timestamptz, date_trunc('minute', %(since)s::timestamptz))"
            "     AND l.at < %(until)s AND (%(key)s::uuid IS NULL OR l.key_id = %(key)s::uuid))"
            " SELECT date_trunc(%(bucket)s, c.minute AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', c.outcome,"
            "        sum(c.requests)::bigint"
            "   FROM counts AS c"
            "  WHERE NOT %(both_modes)s OR c.key_id IN (SELECT id FROM flint.api_keys WHERE mode = %(mode)s)"
            "  GROUP BY 1, 2", params)
        data["chart"] = chart(await cur.fetchall(), since, until, bucket)
    return data


def nice_ceiling(n):
    step = 1
    while True:
        for m in (1, 2, 5):
            if step * m >= n:
                return step * m
        step *= 10


def chart(rows, since, until, bucket, width=1060, height=200):
    """Stacked bars per bucket and outcome, as data for the SVG in the template."""
    step = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}[bucket]
    floor = {"minute": dict(second=0, microsecond=0), "hour": dict(minute=0, second=0, microsecond=0),
             "day": dict(hour=0, minute=0, second=0, microsecond=0)}[bucket]
    start = since.astimezone(timezone.utc).replace(**floor)
    n = max(1, math.ceil((until - start) / step))
    counts, totals = {}, {}
    for b, outcome, requests in rows:
        i = int((b - start) / step)
        if 0 <= i < n:
            counts.setdefault(i, {})[outcome] = counts.get(i, {}).get(outcome, 0) + requests
            totals[outcome] = totals.get(outcome, 0) + requests
    left, top, bottom = 48, 10, 24
    plot_w, plot_h = width - left - 8, height - top - bottom
    y_max = nice_ceiling(max([sum(c.values()) for c in counts.values()] + [1]))
    slot = plot_w / n
    order = {o: i for i, o in enumerate(OUTCOMES)}
    bars = []
    for i, c in sorted(counts.items()):
        y = top + plot_h
        for outcome in sorted(c, key=lambda o: (order.get(o, 99), o)):
            h = c[outcome] / y_max * plot_h
            y -= h
            bars.append({"x": left + i * slot + 0.5, "y": y, "w": max(slot - 1, 0.6), "h": h, "outcome": outcome,
                         "count": c[outcome], "colour": family(outcome)[1], "start": start + i * step})
    fmt = {"minute": "%H:%M", "hour": "%d %H:00", "day": "%m-%d"}[bucket]
    ticks = [{"x": left + (i + 0.5) * slot, "label": utc(start + i * step, fmt)}
             for i in range(0, n, max(1, n // 8))]
    grid = [{"y": top + plot_h - frac * plot_h, "label": f"{y_max * frac:g}"} for frac in (0, 0.5, 1)]
    legend = [(o, totals[o], family(o)) for o in sorted(totals, key=lambda o: (order.get(o, 99), o))]
    return {"bars": bars, "ticks": ticks, "grid": grid, "legend": legend, "bucket": bucket, "width": width,
            "height": height, "left": left, "top": top, "plot_w": plot_w, "plot_h": plot_h,
            "label": f"Requests per {bucket} by outcome, {utc(since, '%Y-%m-%d %H:%M')} to {utc(until, '%Y-%m-%d %H:%M')} UTC"}


def console_token(request, allow_header):
    """The secret the console acts with: the Authorization header (/dashboard),
    the signed-in session, or the demo key."""
    token = bearer(request) if allow_header else None
    if token:
        return token, None
    sid, s = session_of(request)
    if s:
        return s["secret"], s
    return State.demo_key, None


async def console(request, ctx, allow_header=False):
    q = request.query_params
    if any(name.lower() in ("token", "secret", "api_key") for name in q) or \
            any(TOKEN_SHAPE.match(v.strip()) for v in q.values()):
        raise ApiError(400, "bad_request", "a secret does not belong in a URL: sign in or send Authorization: Bearer")
    token, session = console_token(request, allow_header)
    if not token:
        if allow_header:
            raise ApiError(401, "malformed_key", "send Authorization: Bearer <a key with keys:read>",
                           headers={"WWW-Authenticate": 'Bearer realm="payments"'})
        return page("console_signin.html", error=None)
    # The filters are checked before authenticating, and again with the key's mode as the default.
    console_filters(request, "live")
    f = {}

    async def work(cur):
        f.update(console_filters(request, ctx.mode or "live"))
        return await read_console(cur, ctx, f)
    try:
        data = await in_transaction(request, ctx, work, token, cost=0, snapshot=True)
    except ApiError as e:
        if session and e.status == 401:  # the key was revoked, disabled or expired since: sign out
            SESSIONS.pop(request.cookies.get(SESSION_COOKIE), None)
            return page("console_signin.html", 401, error=e)
        raise
    can_write = bool(session) and any(s in ctx.scopes for s in ("keys:write", "keys:*"))
    return page("console.html", data=data, f=f, link=lambda **c: link(f, **c), session=session,
                can_write=can_write, signed_in_prefix=(token or "")[:16], done=request.query_params.get("done"),
                request_id=ctx.request_id)


async def dashboard(request, ctx):
    return await console(request, ctx, allow_header=True)


async def console_page(request, ctx):
    return await console(request, ctx, allow_header=False)


async def sign_in(request, ctx):
    same_origin(request)
    form, _ = await read_form(request)
    secret = (form.get("secret") or "").strip()

    async def work(cur):
        await cur.execute("SELECT flint_require_scope('keys:read')")
    try:
        await in_transaction(request, ctx, work, secret, cost=0)
    except ApiError as e:
        return page("console_signin.html", e.status, error=e)
    sid = pysecrets.token_urlsafe(32)
    SESSIONS[sid] = {"secret": secret, "csrf": pysecrets.token_urlsafe(32), "expires": time.time() + SESSION_SECONDS,
                     "prefix": secret[:16]}
    response = RedirectResponse("/console", 303)
    response.set_cookie(SESSION_COOKIE, sid, max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                        secure=State.cookie_secure, path="/")
    return response


def checked_session(request, form):
    same_origin(request)
    sid, s = session_of(request)
    if not s:
        raise ApiError(401, "signed_out", "sign in first (the session ended)")
    if not hmac.compare_digest(form.get("csrf", ""), s["csrf"]):
        raise ApiError(403, "csrf", "the form's CSRF token does not match this session; reload the page")
    return sid, s


async def sign_out(request, ctx):
    form, _ = await read_form(request)
    sid, _ = checked_session(request, form)
    SESSIONS.pop(sid, None)
    response = RedirectResponse("/console", 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def create_key(request, ctx):
    form, multi = await read_form(request)
    _, s = checked_session(request, form)
    name = (form.get("name") or "").strip()
    scopes = sorted({x for x in re.split(r"[\s,]+", form.get("scopes") or "") if x})
    mode = form.get("mode") or "live"
    days = (form.get("expires_days") or "").strip()
    if not 1 <= len(name) <= 100 or not scopes or not all(SCOPE.match(x) for x in scopes) or mode not in ("live", "test"):
        raise ApiError(400, "bad_request", "a name (1-100 characters), scopes (resource:action ...) and mode live or test")
    if days and (not days.isdigit() or not 1 <= int(days) <= 3650):
        raise ApiError(400, "bad_request", "expires in days: 1-3650, or empty for never")

    async def work(cur):
        await cur.execute("SELECT key_id::text, secret, display_prefix FROM flint_create_key("
                          "flint_current_merchant(), %s, %s::text[], now() + make_interval(days => %s), %s)",
                          (name, scopes, int(days) if days else None, mode))
        return await cur.fetchone()
    key_id, secret, prefix = await in_transaction(request, ctx, work, s["secret"], cost=0)
    return page("console_secret.html", what="created", key_id=key_id, secret=secret, prefix=prefix, name=name)


async def key_action(request, ctx):
    form, _ = await read_form(request)
    _, s = checked_session(request, form)
    action = request.path_params["action"]
    try:
        key_id = str(uuid.UUID(request.path_params["key_id"]))
    except ValueError:
        raise ApiError(404, "not_found", "no such key") from None
    reason = (form.get("reason") or "").strip()[:200] or None
    if action == "revoke" and not reason:
        raise ApiError(400, "bad_request", "a revocation needs a reason")
    if action == "rotate" and form.get("grace", "0") not in GRACES:
        raise ApiError(400, "bad_request", "grace: " + ", ".join(GRACES))

    async def work(cur):
        if action == "rotate":
            await cur.execute("SELECT key_id::text, secret, display_prefix FROM flint_rotate_key(%s::uuid, %s::interval)",
                              (key_id, GRACES[form.get("grace", "0")]))
            return await cur.fetchone()
        if action == "disable":
            await cur.execute("SELECT status FROM flint_disable_key(%s::uuid, %s)", (key_id, reason))
        elif action == "enable":
            await cur.execute("SELECT status FROM flint_enable_key(%s::uuid)", (key_id,))
        elif action == "revoke":
            await cur.execute("SELECT status FROM flint_revoke_key(%s::uuid, %s)", (key_id, reason))
        return None
    if action not in ("rotate", "disable", "enable", "revoke"):
        raise ApiError(404, "not_found", "no such action")
    result = await in_transaction(request, ctx, work, s["secret"], cost=0)
    if action == "rotate":
        return page("console_secret.html", what="rotated", key_id=result[0], secret=result[1], prefix=result[2],
                    grace=GRACES[form.get("grace", "0")])
    return RedirectResponse("/console?" + urlencode({"key": key_id, "done": action + "d"}), 303)


###############################################################################
# The application.
###############################################################################
async def not_found(request, exc):
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "bad_request")
    return JSONResponse({"error": {"code": code, "message": "no such endpoint" if status == 404 else exc.detail}},
                        status)


class LazyPool:
    """A pool that connects at its first use: a server that only receives
    leak reports never logs in as the application role."""

    def __init__(self, dsn, size):
        self._pool = AsyncConnectionPool(dsn, min_size=1, max_size=size, open=False, timeout=10,
                                         kwargs={"prepare_threshold": None, "autocommit": False})
        self._opened = False
        self._lock = None

    @contextlib.asynccontextmanager
    async def connection(self):
        if not self._opened:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if not self._opened:
                    await self._pool.open()
                    self._opened = True
        async with self._pool.connection() as conn:
            yield conn

    async def close(self):
        if self._opened:
            await self._pool.close()


async def lifespan(app):
    yield
    await State.pool.close()
    if State.receiver_pool:
        await State.receiver_pool.close()


def make_app():
    routes = [
        Route("/payments", endpoint(list_payments), methods=["GET"]),
        Route("/payments", endpoint(create_payment), methods=["POST"]),
        Route("/requests", endpoint(list_requests), methods=["GET"]),
        Route("/secret-scanning", endpoint(secret_scanning, record=False, scanner=True), methods=["POST"]),
        Route("/dashboard", endpoint(dashboard, html=True), methods=["GET"]),
        Route("/console", endpoint(console_page, html=True), methods=["GET"]),
        Route("/console/sign-in", endpoint(sign_in, html=True), methods=["POST"]),
        Route("/console/sign-out", endpoint(sign_out, html=True, record=False), methods=["POST"]),
        Route("/console/keys", endpoint(create_key, html=True), methods=["POST"]),
        Route("/console/keys/{key_id}/{action}", endpoint(key_action, html=True), methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found}, lifespan=lifespan)


def make_pool(dsn, size):
    # No prepared statements, so the same code works through PgBouncer in transaction pooling mode.
    return LazyPool(dsn, size)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--demo-merchant-key-file", metavar="PATH",
                        help="a file whose first line is a keys:read secret, used by /dashboard and /console "
                             "without signing in")
    parser.add_argument("--cookie-secure", action="store_true", help="mark the console's session cookie Secure "
                        "(behind HTTPS)")
    parser.add_argument("--scanner-public-keys", metavar="PATH",
                        help="JSON file of trusted secret-scanner keys (key identifier -> PEM, or GitHub's "
                             "public_keys format); enables POST /secret-scanning")
    parser.add_argument("--scanner-insecure-no-signature", action="store_true",
                        help="enable POST /secret-scanning WITHOUT signature verification (local demos only)")
    parser.add_argument("--trust-forwarded-for", action="store_true",
                        help="take the client address from the X-Forwarded-For entry our proxy added, the last "
                             "one (only behind proxies of ours); default: the request's peer address")
    parser.add_argument("--forwarded-hops", type=int, default=1, metavar="N",
                        help="with --trust-forwarded-for: our proxies in a chain; the N-th entry from the end "
                             "(default 1)")
    args = parser.parse_args()
    if args.forwarded_hops < 1:
        parser.error("--forwarded-hops must be at least 1")
    if args.scanner_public_keys and args.scanner_insecure_no_signature:
        parser.error("--scanner-public-keys and --scanner-insecure-no-signature exclude each other")
    State.trust_forwarded_for = args.trust_forwarded_for
    State.forwarded_hops = args.forwarded_hops
    State.cookie_secure = args.cookie_secure
    State.pool = make_pool(os.environ["FLINT_DSN"], args.pool_size)
    if args.scanner_public_keys or args.scanner_insecure_no_signature:
        State.receiver_pool = make_pool(os.environ.get("FLINT_RECEIVER_DSN") or os.environ["FLINT_DSN"], 2)
    if args.scanner_public_keys:
        try:
            State.scanner_keys = ScannerKeys(args.scanner_public_keys)
        except ImportError:
            parser.error("--scanner-public-keys needs the cryptography package (Debian: python3-cryptography)")
        except (OSError, ValueError) as e:
            parser.error(f"--scanner-public-keys {args.scanner_public_keys}: {e}")
    if args.scanner_insecure_no_signature:
        State.scanner_insecure = True
        warn("warning: --scanner-insecure-no-signature: POST /secret-scanning accepts UNSIGNED reports; "
             "anyone who can reach this port can revoke keys whose secrets they hold. Local demos only.")
    if args.demo_merchant_key_file:
        with open(args.demo_merchant_key_file, encoding="utf-8") as f:
            State.demo_key = f.readline().strip() or None
        if not State.demo_key:
            parser.error("--demo-merchant-key-file: the file is empty")
        if args.host not in ("127.0.0.1", "::1", "localhost"):
            warn(f"warning: demo mode shows the merchant's console to anyone who can reach {args.host}:{args.port}")
    import uvicorn
    # No access log (URLs and headers stay out of the output), no proxy-header
    # rewriting of the peer address (--trust-forwarded-for decides that here).
    config = uvicorn.Config(make_app(), host=args.host, port=args.port, access_log=False, log_level="warning",
                            proxy_headers=False, server_header=False, lifespan="on")
    print(f"payments_api listening on http://{args.host}:{args.port}", flush=True)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
