# The merchant console (GET /console in examples/payments_api/server.py),
# driven in headless Chromium through chromedriver's WebDriver protocol: sign
# in with a key, filter to a key, find a request by its id, revoke a key from
# the page and see the next API call refused, rotate a key and see the new
# secret once, create a key, the live/test toggle, page through 5,000 keys.
# Also the API's headers (WWW-Authenticate, X-RateLimit-*, X-Request-Id),
# query strings, ip_not_allowed naming the address checked, a key's token
# buckets in its panel (flint_rate_limit_state), and CSRF (the sign-in too).
# Leaves a screenshot in tmp_check/console.png.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use IPC::Run;
use MIME::Base64;
use FlintNode;

my $src = $ENV{FLINT_SRC} or die 'FLINT_SRC must point at the source tree';
my $python = '/usr/bin/python3';
my ($chromium) = grep { -x $_ } '/usr/bin/chromium';
my ($driver) = grep { -x $_ } '/usr/bin/chromedriver';
plan skip_all => 'chromium and chromium-driver are not installed (scripts/install_deps.sh installs them)'
  unless $chromium && $driver;
plan skip_all => 'python3-starlette, python3-uvicorn, python3-jinja2, python3-psycopg-pool are not installed'
  if system($python, '-c', 'import starlette, uvicorn, jinja2, psycopg, psycopg_pool') != 0;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $bolt = 'bbbbbbbb-0000-0000-0000-000000000002';
my $node = flint_node('console');
$node->safe_psql('postgres', "INSERT INTO flint.merchants (id, name) VALUES ('$bolt', 'Bolt')");
$node->safe_psql('postgres', slurp_file("$src/examples/payments_api/schema.sql"));

my %key;    # name -> { id, secret, prefix }
sub key {
    my ($name, $merchant, $label, $scopes, $extra) = @_;
    $extra //= '';
    my $row = $node->safe_psql('postgres',
        "SELECT key_id || '|' || secret || '|' || display_prefix FROM flint_create_key('$merchant', \$n\$$label\$n\$, '$scopes' $extra)");
    my ($id, $secret, $prefix) = split /\|/, $row;
    $key{$name} = { id => $id, secret => $secret, prefix => $prefix };
    return $key{$name};
}
key('console', $acme, 'support console', '{keys:write,logs:read,payments:write,refunds:read}');
key('reader', $acme, 'read-only console', '{keys:read}');
key('mobile', $acme, 'mobile app', '{payments:read}');
key('office', $acme, 'office backend', '{payments:read}');
key('victim', $acme, 'old laptop', '{payments:read}');
key('rotate', $acme, 'nightly job', '{payments:read}');
key('quota', $acme, 'metered', '{payments:write}');
key('bolt', $bolt, 'bolt checkout', '{payments:write,keys:write}');
key('bucket', $acme, 'batch importer', '{payments:read}');
key('busy', $acme, 'busy elsewhere', '{payments:read}');
$node->safe_psql('postgres', qq{
    SELECT flint_set_key_limits('$key{mobile}{id}', rate_limit => 3, rate_window => '1 minute');
    SELECT flint_set_key_limits('$key{bucket}{id}', rate_limit => 3, rate_window => '1 minute');
    SELECT flint_set_key_limits('$key{busy}{id}', rate_limit => 1, rate_window => '1 hour');
    SELECT flint_set_key_limits('$key{office}{id}', allowed_ips => '{10.20.0.0/16}');
    SELECT flint_set_key_limits('$key{quota}{id}', remaining => 5);
});
my @secrets = map { $_->{secret} } values %key;

