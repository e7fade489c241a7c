#!/usr/bin/python3
r"""A small payments API on top of flint_keys.

Each request's transaction starts with flint_authenticate(<bearer token>,
<client address>, <cost>); row-level security then confines every query to
that key's merchant, and the flint error codes map to HTTP statuses.
Standard library + psycopg 3 only.

    FLINT_DSN="host=/tmp dbname=payments user=checkout_app" ./server.py --port 8080

    POST /payments      {"amount_cents": 1250, "currency": "EUR"}   needs payments:write   cost 1
    GET  /payments                                                  needs payments:read    cost 0
    GET  /requests      this key's request-log rows, newest first                          cost 0
    GET  /dashboard     HTML: the merchant's API keys and logs        needs keys:read        cost 0

Traffic controls (flint_keys 1.2: the key's rate limit, its merchant's rate
limit, its usage quota, its IP allowlist):

  * The client address checked against the key's allowlist (and written to
    the request log's client_addr) is the end client's: the HTTP peer address
    of the request, an IPv4-mapped IPv6 peer (::ffff:a.b.c.d, from a
    dual-stack socket) taken as the IPv4 address it maps. Behind a reverse
    proxy that peer is the proxy; start the server with

        ./server.py --trust-forwarded-for

    to use the X-Forwarded-For entry your proxy added instead: the last one
    (a proxy appends the address it saw to whatever the client sent, so only
    entries added by your own proxies can be trusted; the first is the
    client's to choose). Behind a chain of N proxies of yours, add
    --forwarded-hops N: the N-th entry from the end. The peer address is used
    when the header is absent; 400 bad_request when the entry is not an IP
    address or the header has fewer than N entries. Only do this when every
    request reaches the server through your proxies: otherwise any client
    picks the address its key's allowlist is checked against. The address is passed explicitly, so the database connection's
    own address (a Unix socket, PgBouncer) never matters.
  * Cost: the units a request weighs against the key's usage quota. Creating
    a payment costs 1; reads (GET) cost 0, so a key whose quota is used up can
    still list what it made. Every request, whatever its cost, counts against
    the rate limits. A request that authenticated and then failed (say a
    refused write) has spent its unit.
  * Refusals:
        FK009 rate_limited    429, Retry-After: the seconds until a request can
                              succeed again (the DETAIL's "retry after N ms"
                              rounded up, at least 1); the body's error object
                              also carries "retry_after_seconds" and "limit"
                              ("key" or "merchant", whose rate limit refused it)
        FK010 usage_exceeded  429, no Retry-After (a quota refills per UTC day or
                              month, if at all; the server does not know when)
        FK011 ip_not_allowed  403
    with the usual JSON error body, e.g.
        {"error": {"code": "rate_limited", "message": "rate_limited: key fk_live_ab12 is over its rate limit",
                   "retry_after_seconds": 1200, "limit": "key"}}

The dashboard is one server-rendered page (no JavaScript, no external assets):
the merchant's keys (display prefix, name, scopes, status, last used,
expiry, outcome counts of the last hour), a chart of outcomes per minute over
the last hour as inline SVG, and per key its newest 20 request-log rows. It
reads flint.key_info and flint.request_log in the request's transaction after
flint_authenticate, so row-level security alone confines it to the key's
merchant (the server refuses to render it for a role that bypasses RLS).
Secrets never appear in it, only display prefixes. The page shows the state
as of the start of its transaction: its own authentication is not counted.

It authenticates like every other endpoint, with `Authorization: Bearer
fk_...`. A secret in the URL (`?key=...`) is refused, since URLs end up in
browser history, proxy and server logs. For looking at it in a browser there
is a demo mode:

    ./server.py --port 8080 --demo-merchant-key-file /path/to/keys_read_secret

reads a keys:read secret from that file (first line) at startup and uses it
for /dashboard requests that carry no Authorization header, so
http://127.0.0.1:8080/dashboard opens without one. Anyone who can reach the
port then sees that merchant's dashboard: keep the file private (mode 0600)
and the server on loopback. The other endpoints never use the demo key.

Secret scanning: a receiver for GitHub's secret scanning partner program
(or any scanner that speaks its protocol).

    POST /secret-scanning   [{"token": "fk_live_...", "type": "flint_live_key",
                              "url": "https://github.com/...", "source": "content"}, ...]

GitHub posts a JSON array of the tokens it found (at most 1000 entries here;
more is 413, a body over 1 MiB too, no Content-Length 411; anything that is
not such an array of objects with string "token", "type" and "source", and
optional string "url", is 400, with a JSON error body that names the entry
and field but never a value). The entries are grouped by "source" and each group is one call of
flint_report_leaked(tokens, 'github:<source>'), all in one transaction: a
token that is a key's current secret, or its pre-rotation secret still in
grace, revokes that key at once with reason 'leaked via github:<source>'
(e.g. 'leaked via github:commit') and event 'leaked'; either the whole batch
is reported or, on a database error (500; 503 when the request log is full
or the database cannot be reached), none of it, and GitHub retries. Every token leaves a request-log row
(source 'report_leaked') carrying the request's X-Request-Id, or a generated
"scan-..." id when the scanner sent none (echoed in the X-Request-Id response
header). The answer is 200 with one entry per input token, in input order:

    [{"token_hash": "<hex sha256 of the token>", "token_type": "<its type>",
      "label": "true_positive" | "false_positive"}, ...]

true_positive when the token is a key (revoked now or already revoked),
false_positive for anything else. Tokens are never logged or echoed, not even
in error messages; stderr gets one line per batch with the request id, the
counts and the ids of the keys revoked.

The receiver runs on its own connections, as a role that holds nothing but
EXECUTE on flint_report_leaked(text[], text) (leak_receiver in schema.sql):
FLINT_RECEIVER_DSN, or FLINT_DSN when it is not set.

GitHub signs the raw body with ECDSA P-256 / SHA-256 and sends the headers
Github-Public-Key-Identifier and Github-Public-Key-Signature (base64 of the
DER signature). The endpoint is off (404) unless one of these is given:

    --scanner-public-keys PATH   the trusted keys, a JSON file in either form:
        GitHub's own (the body of GET https://api.github.com/meta/public_keys/secret_scanning,
        fetched by you; this server never goes to the network):
            {"public_keys": [{"key_identifier": "90a421...", "key": "-----BEGIN PUBLIC KEY-----\n..."}, ...]}
        or a plain map of key identifier -> PEM:
            {"90a421...": "-----BEGIN PUBLIC KEY-----\n..."}
      Every key must be an EC P-256 public key. The file is read at startup
      (an unreadable or invalid file stops the server) and again whenever it
      changes, so GitHub's key rotation needs no restart (replace it
      atomically, e.g. write and rename; a broken new file keeps the old keys
      and is reported on stderr). A request whose key identifier is missing or
      unknown, or whose signature does not verify over the exact bytes
      received, is refused with 401 before its body is parsed, and nothing
      is reported. Verification uses the `cryptography` package
      (Debian: python3-cryptography).
    --scanner-insecure-no-signature   accept unsigned requests: for local demos
      only (warns on stderr). Anyone who can reach the port can then revoke
      any key whose secret they hold.

    FLINT_RECEIVER_DSN="host=/tmp dbname=payments user=leak_receiver" \
        ./server.py --port 8080 --scanner-public-keys /etc/flint/github_scanning_keys.json
"""
import argparse
import base64
import binascii
import hashlib
import html
import ipaddress
import json
import math
import os
import queue
import re
import socket
import sys
import threading
import uuid
from datetime import timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

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
    "FK009": 429,  # rate_limited (1.2): with Retry-After
    "FK010": 429,  # usage_exceeded (1.2)
    "FK011": 403,  # ip_not_allowed (1.2)
    "FK012": 401,  # key_disabled (1.2)
    "53000": 503,  # log_queue_full: fail closed, retry later
}


