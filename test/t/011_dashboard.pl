# The example API's merchant console (GET /dashboard in
# examples/payments_api/server.py), rendered by headless Chromium: the keys of
# the authenticated merchant only, per key a chart (flint_usage) and one log
# row per request that match flint.request_log, the merchant's SVG chart,
# escaped values, and not one piece of any secret in the page. Leaves a
# screenshot in tmp_check.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HTTP::Tiny;
use IPC::Run;
use FlintNode;

my $src = $ENV{FLINT_SRC} or die 'FLINT_SRC must point at the source tree';
my $python = '/usr/bin/python3';
my ($chromium) = grep { -x $_ } map({ "$_/chromium" } split(/:/, $ENV{PATH})), '/usr/bin/chromium';
plan skip_all => 'chromium is not installed (scripts/install_deps.sh installs it)' unless $chromium;
plan skip_all => 'python3-starlette, python3-uvicorn, python3-jinja2, python3-psycopg-pool are not installed'
  if system($python, '-c', 'import starlette, uvicorn, jinja2, psycopg, psycopg_pool') != 0;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $bolt = 'bbbbbbbb-0000-0000-0000-000000000002';
my $node = flint_node('dashboard');
$node->safe_psql('postgres', "INSERT INTO flint.merchants (id, name) VALUES ('$bolt', 'Bolt')");
$node->safe_psql('postgres', slurp_file("$src/examples/payments_api/schema.sql"));

my %key;    # name -> { id, secret, merchant, prefix }
sub key {
    my ($name, $merchant, $label, $scopes, $extra) = @_;
    $extra //= '';
    my $row = $node->safe_psql('postgres',
        "SELECT key_id || '|' || secret || '|' || display_prefix FROM flint_create_key('$merchant', \$n\$$label\$n\$, '$scopes' $extra)");
    my ($id, $secret, $prefix) = split /\|/, $row;
    $key{$name} = { id => $id, secret => $secret, merchant => $merchant, prefix => $prefix };
    return $key{$name};
}
key('dash', $acme, 'dashboard', '{keys:read,logs:read}');    # logs:read: the charts (flint_usage)
key('checkout', $acme, '<b>checkout & "api"</b>', '{payments:write}');    # a name that must be escaped
key('reader', $acme, 'reporting', '{payments:read,refunds:read}');
key('revoked', $acme, 'old laptop', '{payments:write}');
key('expired', $acme, 'pilot', '{payments:read}', ", expires_at => now() + interval '1 hour'");
key('unused', $acme, 'spare', '{customers:read}');
key('paused', $acme, 'on hold', '{payments:read}');
key('bolt_dash', $bolt, 'bolt dashboard', '{keys:write}');
key('bolt_pay', $bolt, 'bolt checkout', '{payments:write}');
$node->safe_psql('postgres', qq{
    SELECT flint_revoke_key('$key{revoked}{id}', 'stolen');
    UPDATE flint.api_keys SET expires_at = now() - interval '1 second' WHERE id = '$key{expired}{id}';
    SELECT flint_disable_key('$key{paused}{id}', 'investigating');
});
# Tokens with a checksum but a wrong secret (invalid_key, logged against the
# key), and one character changed (malformed_key, no key id).
my %forged = map { $_ => $node->safe_psql('postgres', "SELECT (flint._mint_token('live', '$key{$_}{id}')).secret") } qw(checkout reader);
my $typo = substr($key{checkout}{secret}, 0, 40) . (substr($key{checkout}{secret}, 40, 1) eq 'a' ? 'b' : 'a')
  . substr($key{checkout}{secret}, 41);
my @secrets = ((map { $_->{secret} } values %key), values %forged, $typo);