###############################################################################
# The server and the HTTP API.
###############################################################################
my $http = HTTP::Tiny->new(timeout => 30, max_redirect => 0);
my $port = PostgreSQL::Test::Cluster::get_free_port();
my ($server_out, $server_err) = ('', '');
my ($server, $chromedriver);
# On any exit, Chromium too (chromedriver's children outlive it otherwise).
END {
    if ($chromedriver && $chromedriver->pumpable) {
        my $pid = eval { $chromedriver->{KIDS}[0]{PID} };
        system('pkill', '-KILL', '-P', $pid) if $pid;
    }
    for my $h ($server, $chromedriver) { eval { $h->kill_kill if $h && $h->pumpable } }
}
{
    local $ENV{FLINT_DSN} = "host=" . $node->host . " port=" . $node->port . " dbname=postgres user=checkout_app";
    $server = IPC::Run::start([$python, "$src/examples/payments_api/server.py", '--port', $port],
        '>', \$server_out, '2>', \$server_err);
}
for (1 .. 100) {
    last if ($http->get("http://127.0.0.1:$port/ping")->{status} // 0) == 404;
    select(undef, undef, undef, 0.1);
}
my $base = "http://127.0.0.1:$port";

sub call {
    my ($method, $path, $token, %opt) = @_;
    my %headers;
    $headers{'X-Request-Id'} = $opt{request_id} if defined $opt{request_id};
    $headers{Authorization} = "Bearer $token" if defined $token;
    $headers{'Content-Type'} = 'application/json' if $opt{body};
    my $res = $http->request($method, "$base$path",
        { headers => \%headers, ($opt{body} ? (content => encode_json($opt{body})) : ()) });
    my $json = eval { decode_json($res->{content}) } // {};
    return ($res->{status}, $json, $res->{headers});
}

my ($status, $json, $h) = call('GET', '/payments');
is($status, 401, 'no Authorization: 401');
is($h->{'www-authenticate'}, 'Bearer realm="payments"', '... with WWW-Authenticate: Bearer');
like($h->{'x-request-id'} // '', qr/^req_[0-9a-f]{32}$/, 'a generated request id is echoed');
($status, $json, $h) = call('GET', '/payments', 'fk_live_nope');
is($h->{'www-authenticate'}, 'Bearer realm="payments", error="invalid_token"', 'a bad token: error="invalid_token"');
($status, $json, $h) = call('GET', '/payments?limit=10', $key{mobile}{secret}, request_id => 'find-me-42');
is($status, 200, 'a query string is accepted (/payments?limit=10)');
is($h->{'x-request-id'}, 'find-me-42', 'the X-Request-Id sent is echoed');
is($h->{'x-ratelimit-limit'}, 3, 'X-RateLimit-Limit: the key\'s rate limit');
is($h->{'x-ratelimit-remaining'}, 2, 'X-RateLimit-Remaining: 2 after the first of 3');
ok(($h->{'x-ratelimit-reset'} // 0) >= 1 && $h->{'x-ratelimit-reset'} <= 60, "X-RateLimit-Reset in seconds ($h->{'x-ratelimit-reset'})");
($status, $json, $h) = call('GET', '/payments?limit=0', $key{mobile}{secret});
is($status, 400, 'a bad limit is 400');
call('GET', '/payments', $key{mobile}{secret});
($status, $json, $h) = call('GET', '/payments', $key{mobile}{secret});
is($h->{'x-ratelimit-remaining'}, 0, 'the third: 0 remaining');
($status, $json, $h) = call('GET', '/payments', $key{mobile}{secret}, request_id => 'too-fast-1');
is($status . ' ' . ($json->{error}{code} // ''), '429 rate_limited', 'the fourth: 429 rate_limited');
ok(($h->{'retry-after'} // 0) >= 1, "with Retry-After ($h->{'retry-after'})");
is(($h->{'x-ratelimit-remaining'} // '') . ' ' . ($h->{'x-ratelimit-reset'} // ''), "0 $h->{'retry-after'}",
    'X-RateLimit-Remaining 0, Reset = Retry-After');
is($h->{'x-ratelimit-limit'}, 3, '... and X-RateLimit-Limit');
# A key this server process has not answered yet, its bucket emptied by
# another client (psql): the 429 names its limit all the same.
$node->safe_psql('postgres', "SELECT ok FROM flint_check_key('$key{busy}{secret}', 'payments:read', '$acme')");
($status, $json, $h) = call('GET', '/payments', $key{busy}{secret});
is($status . ' ' . ($h->{'x-ratelimit-limit'} // 'none') . ' ' . ($h->{'x-ratelimit-remaining'} // 'none'), '429 1 0',
    "a 429 of a key the app has not seen yet: X-RateLimit-Limit 1 (its limit), Remaining 0");
($status, $json, $h) = call('GET', '/payments', $key{office}{secret});
is($status . ' ' . ($json->{error}{code} // ''), '403 ip_not_allowed', 'the office key from 127.0.0.1: 403 ip_not_allowed');
is($json->{error}{client_ip}, '127.0.0.1', 'the error names the address that was checked');
like($json->{error}{message}, qr/127\.0\.0\.1/, '... in the message too');
($status, $json, $h) = call('GET', '/payments', $key{mobile}{secret}, request_id => "bad id with spaces");
like($h->{'x-request-id'} // '', qr/^req_/, 'an X-Request-Id that is not sane is replaced by a generated one');
($status) = call('POST', '/payments', $key{reader}{secret}, request_id => 'refused-write-1', body => { amount_cents => 5 });
($status) = call('POST', '/payments', $key{console}{secret}, request_id => 'refused-write-1', body => { amount_cents => 5 });
is($status, 201, 'the console key makes a payment');
($status, $json) = call('POST', '/payments', $key{console}{secret}, request_id => 'guarded-1', body => { amount_cents => 7 });
$node->safe_psql('postgres', 'SELECT flint_flush_log()');

###############################################################################
# The browser.
###############################################################################
my $dport = PostgreSQL::Test::Cluster::get_free_port();
my $home = PostgreSQL::Test::Utils::tempdir();
{
    local $ENV{HOME} = $home;
    $chromedriver = IPC::Run::start([$driver, "--port=$dport"], '>', \my $dout, '2>', \my $derr);
}
my $wd = "http://127.0.0.1:$dport";
for (1 .. 100) {
    my $r = $http->get("$wd/status");
    last if $r->{success} && (eval { decode_json($r->{content})->{value}{ready} } // 0);
    select(undef, undef, undef, 0.1);
}
my $ELEMENT = 'element-6066-11e4-a52e-4f735466cecf';
sub wd {
    my ($method, $path, $body) = @_;
    my $r = $http->request($method, "$wd$path",
        { headers => { 'Content-Type' => 'application/json' }, (defined $body ? (content => encode_json($body)) : ()) });
    my $v = eval { decode_json($r->{content}) } // {};
    die "WebDriver $method $path: $r->{status} " . substr($r->{content} // '', 0, 300) unless $r->{success};
    return $v->{value};
}
my $session = wd('POST', '/session', { capabilities => { alwaysMatch => { browserName => 'chrome',
    'goog:chromeOptions' => { binary => $chromium,
        args => ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
                 '--window-size=1300,1700', "--user-data-dir=$home/profile"] } } } })->{sessionId};
ok($session, 'a headless Chromium session');
my $S = "/session/$session";
sub go { wd('POST', "$S/url", { url => "$base$_[0]" }) }
# A click that submits a form returns before the next page may be there:
# element look-ups retry while the old page's element is stale or the new
# page's not there yet (up to 5 s).
sub settled {
    my ($fn) = @_;
    for my $try (1 .. 50) {
        my @r = eval { $fn->() };
        return wantarray ? @r : $r[0] unless $@;
        die $@ if $try == 50 || $@ !~ /stale element|no such element/;
        select(undef, undef, undef, 0.1);
    }
}
sub el {
    my ($css) = @_;
    return settled(sub { wd('POST', "$S/element", { using => 'css selector', value => $css })->{$ELEMENT} });
}
sub els { return map { $_->{$ELEMENT} } @{ wd('POST', "$S/elements", { using => 'css selector', value => $_[0] }) } }
sub click { my ($css) = @_; settled(sub { wd('POST', "$S/element/" . el($css) . '/click', {}) }) }
sub type_in {
    my ($css, $text) = @_;
    settled(sub {
        my $e = el($css);
        wd('POST', "$S/element/$e/clear", {});
        wd('POST', "$S/element/$e/value", { text => $text });
    });
}
# Clicks what loads a new page and waits until the old page is gone.
sub submit {
    my ($css) = @_;
    my $old = el('html');
    click($css);
    for (1 .. 100) {
        my $gone = !eval { wd('GET', "$S/element/$old/name"); 1 };
        return if $gone && $@ =~ /stale element|no such element/;
        select(undef, undef, undef, 0.1);
    }
    die "no new page after clicking $css";
}
sub text_of { my ($css) = @_; return settled(sub { wd('GET', "$S/element/" . el($css) . '/text') }) }
sub source { wd('GET', "$S/source") }
sub url { wd('GET', "$S/url") }
sub log_rows {
    my $html = source();
    my @rows;
    while ($html =~ m{<tr class="log-row" data-request-id="([^"]*)" data-outcome="([^"]*)" data-status="([^"]*)" data-key-id="([^"]*)">(.*?)</tr>}gs) {
        push @rows, { request_id => $1, outcome => $2, status => $3, key_id => $4, html => $5 };
    }
    return @rows;
}
sub key_rows {
    my ($html) = @_;
    my @ids;
    push @ids, $1 while $html =~ m{<tr class="key" id="key-row-[^"]+" data-key-id="([^"]+)"}g;
    return @ids;
}
sub leaks {
    my ($html, @except) = @_;
    my %skip = map { $_ => 1 } @except;
    return grep { !$skip{$_} && index($html, substr($_, 16)) >= 0 } @secrets;
}

# 1. Sign in.
go('/console');
ok(el('#signin'), 'the console asks to sign in');
type_in('#secret', $key{console}{secret});
submit('#signin-button');
like(text_of('#merchant'), qr/^Acme$/, 'signed in: the merchant is shown by its name');
my $cookies = wd('GET', "$S/cookie");
my ($cookie) = grep { $_->{name} eq 'flint_console' } @$cookies;
ok($cookie && $cookie->{httpOnly}, 'the session cookie is HttpOnly');
is($cookie->{sameSite}, 'Strict', '... and SameSite=Strict');
ok(index(join(' ', map { $_->{value} } @$cookies), substr($key{console}{secret}, 16)) < 0, '... and holds no secret');
my $page = source();
my @ids = key_rows($page);
is_deeply([ sort @ids ], [ sort map { $key{$_}{id} } grep { $_ ne 'bolt' } keys %key ], "the keys table lists Acme's keys, not Bolt's");
is_deeply([ leaks($page) ], [], 'no secret in the page');
like($page, qr{<svg[^>]*id="outcome-chart"}, 'the chart is drawn (the key holds logs:read)');
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
go('/console');
$page = source();
my ($as_of) = $page =~ m{<time id="as-of" datetime="([^"]+)"};
my %bars;
$bars{$1} += $2 while $page =~ m{<rect class="bar" data-start="[^"]+" data-outcome="([^"]+)" data-count="(\d+)"}g;
my $want = $node->safe_psql('postgres', "SELECT string_agg(outcome || '=' || n, ',' ORDER BY outcome) FROM (SELECT outcome, count(*) AS n
    FROM flint.request_log WHERE merchant_id = '$acme' AND display_prefix LIKE 'fk_live_%'
     AND at > '$as_of'::timestamptz - interval '1 hour' AND at <= '$as_of' GROUP BY 1) s");
is(join(',', map { "$_=$bars{$_}" } sort keys %bars), $want, "the chart's bars add up to the request log's outcomes ($want)");
like($page, qr{<b class="legend-count" data-outcome="rate_limited">$bars{rate_limited}</b>}, 'the legend names each outcome with its count');

# 2. Find a request by its id; a refused write folded into its request.
type_in('#q', 'find-me-42');
submit('#apply');
my @rows = log_rows();
is(scalar @rows, 1, 'the request id search finds one row');
is($rows[0]{request_id} . ' ' . $rows[0]{status} . ' ' . $rows[0]{outcome}, 'find-me-42 200 ok', '... the request, HTTP 200, ok');
like($rows[0]{html}, qr{<code>GET /payments</code>}, '... with its method and path');
like($rows[0]{html}, qr{\d+\.\d ms}, '... and its latency');
type_in('#q', 'guarded-1');
submit('#apply');
@rows = log_rows();
is(scalar @rows, 1, 'a request with a guarded write is one row');
is($rows[0]{status}, 201, '... HTTP 201');
like($rows[0]{html}, qr{guarded write: payments:write ok}, '... the guarded write folded in and marked');
type_in('#q', 'refused-write-1');
submit('#apply');
@rows = log_rows();
is(join(',', sort map { "$_->{status}:$_->{key_id}" } @rows), join(',', sort("403:$key{reader}{id}", "201:$key{console}{id}")),
    'one request id used by two keys: one row per request, each with its own HTTP status');
my ($refused) = grep { $_->{status} == 403 } @rows;
like($refused->{html} // '', qr{guarded write: payments:write missing_scope}, 'the refused write is marked on its request');
type_in('#q', '');

# 3. Filter to a key (by its display prefix) and an outcome.
go('/console');
type_in('#filter-key', $key{mobile}{prefix});
submit('#apply');
@rows = log_rows();
ok(@rows >= 5, 'filtered to the mobile key: its requests (' . scalar(@rows) . ')');
is(scalar(grep { $_->{key_id} ne $key{mobile}{id} } @rows), 0, '... and no other key\'s');
like(text_of('#key-panel'), qr/Rate limit\s+3 per 00:01:00/, "the key's panel shows its rate limit");
is(wd('GET', "$S/element/" . el('#key-panel') . '/attribute/data-status'), 'active', '... and its status');
click('#filter-outcome option[value="rate_limited"]');
submit('#apply');
@rows = log_rows();
ok((grep { $_->{request_id} eq 'too-fast-1' } @rows) && !(grep { $_->{status} != 429 || $_->{outcome} ne 'rate_limited' } @rows), 'filter outcome rate_limited: the 429s only (' . join(',', map { $_->{request_id} } @rows) . ')');
# A time range: since/until (UTC) that holds none of the requests.
go("/console?since=2001-01-01T00:00&until=2001-01-01T06:00");
is(scalar(log_rows()), 0, 'a time range without requests lists none');
like(text_of('#log-empty'), qr/No requests match/, '... and says so');
unlike(source(), qr/<rect class="bar"/, '... and its chart has no bars');
go('/console?range=24h');
ok(scalar(log_rows()) >= 10, 'the last 24 hours list the requests');
go("/console?key=$key{office}{id}");
like(text_of('#key-allowlist'), qr{10\.20\.0\.0/16}, "the office key's allowlist is shown");
like(text_of('#key-panel'), qr/ip_not_allowed|Allowed addresses/, '... in its panel');
go("/console?key=$key{quota}{id}");
like(text_of('#key-quota'), qr/^5 units left/, 'the metered key shows its remaining quota');
# The key's token buckets on this server (its own, its merchant's shared
# one), read without taking a token.
$node->safe_psql('postgres', "SELECT flint_set_merchant_limits('$acme', 1000, '1 hour')");
is((call('GET', '/payments', $key{bucket}{secret}))[0], 200, 'a key with 3 per minute is used once');
go("/console?key=$key{bucket}{id}");
my $own = qr/^3 per 00:01:00 \(this key\) \x{2014} 2 left on this server, full again at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/;
like(text_of('#key-rate .bucket[data-applies-to="key"]'), $own, 'its panel shows its bucket: 2 left, and when it is full again');
like(text_of('#key-rate .bucket[data-applies-to="merchant"]'),
    qr/^1000 per 01:00:00 \(the merchant's, shared by its keys\) \x{2014} \d+ left on this server/, "... and the merchant's shared bucket");
go("/console?key=$key{bucket}{id}");
like(text_of('#key-rate .bucket[data-applies-to="key"]'), $own, '... and reading took no token (reloaded: still 2 left)');
$node->safe_psql('postgres', "SELECT flint_set_merchant_limits('$acme')");
go("/console?key=$key{bucket}{id}");
is(scalar(() = source() =~ /class="bucket"/g), 1, 'without a merchant limit: its own bucket only');

# 4. Revoke a key from the page; the next API call is refused.
is((call('GET', '/payments', $key{victim}{secret}))[0], 200, 'the old laptop key works');
go("/console?key=$key{victim}{id}");
type_in('#revoke-reason', 'laptop stolen');
submit('#revoke');
like(text_of('#done'), qr/Key revoked/, 'the page confirms the revocation');
like(text_of('#key-status'), qr/^revoked at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: laptop stolen$/, 'status with date and reason');
($status, $json) = call('GET', '/payments', $key{victim}{secret});
is($status . ' ' . ($json->{error}{code} // ''), '401 key_revoked', 'the next API call is refused: 401 key_revoked');
is($node->safe_psql('postgres', "SELECT revoked_reason FROM flint.api_keys WHERE id = '$key{victim}{id}'"), 'laptop stolen',
    'revoked in the table, with the reason');
ok(!eval { el('#revoke-form') }, 'a revoked key offers no actions');

# 5. Disable and enable.
go("/console?key=$key{mobile}{id}");
type_in('#disable-reason', 'investigating');
submit('#disable');
like(text_of('#key-status'), qr/^disabled at .* UTC: investigating$/, 'disabled, with its reason');
is((call('GET', '/payments', $key{mobile}{secret}))[1]{error}{code}, 'key_disabled', 'the API refuses it: key_disabled');
submit('#enable');
like(text_of('#key-status'), qr/^active/, 'enabled again');

# 6. Rotate a key and see the new secret once.
go("/console?key=$key{rotate}{id}");
click('#rotate-grace option[value="0"]');
submit('#rotate');
my $new = text_of('#new-secret');
like($new, qr/^fk_live_[0-9A-Za-z]{61}$/, 'the rotated secret is shown');
isnt($new, $key{rotate}{secret}, '... a new one');
is(substr($new, 0, 16), $key{rotate}{prefix}, '... of the same key (same display prefix)');
is((call('GET', '/payments', $new))[0], 200, 'the new secret works');
is((call('GET', '/payments', $key{rotate}{secret}))[1]{error}{code}, 'key_expired', 'the old one is refused (no grace)');
submit('#back');
ok(index(source(), substr($new, 16)) < 0, 'back on the console the secret is not shown again');
push @secrets, $new;

# 7. Create a key; one with a scope the signed-in key lacks is refused by SQL.
go('/console');
type_in('#create-name', 'new integration');
type_in('#create-scopes', 'payments:read');
submit('#create');
my $created = text_of('#new-secret');
like($created, qr/^fk_live_/, 'a created key\'s secret is shown once');
push @secrets, $created;
is((call('GET', '/payments', $created))[0], 200, 'and it works');
go('/console');
type_in('#create-name', 'escalation');
type_in('#create-scopes', 'payouts:write');
submit('#create');
like(text_of('#error'), qr/^403 missing_scope/, 'a scope the signed-in key lacks: 403 missing_scope (no escalation)');

# 8. CSRF and a read-only key.
my $sid = $cookie->{value};
my $res = $http->request('POST', "$base/console/keys/$key{rotate}{id}/revoke",
    { headers => { Cookie => "flint_console=$sid", 'Content-Type' => 'application/x-www-form-urlencoded' },
      content => 'reason=csrf&csrf=forged' });
is($res->{status}, 403, 'a POST without the session\'s CSRF token: 403');
$res = $http->request('POST', "$base/console/sign-in", { headers => { 'Content-Type' => 'application/x-www-form-urlencoded' },
    content => "secret=$key{reader}{secret}" });
is($res->{status}, 303, 'the read-only key signs in');
my ($reader_sid) = ($res->{headers}{'set-cookie'} // '') =~ /flint_console=([^;]+)/;
for my $origin ('null', 'http://evil.example') {
    my $r = $http->request('POST', "$base/console/sign-in", { headers => { Origin => $origin,
        'Content-Type' => 'application/x-www-form-urlencoded' }, content => "secret=$key{reader}{secret}" });
    is($r->{status} . ' ' . ($r->{headers}{'set-cookie'} // 'no cookie'), '403 no cookie',
        "a sign-in posted with Origin: $origin is refused (login CSRF), no session");
}
$res = $http->get("$base/console", { headers => { Cookie => "flint_console=$reader_sid" } });
unlike($res->{content}, qr/id="(revoke|rotate|create)-form"/, 'a keys:read session gets no action forms');
like($res->{content}, qr/id="chart-note"/, '... and a note instead of charts (no logs:read)');
my ($csrf) = $res->{content} =~ /name="csrf" value="([^"]+)"/;
$res = $http->request('POST', "$base/console/keys/$key{rotate}{id}/revoke",
    { headers => { Cookie => "flint_console=$reader_sid", 'Content-Type' => 'application/x-www-form-urlencoded' },
      content => "reason=mine&csrf=$csrf" });
is($res->{status}, 403, 'its forged revoke (valid CSRF token) is refused by SQL: 403');
like($res->{content}, qr/missing_scope/, '... missing_scope');
is($node->safe_psql('postgres', "SELECT revoked_at IS NULL FROM flint.api_keys WHERE id = '$key{rotate}{id}'"), 't', 'the key is not revoked');
$res = $http->get("$base/console?key=$key{bolt}{id}", { headers => { Cookie => "flint_console=$reader_sid" } });
is($res->{status}, 404, "Bolt's key is not found from Acme's console");

# 9. Live/test toggle.
my $test_key = key('test1', $acme, 'sandbox', '{payments:read}', ", mode => 'test'");
push @secrets, $test_key->{secret};
go('/console');
submit('#mode-test');
is_deeply([ key_rows(source()) ], [ $test_key->{id} ], 'the test toggle lists the test keys only');
is((call('GET', '/payments', $test_key->{secret}, request_id => 'sandbox-1'))[0], 200, 'a test-mode request');
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
go('/console?mode=test');
is(join(',', map { $_->{request_id} } log_rows()), 'sandbox-1', '... and its log shows test-mode requests only');
submit('#mode-live');
ok(scalar(key_rows(source())) > 5, 'back to live');

# A screenshot to look at (and for the README).
go('/console');
my $png = "$PostgreSQL::Test::Utils::tmp_check/console.png";
open my $fh, '>:raw', $png or die;
print $fh decode_base64(wd('GET', "$S/screenshot"));
close $fh;
ok(-s $png > 10_000, "screenshot $png (" . (-s $png) . ' bytes)');

# 10. Page through 5,000 keys.
$node->safe_psql('postgres', "SELECT count(*) FROM generate_series(1, 5000) AS g,
    LATERAL flint_create_key('$acme', 'bulk ' || g, '{payments:read}') AS k");
my $total = $node->safe_psql('postgres', "SELECT count(*) FROM flint.api_keys WHERE merchant_id = '$acme' AND mode = 'live'");
go('/console');
is(text_of('#key-count'), $total, "the page counts $total live keys");
my (%seen, $pages, $dups);
my $t0 = time;
while (1) {
    $pages++;
    my $html = source();
    for (key_rows($html)) { $dups++ if $seen{$_}++; }
    last unless $html =~ /id="keys-next"/;
    submit('#keys-next');
    last if $pages > 200;
}
is(scalar(keys %seen), $total, "paged through all $total keys ($pages pages in " . (time - $t0) . ' s)');
is($dups // 0, 0, 'no key on two pages');
is($node->safe_psql('postgres', "SELECT count(*) FROM flint.api_keys WHERE merchant_id = '$acme' AND mode = 'live' AND id <> ALL ('{"
    . join(',', keys %seen) . "}')"), 0, 'none missed');

is_deeply([ leaks($server_out . $server_err) ], [], 'no secret in the server output');

wd('DELETE', $S);
$chromedriver->kill_kill;
$server->kill_kill;
$server->finish;
$node->stop;
done_testing();