# The DETAIL of a rate_limited error: "retry after N ms", then " (the merchant's
# rate limit)" when the merchant's limit refused the call. (A full rate-limit
# table gives another DETAIL and no time: then Retry-After is 1.)
RETRY_AFTER = re.compile(r"^retry after (\d+) ms")


def retry_after_seconds(detail):
    """Whole seconds for Retry-After: the ms of the DETAIL rounded up, at least 1."""
    m = RETRY_AFTER.match(detail or "")
    return max(1, math.ceil(int(m.group(1)) / 1000)) if m else 1


def parse_address(text):
    """An address as a peer or X-Forwarded-For gives it ("a.b.c.d", "a.b.c.d:port",
    "v6", "[v6]:port", "fe80::1%eth0") -> its text form for inet; an IPv4-mapped
    IPv6 address becomes the IPv4 address (flint never matches one against an
    IPv4 network). Raises ValueError for anything else."""
    t = text.strip()
    if t.startswith("[") and "]" in t:
        t = t[1:t.index("]")]
    elif t.count(":") == 1:
        t = t.split(":", 1)[0]
    ip = ipaddress.ip_address(t.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip)


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
        try:
            return psycopg.connect(self._dsn, prepare_threshold=None, autocommit=False)
        except BaseException:
            self._slots.release()  # a failed connect must not use up a slot
            raise

    def put(self, conn):
        if not conn.closed:
            self._free.put(conn)
        self._slots.release()