# Traffic now, through the real verification functions, failures included.
sub check {
    my ($secret, $scope, $merchant, $times) = @_;
    $node->safe_psql('postgres',
        "SELECT (flint_check_key('$secret', '$scope', '$merchant')).code FROM generate_series(1, $times)");
}
check($key{checkout}{secret}, 'payments:write', $acme, 6);
check($key{checkout}{secret}, 'refunds:read', $acme, 2);        # missing_scope
check($key{checkout}{secret}, 'payments:write', $bolt, 1);      # wrong_merchant
check($forged{checkout}, 'payments:write', $acme, 2);           # invalid_key
check($typo, 'payments:write', $acme, 2);                       # malformed_key: belongs to no key
check($key{reader}{secret}, 'payments:read', $acme, 3);
check($key{reader}{secret}, 'payments:write', $acme, 1);        # missing_scope
check($forged{reader}, 'payments:read', $acme, 1);              # invalid_key
check($key{revoked}{secret}, 'payments:write', $acme, 2);       # key_revoked
check($key{expired}{secret}, 'payments:read', $acme, 1);        # key_expired
check($key{paused}{secret}, 'payments:read', $acme, 2);         # key_disabled
check($key{bolt_pay}{secret}, 'payments:write', $bolt, 4);
$node->safe_psql('postgres', qq{
    SET flint.request_id = 'order-<script>alert(1)</script>';
    SELECT flint_verify_key('$key{checkout}{secret}', 'payments:read', '$acme') FROM generate_series(1, 3);
});
# Earlier traffic, back-dated so the chart has more than one minute: rows
# 3 to 55 minutes old, and some 90 minutes old that the last hour excludes.
# Inserted straight into the log, they are counted into the usage rollups as
# a late batch is (the worker's mark locked, the groups before it added), so
# the charts (flint.usage and the log after the mark) see them.
$node->safe_psql('postgres', qq{
    BEGIN;
    SELECT 1 FROM flint.usage_watermark FOR UPDATE;
    INSERT INTO flint.request_log (at, key_id, display_prefix, merchant_id, scope, outcome, sqlstate,
                                   client_addr, request_id, backend_pid, source)
    SELECT now() - make_interval(mins => v.m, secs => i), k.id, k.display_prefix, k.merchant_id, 'payments:write',
           v.outcome, CASE v.outcome WHEN 'ok' THEN '00000' WHEN 'invalid_key' THEN 'FK002' ELSE 'FK005' END,
           '203.0.113.7', 'batch-' || v.m || '-' || i, 4242, 'check'
      FROM flint.api_keys AS k,
           (VALUES ('checkout', 3, 'ok', 5), ('checkout', 3, 'invalid_key', 2), ('checkout', 7, 'ok', 9),
                   ('checkout', 12, 'missing_scope', 3), ('checkout', 20, 'ok', 4), ('checkout', 33, 'ok', 12),
                   ('checkout', 33, 'invalid_key', 5), ('checkout', 41, 'ok', 2), ('checkout', 55, 'ok', 7),
                   ('reader', 8, 'ok', 3), ('reader', 27, 'ok', 6), ('reader', 27, 'missing_scope', 1),
                   ('checkout', 90, 'ok', 3), ('reader', 90, 'ok', 2), ('bolt_pay', 15, 'ok', 8))
             AS v(name, m, outcome, n),
           generate_series(1, v.n) AS i
     WHERE k.id = CASE v.name WHEN 'checkout' THEN '$key{checkout}{id}'::uuid WHEN 'reader' THEN '$key{reader}{id}'::uuid
                              ELSE '$key{bolt_pay}{id}'::uuid END;
    INSERT INTO flint.usage AS u (minute, merchant_id, key_id, outcome, requests, cost)
    SELECT date_trunc('minute', at), merchant_id, key_id, outcome, count(*), sum(coalesce(cost, 1))
      FROM flint.request_log WHERE request_id LIKE 'batch-%' AND at < (SELECT rolled_up_to FROM flint.usage_watermark)
     GROUP BY 1, 2, 3, 4
    ON CONFLICT (minute, merchant_id, key_id, outcome)
    DO UPDATE SET requests = u.requests + EXCLUDED.requests, cost = u.cost + EXCLUDED.cost;
    COMMIT;
});
$node->safe_psql('postgres', 'SELECT flint_flush_log()');

# The API, in demo mode with Acme's keys:read key from a file.
my $tmp = PostgreSQL::Test::Utils::tempdir();
open my $kf, '>', "$tmp/demo_key" or die;
print $kf "$key{dash}{secret}\n";
close $kf;
chmod 0600, "$tmp/demo_key";
my $http = HTTP::Tiny->new(timeout => 20);
my $port = PostgreSQL::Test::Cluster::get_free_port();
my ($server_out, $server_err) = ('', '');
my $server;
{
    local $ENV{FLINT_DSN} = "host=" . $node->host . " port=" . $node->port . " dbname=postgres user=checkout_app";
    $server = IPC::Run::start([$python, "$src/examples/payments_api/server.py", '--port', $port,
        '--demo-merchant-key-file', "$tmp/demo_key"], '>', \$server_out, '2>', \$server_err);
}
# Never leave the service running, even when a test dies early.
END { eval { $server->kill_kill if $server && $server->pumpable } }
for (1 .. 100) {
    last if $http->get("http://127.0.0.1:$port/ping")->{status} == 404;
    select(undef, undef, undef, 0.1);
}
my $url = "http://127.0.0.1:$port/dashboard";