# POST /secret-scanning limits.
SCAN_MAX_TOKENS = 1000
SCAN_MAX_BODY = 1 << 20
# field -> (required, at most this many characters)
SCAN_FIELDS = {"token": (True, 1024), "type": (True, 100), "source": (True, 100), "url": (False, 2048)}


def warn(message):
    print(message, file=sys.stderr, flush=True)


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


def report_leaked(cur, matches):
    """One flint_report_leaked call per distinct source, in this transaction.
    Returns (key_id, outcome) per match, in input order."""
    by_source = {}
    for i, match in enumerate(matches):
        by_source.setdefault(match["source"], []).append(i)
    results = [None] * len(matches)
    for source, positions in by_source.items():
        rows = cur.execute(
            "SELECT key_id::text, outcome FROM flint_report_leaked(%s::text[], %s) WITH ORDINALITY "
            "AS r(display_prefix, key_id, outcome, ord) ORDER BY ord",
            ([matches[i]["token"] for i in positions], "github:" + source)).fetchall()
        if len(rows) != len(positions):
            raise RuntimeError("flint_report_leaked answered a different number of rows")
        for i, row in zip(positions, rows):
            results[i] = row
    return results


# The dashboard's colour per outcome code, in the order the chart stacks them.
OUTCOME_COLOURS = {
    "ok": "#2e7d32",
    "malformed_key": "#f9a825",
    "invalid_key": "#c62828",
    "key_revoked": "#6a1b9a",
    "key_expired": "#8d6e63",
    "key_disabled": "#ad1457",
    "missing_scope": "#ef6c00",
    "wrong_merchant": "#1565c0",
    "merchant_suspended": "#455a64",
    "unknown_scope": "#00838f",
    "log_queue_full": "#212121",
    "rate_limited": "#ff8f00",
    "usage_exceeded": "#5d4037",
    "ip_not_allowed": "#b71c1c",
}
STATUS_COLOURS = {"active": "#2e7d32", "expired": "#757575", "revoked": "#c62828", "disabled": "#ef6c00"}
CHART_MINUTES = 61  # (now - 1 hour, now] touches 61 calendar minutes
LOG_ROWS_PER_KEY = 20


def esc(value):
    """Every value that reaches the page goes through here."""
    return html.escape("" if value is None else str(value), quote=True)


def utc(ts, seconds=True):
    if ts is None:
        return ""
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%H:%M")


def outcome_colour(outcome):
    return OUTCOME_COLOURS.get(outcome, "#9e9e9e")


def outcome_order(outcomes):
    known = list(OUTCOME_COLOURS)
    return sorted(outcomes, key=lambda o: (known.index(o) if o in known else len(known), o))