sub leaks {
    my ($html) = @_;
    my @found;
    for my $s (@secrets) {
        for my $i (0 .. length($s) - 20) {
            if (index($html, substr($s, $i, 20)) >= 0) { push @found, substr($s, 0, 16) . "... at $i"; last; }
        }
    }
    return @found;
}
sub key_rows {
    my ($html) = @_;
    my %rows;
    $rows{$1} = $2 while $html =~ m{<tr class="key"[^>]*?\sdata-key-id="([^"]+)"[^>]*>(.*?)</tr>}gs;
    return \%rows;
}
sub ids_of { my ($merchant) = @_; return sort map { $_->{id} } grep { $_->{merchant} eq $merchant } values %key; }

# Over plain HTTP first: the header wins over the demo key; refusals.
my $res = $http->get($url, { headers => { Authorization => "Bearer $key{bolt_dash}{secret}" } });
is($res->{status}, 200, 'a keys:write key of Bolt in the Authorization header gets the dashboard');
like($res->{headers}{'content-type'}, qr{^text/html}, 'as HTML');
is_deeply([ sort keys %{ key_rows($res->{content}) } ], [ ids_of($bolt) ], "Bolt's page lists exactly Bolt's keys");
is_deeply([ leaks($res->{content}) ], [], "no piece of a secret in Bolt's page");
$res = $http->get($url, { headers => { Authorization => "Bearer $key{checkout}{secret}" } });
is($res->{status}, 403, 'a key without keys:read is refused (403)');
like($res->{content}, qr/missing_scope/, '... as missing_scope');
$res = $http->get($url, { headers => { Authorization => "Bearer $key{revoked}{secret}" } });
is($res->{status}, 401, 'a revoked key is refused (401)');
$res = $http->get($url, { headers => { Authorization => 'Bearer nope' } });
is($res->{status}, 401, 'a garbage token is refused (401), the demo key is not used instead');
$res = $http->get("$url?key=$key{dash}{secret}");
is($res->{status}, 400, 'a secret in the URL is refused (400)');
is_deeply([ leaks($res->{content}) ], [], '... and not echoed');

# Headless Chromium, as a browser in demo mode sees it (no header).
my $home = PostgreSQL::Test::Utils::tempdir();
sub chromium {
    my (@args) = @_;
    local $ENV{HOME} = $home;
    my ($out, $err) = ('', '');
    my $ok = eval {
        IPC::Run::run([$chromium, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
            '--disable-dev-shm-usage', '--hide-scrollbars', "--user-data-dir=$home/profile", @args],
            '<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(180));
    };
    diag("chromium @args failed: $@ $err") unless $ok;
    return $out;
}
$node->safe_psql('postgres', 'SELECT flint_flush_log()');    # every earlier request's row is in the table
my $dom = chromium('--dump-dom', $url);
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
my $out_dir = $PostgreSQL::Test::Utils::tmp_check;
open my $dump, '>', "$out_dir/dashboard.html" or die;
print $dump $dom;
close $dump;
like($dom, qr{<h1>API keys &amp; logs</h1>}, 'Chromium rendered the dashboard');

my ($as_of) = $dom =~ m{<time id="as-of" datetime="([^"]+)"};
ok($as_of, "the page says as of when ($as_of)");
my $rows = key_rows($dom);
is_deeply([ sort keys %$rows ], [ ids_of($acme) ], 'one key row per Acme key');
is(scalar(grep { $dom =~ /\Q$key{$_}{id}\E|\Q$key{$_}{prefix}\E/ } qw(bolt_dash bolt_pay)), 0,
    "no id or prefix of Bolt's keys anywhere in the page");
is_deeply([ leaks($dom) ], [], 'no secret, nor any 20-character piece of one, anywhere in the page');
is_deeply([ leaks($server_out . $server_err) ], [], "... nor in the server's output");

my $window = "at > '$as_of'::timestamptz - interval '1 hour' AND at <= '$as_of'";
# Per key, the console filtered to it (demo mode, plain HTTP): its chart and
# its request rows (one per request: a scope check folds into the request's
# authentication) against the request log as of that page.
for my $name (qw(dash checkout reader revoked expired paused unused)) {
    my $id = $key{$name}{id};
    $node->safe_psql('postgres', 'SELECT flint_flush_log()');
    my $html = $http->get("$url?key=$id")->{content} // '';
    my ($at) = $html =~ m{<time id="as-of" datetime="([^"]+)"};
    my $w = "key_id = '$id' AND at > '$at'::timestamptz - interval '1 hour' AND at <= '$at'";
    my (%bars, %shown);
    $bars{$1} += $2 while $html =~ m{<rect class="bar" data-start="[^"]+" data-outcome="([^"]+)" data-count="(\d+)"}g;
    # every page of its log rows, through the keyset "Older requests" link
    for (my ($page, $n) = ($html, 0); $page && $n < 10; $n++) {
        $shown{$1}++ while $page =~ m{<tr class="log-row" data-request-id="[^"]*" data-outcome="([^"]+)"}g;
        my ($next) = $page =~ m{id="log-next" href="([^"]+)"};
        last unless $next;
        $next =~ s/&amp;/&/g;
        $page = $http->get("http://127.0.0.1:$port" . ($next =~ s{^/console}{/dashboard}r))->{content};
    }
    my $want = $node->safe_psql('postgres', "SELECT coalesce(string_agg(outcome || '=' || n, ',' ORDER BY outcome), '')
        FROM (SELECT outcome, count(*) AS n FROM flint.request_log WHERE $w GROUP BY 1) AS s");
    is(join(',', map { "$_=$bars{$_}" } sort keys %bars), $want, "$name: its chart's counts match the request log ($want)");
    my $want_rows = $node->safe_psql('postgres', "SELECT coalesce(string_agg(outcome || '=' || n, ',' ORDER BY outcome), '')
        FROM (SELECT outcome, count(*) AS n FROM flint.request_log WHERE $w AND source <> 'require_scope' GROUP BY 1) AS s");
    is(join(',', map { "$_=$shown{$_}" } sort keys %shown), $want_rows, "$name: one log row per request ($want_rows)");
    like($html, qr{<section id="key-panel" data-key-id="\Q$id\E"}, "$name: the key's panel");
}
like($rows->{ $key{revoked}{id} }, qr{<span class="badge status" data-status="revoked"[^>]*>revoked</span>.*stolen}s,
    'the revoked key shows as revoked, with its reason');
like($rows->{ $key{expired}{id} }, qr{<span class="badge status" data-status="expired"[^>]*>expired</span>}, 'the expired key shows as expired');
like($rows->{ $key{paused}{id} }, qr{<span class="badge status" data-status="disabled"[^>]*>disabled</span>.*investigating}s,
    'the disabled key shows as disabled, with its reason');
like($rows->{ $key{checkout}{id} }, qr{<span class="badge status" data-status="active"[^>]*>active</span>}, 'an active key shows as active');
like($rows->{ $key{checkout}{id} }, qr{&lt;b&gt;checkout &amp; "api"&lt;/b&gt;}, 'a key name is shown as text, escaped');
like($dom, qr{order-&lt;script&gt;alert\(1\)&lt;/script&gt;}, 'a request id is shown as text, escaped');
unlike($dom, qr{<script|<b>checkout}i, 'no markup from the data made it into the page');
unlike($dom, qr{<(?:link|img|iframe|object)\b|\bsrc=|https?://(?!www\.w3\.org/2000/svg")}i, 'no external assets');

my ($svg) = $dom =~ m{(<svg[^>]*\bid="outcome-chart".*?</svg>)}s;
ok($svg, 'the chart is inline SVG');
my (%bars, %bar_total);
while (($svg // '') =~ m{<rect class="bar" data-start="([^"]+)" data-outcome="([^"]+)" data-count="(\d+)"}g) {
    $bars{"$1 $2"} = $3;
    $bar_total{$2} += $3;
}
my $want_bars = $node->safe_psql('postgres', qq{
    SELECT string_agg(m || ' ' || outcome || '=' || n, ',' ORDER BY m, outcome)
      FROM (SELECT to_char(date_trunc('minute', at AT TIME ZONE 'UTC'), 'YYYY-MM-DD"T"HH24:MI"Z"') AS m, outcome, count(*) AS n
              FROM flint.request_log WHERE merchant_id = '$acme' AND $window GROUP BY 1, 2) AS s});
is(join(',', map { "$_=$bars{$_}" } sort keys %bars), $want_bars, 'one bar per minute and outcome, with the request log\'s counts');
ok(keys(%bars) >= 9, 'the chart spans several minutes (' . scalar(keys %bars) . ' bars)');
my %legend;
$legend{$1} = $2 while $dom =~ m{class="legend-count" data-outcome="([^"]+)"[^>]*>(\d+)<}g;
is_deeply(\%legend, \%bar_total, "the legend's totals add up the bars");

# A screenshot to look at.
my $png = "$out_dir/dashboard.png";
unlink $png;
chromium("--screenshot=$png", '--window-size=1200,1600', $url);
diag("dashboard screenshot: $png");
ok(-s $png && -s $png > 10_000, 'the screenshot was written (' . (-s $png // 0) . ' bytes)');
open my $fh, '<:raw', $png or die "no screenshot at $png";
read($fh, my $head, 24);
close $fh;
is(substr($head, 0, 8), "\x89PNG\r\n\x1a\n", 'it is a PNG');
is(join('x', unpack('NN', substr($head, 16, 8))), '1200x1600', 'of the window size');

$server->kill_kill;
$server->finish;
$node->stop;
done_testing();