def read_dashboard(cur):
    """Everything the dashboard shows, read in the authenticated transaction:
    row-level security confines every row to the key's merchant. Times are
    'as of now()', the transaction's start, so this request's own
    authentication (logged a moment later) is not in the counts."""
    cur.execute("SELECT flint_require_scope('keys:read')")
    # The page relies on RLS alone, as the rest of the app does: refuse to
    # render it for a role that would see every merchant's rows.
    if cur.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
        raise ApiError(500, "unsafe_role", "the dashboard must run as a role subject to row-level security")
    as_of, merchant = cur.execute("SELECT now(), flint_current_merchant()::text").fetchone()
    keys = cur.execute(
        "SELECT key_id::text, display_prefix, name, mode, scopes, status, last_used_at, expires_at "
        "FROM flint.key_info ORDER BY created_at, key_id").fetchall()
    per_minute = cur.execute(
        "SELECT key_id::text, date_trunc('minute', at), outcome, count(*) FROM flint.request_log "
        "WHERE at > now() - interval '1 hour' AND at <= now() GROUP BY 1, 2, 3").fetchall()
    logs = cur.execute(
        "SELECT k.key_id::text, l.at, l.scope, l.outcome, host(l.client_addr), l.request_id "
        "FROM flint.key_info AS k CROSS JOIN LATERAL ("
        "  SELECT r.at, r.scope, r.outcome, r.client_addr, r.request_id FROM flint.request_log AS r"
        "   WHERE r.key_id = k.key_id AND r.at <= now() ORDER BY r.at DESC LIMIT %s) AS l "
        "ORDER BY k.key_id, l.at DESC", (LOG_ROWS_PER_KEY,)).fetchall()
    return {"as_of": as_of, "merchant": merchant, "keys": keys, "per_minute": per_minute, "logs": logs}


def nice_ceiling(n):
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is >= n."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if step * m >= n:
                return step * m
        step *= 10


def render_chart(counts, start, svg_id, css_class, width, height, label):
    """Stacked bars of outcomes per minute as inline SVG. counts maps
    (minute index, outcome) -> rows."""
    left, right, top, bottom = 44, 8, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(c for (i, _), c in counts.items() if i == m) for m in range(CHART_MINUTES)]
    y_max = nice_ceiling(max(totals + [1]))
    slot = plot_w / CHART_MINUTES
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="{esc(svg_id)}" class="{esc(css_class)}" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}">',
           f'<title>{esc(label)}</title>',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#e0e0e0"/>']
    for frac in (0, 0.5, 1):
        y = top + plot_h - frac * plot_h
        value = y_max * frac
        text = f"{value:g}" if value == int(value) else f"{value:.1f}"
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e0e0e0"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{esc(text)}</text>')
    for m in range(0, CHART_MINUTES, 10):
        x = left + (m + 0.5) * slot
        out.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle" class="axis">'
                   f'{esc(utc(start + timedelta(minutes=m), seconds=False))}</text>')
    outcomes = outcome_order({o for (_, o) in counts})
    for m in range(CHART_MINUTES):
        y = top + plot_h
        minute = start + timedelta(minutes=m)
        for outcome in outcomes:
            n = counts.get((m, outcome), 0)
            if not n:
                continue
            h = n / y_max * plot_h
            y -= h
            out.append(
                f'<rect class="bar" data-minute="{esc(minute.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"))}" '
                f'data-outcome="{esc(outcome)}" data-count="{n}" x="{left + m * slot + 1:.1f}" y="{y:.1f}" '
                f'width="{max(slot - 2, 1):.1f}" height="{h:.1f}" fill="{outcome_colour(outcome)}">'
                f'<title>{esc(utc(minute, seconds=False))} UTC {esc(outcome)}: {n}</title></rect>')
    out.append("</svg>")
    return "".join(out)


def render_counts(counts, css_class):
    if not counts:
        return '<span class="none">none</span>'
    return " ".join(
        f'<span class="{css_class}" data-outcome="{esc(o)}" style="background:{outcome_colour(o)}" '
        f'title="{esc(o)}">{counts[o]}</span>' for o in outcome_order(counts))


PAGE_STYLE = """
body { font-family: "DejaVu Sans", system-ui, sans-serif; font-size: 14px; color: #212121; margin: 0; background: #f5f5f5; }
header { background: #263238; color: #fff; padding: 14px 24px; }
header h1 { margin: 0; font-size: 20px; } header p { margin: 4px 0 0; color: #cfd8dc; font-size: 12px; }
main { max-width: 1120px; margin: 0 auto; padding: 16px 24px 32px; }
section { background: #fff; border: 1px solid #e0e0e0; border-radius: 6px; padding: 12px 16px; margin: 16px 0; }
h2 { font-size: 16px; margin: 0 0 10px; } h2 .name { font-weight: normal; color: #546e7a; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eeeeee; vertical-align: top; }
th { font-size: 12px; color: #607d8b; font-weight: 600; }
code, .mono { font-family: "DejaVu Sans Mono", monospace; font-size: 12px; }
.status { color: #fff; border-radius: 3px; padding: 1px 6px; font-size: 12px; }
.outcome-count, .merchant-outcome-count { color: #fff; border-radius: 9px; padding: 1px 7px; font-size: 12px; }
.legend span { display: inline-block; margin-right: 14px; font-size: 12px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
.axis { font-size: 10px; fill: #757575; font-family: "DejaVu Sans", sans-serif; }
.none, .empty { color: #9e9e9e; }
.outcome { font-weight: 600; }
"""


def render_dashboard(data):
    as_of = data["as_of"]
    start = (as_of - timedelta(hours=1)).replace(second=0, microsecond=0)
    merchant_counts, key_counts, key_minutes = {}, {}, {}
    for key_id, minute, outcome, n in data["per_minute"]:
        m = int((minute - start).total_seconds() // 60)
        merchant_counts[(m, outcome)] = merchant_counts.get((m, outcome), 0) + n
        key_counts.setdefault(key_id, {})
        key_counts[key_id][outcome] = key_counts[key_id].get(outcome, 0) + n
        key_minutes.setdefault(key_id, {})[(m, outcome)] = n
    merchant_totals = {}
    for (_, outcome), n in merchant_counts.items():
        merchant_totals[outcome] = merchant_totals.get(outcome, 0) + n
    logs = {}
    for key_id, *row in data["logs"]:
        logs.setdefault(key_id, []).append(row)

    p = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         '<title>API keys &amp; logs</title>', f'<style>{PAGE_STYLE}</style></head><body>',
         '<header><h1>API keys &amp; logs</h1>',
         f'<p>Merchant <span id="merchant" class="mono" data-merchant-id="{esc(data["merchant"])}">{esc(data["merchant"])}</span>'
         f' · as of <time id="as-of" datetime="{esc(as_of.astimezone(timezone.utc).isoformat())}">{esc(utc(as_of))} UTC</time></p>',
         '</header><main>']

    p.append('<section id="last-hour"><h2>Requests per minute, last hour <span class="name">(UTC)</span></h2>')
    p.append(render_chart(merchant_counts, start, "outcome-chart", "chart", 1060, 220,
                          "Outcomes per minute over the last hour"))
    p.append('<div class="legend">')
    for outcome in outcome_order(merchant_totals):
        p.append(f'<span><i style="background:{outcome_colour(outcome)}"></i>{esc(outcome)} '
                 f'<b class="merchant-outcome-count" data-outcome="{esc(outcome)}" '
                 f'style="background:{outcome_colour(outcome)}">{merchant_totals[outcome]}</b></span>')
    if not merchant_totals:
        p.append('<span class="empty">No requests in the last hour.</span>')
    p.append('</div></section>')

    p.append(f'<section id="keys-section"><h2>Keys <span class="name">({len(data["keys"])})</span></h2>')
    p.append('<table id="keys"><thead><tr><th>Key</th><th>Name</th><th>Scopes</th><th>Status</th>'
             '<th>Last used (UTC)</th><th>Expires (UTC)</th><th>Last hour</th></tr></thead><tbody>')
    for key_id, prefix, name, mode, scopes, status, last_used, expires in data["keys"]:
        p.append(
            f'<tr class="key" id="key-row-{esc(key_id)}" data-key-id="{esc(key_id)}" data-status="{esc(status)}" '
            f'data-mode="{esc(mode)}">'
            f'<td class="display-prefix"><a href="#key-{esc(key_id)}"><code>{esc(prefix)}…</code></a></td>'
            f'<td class="name">{esc(name)}</td>'
            f'<td class="scopes">{" ".join(f"<code>{esc(s)}</code>" for s in scopes or [])}</td>'
            f'<td><span class="status" data-status="{esc(status)}" '
            f'style="background:{STATUS_COLOURS.get(status, "#9e9e9e")}">{esc(status)}</span></td>'
            f'<td class="last-used">{esc(utc(last_used)) or "never"}</td>'
            f'<td class="expires">{esc(utc(expires)) or "never"}</td>'
            f'<td class="last-hour">{render_counts(key_counts.get(key_id, {}), "outcome-count")}</td></tr>')
    if not data["keys"]:
        p.append('<tr><td colspan="7" class="empty">No keys.</td></tr>')
    p.append('</tbody></table></section>')

    for key_id, prefix, name, *_ in data["keys"]:
        rows = logs.get(key_id, [])
        p.append(f'<section class="key-log" id="key-{esc(key_id)}" data-key-id="{esc(key_id)}">'
                 f'<h2><code>{esc(prefix)}…</code> <span class="name">{esc(name)}</span></h2>')
        p.append(render_chart(key_minutes.get(key_id, {}), start, f"chart-{key_id}", "key-chart", 1060, 90,
                              f"Outcomes per minute over the last hour for {prefix}"))
        p.append(f'<table class="log"><thead><tr><th>At (UTC)</th><th>Scope</th><th>Outcome</th><th>Client</th>'
                 f'<th>Request id</th></tr></thead><tbody>')
        for at, scope, outcome, client, request_id in rows:
            p.append(f'<tr class="log-row" data-outcome="{esc(outcome)}"><td class="at">{esc(utc(at))}</td>'
                     f'<td class="scope">{esc(scope) or "—"}</td>'
                     f'<td class="outcome" style="color:{outcome_colour(outcome)}">{esc(outcome)}</td>'
                     f'<td class="client">{esc(client) or "local"}</td><td class="request-id mono">{esc(request_id)}</td></tr>')
        if not rows:
            p.append('<tr><td colspan="5" class="empty">No requests yet.</td></tr>')
        p.append(f'</tbody></table><p class="empty">Newest {LOG_ROWS_PER_KEY} requests.</p></section>')
    p.append('</main></body></html>')
    return "".join(p)


class ApiError(Exception):
    def __init__(self, status, code, message, headers=None, extra=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}  # extra response headers (Retry-After)
        self.extra = extra or {}      # extra members of the JSON error object

    def body(self):
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


class Handler(BaseHTTPRequestHandler):
    pool = None
    demo_key = None  # --demo-merchant-key-file: used by /dashboard when no Authorization header is sent
    receiver_pool = None  # POST /secret-scanning: connections as the leak_receiver role
    scanner_keys = None  # --scanner-public-keys
    scanner_insecure = False  # --scanner-insecure-no-signature
    trust_forwarded_for = False  # --trust-forwarded-for
    forwarded_hops = 1  # --forwarded-hops: our proxies in front of us
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep test output quiet; never log headers (they hold keys)
        pass

    def _send(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _send_html(self, status, page, headers=None):
        data = page.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        # Inline styles and SVG only: nothing is loaded from anywhere, no script runs.
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Content-Type-Options", "nosniff")
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _token(self):
        header = self.headers.get("Authorization", "")
        return header[7:].strip() if header.startswith("Bearer ") else None

    def _client_ip(self):
        """The end client's address, for the key's allowlist and the request
        log: the peer's, or with --trust-forwarded-for the X-Forwarded-For
        entry our nearest proxy added (--forwarded-hops from the end), when
        there is the header. Entries before it are the client's to choose."""
        if self.trust_forwarded_for:
            forwarded = self.headers.get_all("X-Forwarded-For") or []
            entries = [e.strip() for e in ",".join(forwarded).split(",")]
            if forwarded:
                if len(entries) < self.forwarded_hops:
                    raise ApiError(400, "bad_request", "X-Forwarded-For has fewer entries than --forwarded-hops")
                try:
                    return parse_address(entries[-self.forwarded_hops])
                except ValueError:
                    raise ApiError(400, "bad_request", "the trusted X-Forwarded-For entry is not an IP address") from None
        return parse_address(self.client_address[0])

    def _in_transaction(self, work, token=None, cost=1):
        """Runs work(cur) in one transaction that starts by authenticating
        (with the Authorization header's token unless one is given) from the
        client's address, weighing `cost` against the key's usage quota."""
        client_ip = self._client_ip()
        conn = self.pool.get()
        try:
            with conn.transaction():
                with conn.cursor() as cur:
                    request_id = self.headers.get("X-Request-Id")
                    if request_id:
                        cur.execute("SELECT set_config('flint.request_id', %s, true)", (request_id,))
                    # The token travels as a bind parameter, never in SQL text.
                    cur.execute("SELECT merchant_id, scopes FROM flint_authenticate(%s, %s::inet, %s)",
                                (token or self._token(), client_ip, cost))
                    return work(cur)
        except psycopg.Error as e:
            sqlstate = e.sqlstate or ""
            if sqlstate in STATUS_BY_SQLSTATE:
                message = e.diag.message_primary or ""
                code = message.split(":", 1)[0]
                if sqlstate == "FK009":
                    detail = e.diag.message_detail or ""
                    seconds = retry_after_seconds(detail)
                    raise ApiError(429, code, message, headers={"Retry-After": str(seconds)},
                                   extra={"retry_after_seconds": seconds,
                                          "limit": "merchant" if "merchant" in detail else "key"})
                raise ApiError(STATUS_BY_SQLSTATE[sqlstate], code, message)
            if sqlstate == "22P02":
                raise ApiError(400, "bad_request", "invalid input")
            raise ApiError(500, "internal_error", "database error")
        finally:
            self.pool.put(conn)

    def _dashboard(self):
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        try:
            if any(name.lower() in ("key", "token", "secret", "api_key") for name in query):
                raise ApiError(400, "bad_request", "a secret does not belong in a URL: send Authorization: Bearer")
            token = self._token() or self.demo_key
            self._send_html(200, render_dashboard(self._in_transaction(read_dashboard, token, cost=0)))
        except ApiError as e:
            self._send_html(e.status, '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
                            f'<title>{e.status} {esc(e.code)}</title></head><body>'
                            f'<h1 id="error" data-code="{esc(e.code)}">{e.status} {esc(e.code)}</h1>'
                            f'<p>{esc(e.message)}</p></body></html>', e.headers)

    def _read_scanner_body(self):
        try:
            length = int(self.headers.get("Content-Length"))
        except (TypeError, ValueError):
            length = -1
        if length < 0:
            self.close_connection = True
            raise ApiError(411, "length_required", "a Content-Length is required")
        if length > SCAN_MAX_BODY:
            self.close_connection = True  # the body stays unread
            raise ApiError(413, "payload_too_large", f"the body is larger than {SCAN_MAX_BODY} bytes")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise ApiError(400, "bad_request", "the body is shorter than its Content-Length")
        return body

    def _secret_scanning(self):
        """POST /secret-scanning: see the module docstring."""
        if not (self.scanner_keys or self.scanner_insecure):
            raise ApiError(404, "not_found", "secret scanning is not configured (--scanner-public-keys)")
        request_id = (self.headers.get("X-Request-Id") or "").strip()
        if not request_id or len(request_id) > 63 or not request_id.isprintable():
            request_id = "scan-" + uuid.uuid4().hex
        headers = {"X-Request-Id": request_id}
        try:
            body = self._read_scanner_body()
            if self.scanner_keys:
                try:
                    self.scanner_keys.verify(self.headers, body)
                except ApiError as e:
                    warn(f"secret-scanning {request_id}: refused, {e.code}")
                    raise
            matches = parse_scanner_matches(body)
        except ApiError as e:
            return self._send(e.status, {"error": {"code": e.code, "message": e.message}}, headers)
        if matches:
            try:
                conn = self.receiver_pool.get()
            except psycopg.Error as e:
                warn(f"secret-scanning {request_id}: cannot connect ({type(e).__name__}), nothing reported")
                return self._send(503, {"error": {"code": "database_unavailable", "message": "retry later"}}, headers)
            try:
                with conn.transaction():
                    with conn.cursor() as cur:
                        cur.execute("SELECT set_config('flint.request_id', %s, true)", (request_id,))
                        results = report_leaked(cur, matches)
            except (psycopg.Error, RuntimeError) as e:
                # Class and SQLSTATE only: the (scrubbed) message is not needed here.
                sqlstate = getattr(e, "sqlstate", None) or ""
                warn(f"secret-scanning {request_id}: database error {type(e).__name__} {sqlstate}, nothing reported")
                if sqlstate == "53000":
                    return self._send(503, {"error": {"code": "log_queue_full", "message": "retry later"}}, headers)
                return self._send(500, {"error": {"code": "internal_error", "message": "database error"}}, headers)
            finally:
                self.receiver_pool.put(conn)
        else:
            results = []
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
        warn(f"secret-scanning {request_id}: {len(matches)} token(s): {len(revoked)} revoked now, "
             f"{already} already revoked, {false_positives} false positive(s)"
             + (f"; revoked keys {', '.join(revoked)}" if revoked else ""))
        self._send(200, answer, headers)

    def _handle(self, method):
        try:
            if method == "POST" and urlsplit(self.path).path == "/secret-scanning":
                return self._secret_scanning()
            if method == "GET" and urlsplit(self.path).path == "/dashboard":
                return self._dashboard()
            if method == "GET" and self.path == "/payments":
                rows = self._in_transaction(lambda cur: cur.execute(
                    "SELECT id, merchant_id::text, amount_cents, currency FROM payments ORDER BY id").fetchall(), cost=0)
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
                    (merchant, amount, currency)).fetchone(), cost=1)
                self._send(201, {"id": row[0], "merchant_id": row[1], "amount_cents": amount, "currency": currency})
            elif method == "GET" and self.path == "/requests":
                rows = self._in_transaction(lambda cur: cur.execute(
                    "SELECT at::text, scope, outcome, source, request_id FROM flint.request_log "
                    "WHERE key_id = flint_current_key() ORDER BY at DESC LIMIT 100").fetchall(), cost=0)
                self._send(200, {"requests": [
                    {"at": r[0], "scope": r[1], "outcome": r[2], "source": r[3], "request_id": r[4]} for r in rows]})
            else:
                raise ApiError(404, "not_found", "no such endpoint")
        except ApiError as e:
            self._send(e.status, e.body(), e.headers)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--demo-merchant-key-file", metavar="PATH",
                        help="a file whose first line is a keys:read secret, used by /dashboard without a header")
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
    Handler.trust_forwarded_for = args.trust_forwarded_for
    Handler.forwarded_hops = args.forwarded_hops
    if args.scanner_public_keys and args.scanner_insecure_no_signature:
        parser.error("--scanner-public-keys and --scanner-insecure-no-signature exclude each other")
    Handler.pool = Pool(os.environ["FLINT_DSN"], args.pool_size)
    if args.scanner_public_keys or args.scanner_insecure_no_signature:
        Handler.receiver_pool = Pool(os.environ.get("FLINT_RECEIVER_DSN") or os.environ["FLINT_DSN"], 2)
    if args.scanner_public_keys:
        try:
            Handler.scanner_keys = ScannerKeys(args.scanner_public_keys)
        except ImportError:
            parser.error("--scanner-public-keys needs the cryptography package (Debian: python3-cryptography)")
        except (OSError, ValueError) as e:
            parser.error(f"--scanner-public-keys {args.scanner_public_keys}: {e}")
    if args.scanner_insecure_no_signature:
        Handler.scanner_insecure = True
        warn("warning: --scanner-insecure-no-signature: POST /secret-scanning accepts UNSIGNED reports; "
             "anyone who can reach this port can revoke keys whose secrets they hold. Local demos only.")
    if args.demo_merchant_key_file:
        with open(args.demo_merchant_key_file, encoding="utf-8") as f:
            Handler.demo_key = f.readline().strip() or None
        if not Handler.demo_key:
            parser.error("--demo-merchant-key-file: the file is empty")
        if args.host not in ("127.0.0.1", "::1", "localhost"):
            print("warning: demo mode shows the merchant's dashboard to anyone who can reach "
                  f"{args.host}:{args.port}", file=sys.stderr, flush=True)
    if ":" in args.host:  # an IPv6 address (e.g. "::" listens dual-stack: IPv4 peers come as ::ffff:a.b.c.d)
        ThreadingHTTPServer.address_family = socket.AF_INET6
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"payments_api listening on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
