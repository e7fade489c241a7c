# Traffic controls (1.2) end to end: the example payments API's HTTP mapping
# (429 + Retry-After, 429 usage_exceeded, 403 ip_not_allowed, X-Forwarded-For),
# allowlists against real TCP peer addresses (127.0.0.1, ::1, the Unix
# socket), exact limits under 8 concurrent sessions, the quota's bound across
# kill -9 crash restarts, and the refill at a new period.
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
use IO::Socket::IP;
use Socket qw(AF_INET6);
use POSIX ();
use Time::HiRes ();
use FlintNode;

my $src = $ENV{FLINT_SRC} or die 'FLINT_SRC must point at the source tree';
my $python = '/usr/bin/python3';
my $have_psycopg = system($python, '-c', 'import psycopg') == 0;

# Does this machine have an IPv6 loopback to listen on?
my $have_v6 = do {
    my $s = IO::Socket::IP->new(Domain => AF_INET6, LocalHost => '::1', LocalPort => 0, Listen => 1);
    $s ? 1 : 0;
};
note('IPv6 loopback ' . ($have_v6 ? 'available' : 'not available: the ::1 checks are skipped'));

my $quota_lease = 100;
my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $cobalt = 'cccccccc-0000-0000-0000-00000000000c';   # merchant limit, concurrent
my $delta = 'dddddddd-0000-0000-0000-00000000000d';    # merchant limit, HTTP
my $node = flint_node('traffic',
    "listen_addresses = '" . ($have_v6 ? '127.0.0.1,::1' : '127.0.0.1') . "'",
    "flint.quota_lease = $quota_lease");
$node->append_conf('pg_hba.conf', "host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n");
$node->reload;
$node->safe_psql('postgres', "INSERT INTO flint.merchants (id, name) VALUES ('$cobalt', 'Cobalt'), ('$delta', 'Delta')");

# A key with limits: flint_set_key_limits(key, <args>) as the admin; returns (key_id, secret).
sub limited_key {
    my ($merchant, $scopes, $limits) = @_;
    my $row = $node->safe_psql('postgres',
        "SELECT key_id || '|' || secret FROM flint_create_key('$merchant', 'traffic', '$scopes')");
    my ($id, $secret) = split /\|/, $row;
    $node->safe_psql('postgres', "SELECT flint_set_key_limits('$id', $limits)") if $limits;
    return ($id, $secret);
}

sub check_sql {
    my ($secret, $merchant, @rest) = @_;
    my $extra = @rest ? ', ' . join(', ', @rest) : '';
    return "SELECT coalesce(code, 'ok') FROM flint_check_key('$secret', 'payments:read', '$merchant'$extra)";
}

# psql over TCP to $host ('127.0.0.1', '::1') or, for undef, the Unix socket;
# $request_id tags the request-log rows of the session.
sub psql_at {
    my ($host, $sql, $request_id) = @_;
    local $ENV{PGOPTIONS} = "-c flint.request_id=$request_id" if $request_id;
    my ($out, $err) = ('', '');
    IPC::Run::run(['psql', '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-h', $host // $node->host,
                   '-p', $node->port, '-d', 'postgres', '-c', $sql], '<', \undef, '>', \$out, '2>', \$err)
      or die 'psql at ' . ($host // 'the Unix socket') . " failed: $err";
    chomp $out;
    return $out;
}

# $n calls of $sql, one statement each.
sub repeat_sql { my ($sql, $n) = @_; return "$sql;\n" x $n; }

sub flush_log { $node->safe_psql('postgres', 'SELECT flint_flush_log()') }

###############################################################################
# a. The example API's HTTP mapping.
###############################################################################
my $http = HTTP::Tiny->new(timeout => 20);
my ($server, $port);
# Never leave the service running, even when a test dies early.
END { eval { $server->kill_kill if $server && $server->pumpable } }

sub start_api {
    my (@flags) = @_;
    $port = PostgreSQL::Test::Cluster::get_free_port();
    local $ENV{FLINT_DSN} = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=checkout_app';
    $server = IPC::Run::start([$python, "$src/examples/payments_api/server.py", '--port', $port, @flags],
        '>', \my $out, '2>', \my $err);
    for (1 .. 100) {
        last if $http->get("http://127.0.0.1:$port/ping")->{status} == 404;
        select(undef, undef, undef, 0.1);
    }
}

sub stop_api { $server->kill_kill; $server->finish; undef $server; }

# Returns (status, decoded JSON body or {}, response headers).
sub call {
    my ($method, $path, $token, %opt) = @_;
    my %headers = ('X-Request-Id' => $opt{request_id} // 'traffic-' . int(rand(1e9)));
    $headers{Authorization} = "Bearer $token" if defined $token;
    $headers{'X-Forwarded-For'} = $opt{xff} if defined $opt{xff};
    $headers{'Content-Type'} = 'application/json' if $opt{body};
    my $res = $http->request($method, "http://127.0.0.1:$port$path",
        { headers => \%headers, ($opt{body} ? (content => encode_json($opt{body})) : ()) });
    my $json = eval { decode_json($res->{content}) } // {};
    return ($res->{status}, $json, $res->{headers});
}

SKIP: {
    skip 'python3-psycopg is not installed: no HTTP checks', 1 unless $have_psycopg;
    $node->safe_psql('postgres', slurp_file("$src/examples/payments_api/schema.sql"));
    start_api();

    # A rate limit of 3 per hour: the 4th request is 429 with Retry-After (~20 minutes).
    my (undef, $rate_secret) = limited_key($acme, '{payments:read}', "rate_limit => 3, rate_window => '1 hour'");
    my @statuses = map { (call('GET', '/payments', $rate_secret))[0] } 1 .. 3;
    is("@statuses", '200 200 200', 'rate limit 3/hour: three requests pass');
    my ($status, $json, $headers) = call('GET', '/payments', $rate_secret);
    is($status, 429, 'the 4th request is 429');
    is($json->{error}{code}, 'rate_limited', 'with error code rate_limited');
    is($json->{error}{limit}, 'key', "naming the key's limit");
    my $retry = $headers->{'retry-after'} // '';
    like($retry, qr/^\d+$/, "Retry-After is whole seconds ($retry)");
    ok($retry > 0 && $retry >= 1100 && $retry <= 1200, 'Retry-After is about 20 minutes (one token per 1200 s)');
    is($json->{error}{retry_after_seconds}, $retry, 'the body carries the same seconds');

    # A merchant limit of 2 per minute across two keys: the third is 429, naming the merchant's limit.
    my (undef, $d1) = limited_key($delta, '{payments:read}');
    my (undef, $d2) = limited_key($delta, '{payments:read}');
    $node->safe_psql('postgres', "SELECT flint_set_merchant_limits('$delta', 2, '1 minute')");
    is((call('GET', '/payments', $d1))[0] . ' ' . (call('GET', '/payments', $d2))[0], '200 200',
        'merchant limit 2/minute: one request per key passes');
    ($status, $json, $headers) = call('GET', '/payments', $d1);
    is($status, 429, "the merchant's third request is 429");
    is($json->{error}{code} . '/' . $json->{error}{limit}, 'rate_limited/merchant', "rate_limited by the merchant's limit");
    ok(($headers->{'retry-after'} // 0) >= 1 && $headers->{'retry-after'} <= 30,
        "Retry-After within the merchant's refill time (" . ($headers->{'retry-after'} // 'none') . ')');

    # A quota of 2: POST /payments costs 1, so the third is 429 usage_exceeded; GET costs 0.
    my ($quota_key, $quota_secret) = limited_key($acme, '{payments:read,payments:write}', 'remaining => 2');
    @statuses = map { (call('POST', '/payments', $quota_secret, body => { amount_cents => 100 }))[0] } 1 .. 2;
    is("@statuses", '201 201', 'quota 2: two payments are made');
    ($status, $json, $headers) = call('POST', '/payments', $quota_secret, body => { amount_cents => 100 });
    is($status, 429, 'the third payment is 429');
    is($json->{error}{code}, 'usage_exceeded', 'with error code usage_exceeded');
    ok(!defined $headers->{'retry-after'}, 'and no Retry-After');
    ($status, $json) = call('GET', '/payments', $quota_secret);
    is($status, 200, 'a GET (cost 0) still works with the quota used up');
    is(scalar @{ $json->{payments} }, 2, 'and lists the two payments');
    is($node->safe_psql('postgres', "SELECT remaining FROM flint.api_keys WHERE id = '$quota_key'"), '0',
        'the table has nothing left');

    # Allowlists against the HTTP peer address (the server listens on 127.0.0.1).
    my ($far_key, $far_secret) = limited_key($acme, '{payments:read}', "allowed_ips => '{10.9.0.0/16}'");
    my ($near_key, $near_secret) = limited_key($acme, '{payments:read}', "allowed_ips => '{127.0.0.1/32}'");
    ($status, $json) = call('GET', '/payments', $far_secret);
    is($status, 403, 'allowlist 10.9.0.0/16, request from 127.0.0.1: 403');
    is($json->{error}{code}, 'ip_not_allowed', 'with error code ip_not_allowed');
    ($status, $json) = call('GET', '/payments', $far_secret, xff => '10.9.1.2');
    is($status . ' ' . ($json->{error}{code} // ''), '403 ip_not_allowed',
        'X-Forwarded-For is ignored without --trust-forwarded-for');
    is((call('GET', '/payments', $near_secret, request_id => 'near-peer'))[0], 200, 'allowlist 127.0.0.1/32: 200');

    # The request log holds the address checked and the cost.
    flush_log();
    is($node->safe_psql('postgres', "SELECT string_agg(DISTINCT host(client_addr), ',') FROM flint.request_log WHERE key_id IN ('$far_key', '$near_key')"),
        '127.0.0.1', 'the log rows carry the peer address');
    is($node->safe_psql('postgres', "SELECT string_agg(outcome || ':' || cost, ',' ORDER BY at) FROM flint.request_log WHERE key_id = '$quota_key' AND source = 'authenticate'"),
        'ok:1,ok:1,usage_exceeded:1,ok:0', 'and each authentication\'s cost: POST 1, GET 0');

    # Behind a proxy: --trust-forwarded-for takes the entry the proxy
    # appended, the last; what the client put before it is its own choice.
    stop_api();
    start_api('--trust-forwarded-for');
    is((call('GET', '/payments', $far_secret, xff => '198.51.100.7, 10.9.1.2', request_id => 'via-proxy'))[0], 200,
        '--trust-forwarded-for: the last entry 10.9.1.2 (the proxy\'s) is in 10.9.0.0/16: 200');
    ($status, $json) = call('GET', '/payments', $near_secret, xff => '127.0.0.1, 198.51.100.7');
    is($status . ' ' . ($json->{error}{code} // ''), '403 ip_not_allowed',
        'a client that sends X-Forwarded-For: 127.0.0.1 itself gets the proxy\'s 198.51.100.7 checked: 403');
    is((call('GET', '/payments', $near_secret, xff => '::ffff:127.0.0.1'))[0], 200,
        'an IPv4-mapped entry is taken as the IPv4 address it maps');
    ($status, $json) = call('GET', '/payments', $near_secret, xff => '127.0.0.1, unknown');
    is($status . ' ' . ($json->{error}{code} // ''), '400 bad_request', 'a trusted entry that is no address: 400');
    is((call('GET', '/payments', $near_secret))[0], 200, 'no X-Forwarded-For: the peer address');
    flush_log();
    is($node->safe_psql('postgres', "SELECT host(client_addr) FROM flint.request_log WHERE request_id = 'via-proxy'"),
        '10.9.1.2', 'the log row carries the forwarded address');
    # Two proxies of ours (a CDN, then a load balancer): the second entry from the end.
    stop_api();
    start_api('--trust-forwarded-for', '--forwarded-hops', '2');
    is((call('GET', '/payments', $far_secret, xff => '127.0.0.1, 10.9.1.2, 192.0.2.10'))[0], 200,
        '--forwarded-hops 2: the entry before the load balancer\'s, 10.9.1.2: 200');
    ($status, $json) = call('GET', '/payments', $far_secret, xff => '192.0.2.10');
    is($status . ' ' . ($json->{error}{code} // ''), '400 bad_request', 'fewer entries than hops: 400');

    # The dashboard (cost 0) is rate limited too, with Retry-After on its HTML error page.
    my (undef, $dash_secret) = limited_key($acme, '{keys:read}', "rate_limit => 1, rate_window => '1 minute'");
    is((call('GET', '/dashboard', $dash_secret))[0], 200, 'dashboard: the first request passes');
    (undef, undef, $headers) = call('GET', '/dashboard', $dash_secret);
    ok(($headers->{'retry-after'} // 0) >= 50, 'the second is refused with Retry-After ' . ($headers->{'retry-after'} // 'none'));
    stop_api();
}

###############################################################################
# b. Allowlists against the connection's real address.
###############################################################################
{
    my ($key, $secret) = limited_key($acme, '{payments:read}', "allowed_ips => '{127.0.0.1/32}'");
    is(psql_at('127.0.0.1', check_sql($secret, $acme), 'tcp-v4'), 'ok', 'allowlist 127.0.0.1/32, TCP from 127.0.0.1: ok');
    is(psql_at(undef, check_sql($secret, $acme), 'unix'), 'ip_not_allowed', 'over the Unix socket (no address): ip_not_allowed');
    # The client_ip argument overrides the connection's address.
    is(psql_at('127.0.0.1', check_sql($secret, $acme, "'10.1.1.1'"), 'tcp-v4-override'), 'ip_not_allowed',
        'TCP from 127.0.0.1 with client_ip 10.1.1.1: ip_not_allowed');
    is(psql_at(undef, check_sql($secret, $acme, "'127.0.0.1'"), 'unix-override'), 'ok',
        'Unix socket with client_ip 127.0.0.1: ok');
    is(psql_at(undef, check_sql($secret, $acme, "'::ffff:127.0.0.1'"), 'unix-mapped'), 'ip_not_allowed',
        'an IPv4-mapped IPv6 address never matches an IPv4 network');
    my %want = ('tcp-v4' => 'ok 127.0.0.1', unix => 'ip_not_allowed none', 'tcp-v4-override' => 'ip_not_allowed 10.1.1.1',
                'unix-override' => 'ok 127.0.0.1', 'unix-mapped' => 'ip_not_allowed ::ffff:127.0.0.1');
    SKIP: {
        skip 'no IPv6 loopback', 2 unless $have_v6;
        is(psql_at('::1', check_sql($secret, $acme), 'tcp-v6'), 'ip_not_allowed', 'TCP from ::1: ip_not_allowed');
        is(psql_at('::1', check_sql($secret, $acme, "'127.0.0.1'"), 'tcp-v6-override'), 'ok', 'TCP from ::1 with client_ip 127.0.0.1: ok');
        $want{'tcp-v6'} = 'ip_not_allowed ::1';
        $want{'tcp-v6-override'} = 'ok 127.0.0.1';
    }
    flush_log();
    my %got = map { split /\|/ } split /\n/, $node->safe_psql('postgres',
        "SELECT request_id || '|' || outcome || ' ' || coalesce(host(client_addr), 'none') FROM flint.request_log WHERE key_id = '$key'");
    is_deeply(\%got, \%want, 'each log row carries the address that was checked');
}

###############################################################################
# c. Exact limits under 8 concurrent sessions x 200 calls.
###############################################################################
# Runs one SQL script per session, all at once (they start together at a
# barrier); returns {output line => count} over all sessions.
sub concurrent {
    my (@scripts) = @_;
    my $at = sprintf('%.3f', Time::HiRes::time() + 1.5);
    my (@h, @out);
    for my $i (0 .. $#scripts) {
        $out[$i] = '';
        my $script = "SELECT pg_sleep_until(to_timestamp($at)) IS NULL AS started \\gset\n$scripts[$i]";
        push @h, IPC::Run::start(['psql', '-X', '-A', '-t', '-q', '-h', $node->host, '-p', $node->port, '-d', 'postgres'],
            '<', \$script, '>', \$out[$i], '2>', \my $err);
    }
    $_->finish for @h;
    my %n;
    for (@out) { $n{$_}++ for grep { length } split /\n/ }
    return \%n;
}

sub counts { my ($n) = @_; join(', ', map { "$_ $n->{$_}" } sort keys %$n) }

my $rate_key_c;
{
    my ($key, $secret) = limited_key($acme, '{payments:read}', "rate_limit => 50, rate_window => '1 hour'");
    $rate_key_c = [$key, $secret];
    my $n = concurrent(map { repeat_sql(check_sql($secret, $acme), 200) } 1 .. 8);
    note('rate limit 50/hour, 8 x 200 calls: ' . counts($n));
    is_deeply($n, { ok => 50, rate_limited => 1550 }, 'rate limit 50/hour: exactly 50 ok and 1550 rate_limited');

    ($key, $secret) = limited_key($acme, '{payments:read}', 'remaining => 300');
    $n = concurrent(map { repeat_sql(check_sql($secret, $acme, 'NULL', 1), 200) } 1 .. 8);
    note('quota 300, 8 x 200 calls of cost 1: ' . counts($n));
    is_deeply($n, { ok => 300, usage_exceeded => 1300 }, 'quota 300: exactly 300 ok and 1300 usage_exceeded');
    is($node->safe_psql('postgres', "SELECT remaining FROM flint.api_keys WHERE id = '$key'"), '0', 'the quota is used up in the table');

    my (undef, $c1) = limited_key($cobalt, '{payments:read}');
    my (undef, $c2) = limited_key($cobalt, '{payments:read}');
    $node->safe_psql('postgres', "SELECT flint_set_merchant_limits('$cobalt', 50, '1 hour')");
    $n = concurrent(map { repeat_sql(check_sql($_ % 2 ? $c1 : $c2, $cobalt), 200) } 1 .. 8);
    note('merchant limit 50/hour over two keys, 8 x 200 calls: ' . counts($n));
    is_deeply($n, { ok => 50, rate_limited => 1550 }, 'merchant limit 50/hour across two keys: exactly 50 ok');
}

###############################################################################
# e. Refill at a new period (the stored quota_period_start).
###############################################################################
{
    my ($key, $secret) = limited_key($acme, '{payments:read}', "remaining => 10, refill_amount => 10, refill_interval => 'day'");
    my $eleven = join('', map { check_sql($secret, $acme) . ";\n" } 1 .. 11);
    my $run = sub { my $out = $node->safe_psql('postgres', $eleven); [split /\n/, $out] };
    my $calls = $run->();
    is(scalar(grep { $_ eq 'ok' } @$calls[0 .. 9]) . ' ' . $calls->[10], '10 usage_exceeded', 'quota 10/day: 10 pass, the 11th fails');
    $node->safe_psql('postgres', "UPDATE flint.api_keys SET quota_period_start = quota_period_start - interval '1 day' WHERE id = '$key'");
    $calls = $run->();
    is(scalar(grep { $_ eq 'ok' } @$calls[0 .. 9]) . ' ' . $calls->[10], '10 usage_exceeded',
        'after the day turned (quota_period_start a day back): 10 more pass, the 11th fails');
    is($node->safe_psql('postgres', "SELECT remaining || ' ' || (quota_period_start = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') FROM flint.api_keys WHERE id = '$key'"),
        '0 true', 'the table holds the new period, used up');
}

###############################################################################
# d. Quota across kill -9 crash restarts: never more than granted; a crash
#    forfeits the units this server held leased (plus the calls in flight).
###############################################################################
{
    my $total = 5000;
    my ($key, $secret) = limited_key($acme, '{payments:read}', "remaining => $total");
    my $clients = 3;
    my $calls_per_client = 3000;
    my $dir = PostgreSQL::Test::Utils::tempdir();
    my $sql = check_sql($secret, $acme, 'NULL', 1) . ";\n";
    # Paced (2 ms a call) so that the crashes land mid-run.
    (my $paced = $sql) =~ s/\)\;\n$/), pg_sleep(0.002);\n/;
    my @kids;
    for my $c (1 .. $clients) {
        my $pid = fork();
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            # Verify until this client's calls are made; after a crash, reconnect and go on.
            # (Never die here: the END blocks of the parent would stop the node.)
            local $SIG{__DIE__} = sub { POSIX::_exit(1) unless $^S };
            local $ENV{PGAPPNAME} = 'flint_crash_loop';
            my ($left, $ok, $refused, $runs, $failed_connects) = ($calls_per_client, 0, 0, 0, 0);
            while ($left > 0 && $failed_connects < 300) {
                my ($out, $err) = ('', '');
                # A script file, not a pipe: psql dies with its backend at a crash.
                open my $script, '>', "$dir/script$c" or POSIX::_exit(1);
                print $script $paced x $left;
                close $script;
                eval {
                    IPC::Run::run(['psql', '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-h', $node->host,
                                   '-p', $node->port, '-d', 'postgres', '-f', "$dir/script$c"], '<', \undef, '>', \$out, '2>', \$err);
                };
                $runs++;
                my @lines = grep { length } split /\n/, $out;
                $ok += grep { $_ eq 'ok' } @lines;
                $refused += grep { $_ ne 'ok' } @lines;
                $left -= @lines;
                if (!@lines && $left > 0) { $failed_connects++; Time::HiRes::sleep(0.1); }
            }
            open my $fh, '>', "$dir/client$c" or POSIX::_exit(1);
            print $fh "$ok $refused $left $runs\n";
            close $fh;
            POSIX::_exit(0);  # no END blocks: they would stop the node
        }
        push @kids, $pid;
    }

    # Watch the table while the clients spend; kill -9 a client's backend twice mid-run.
    my $min_remaining = $total;
    my $remaining = sub {
        my ($ret, $out) = eval { $node->psql('postgres', "SELECT remaining FROM flint.api_keys WHERE id = '$key'") };
        return undef unless defined $ret && $ret == 0 && defined $out && $out =~ /^\d+$/;
        $min_remaining = $out if $out < $min_remaining;
        return $out;
    };
    my $crashes = 0;
    for my $below (4000, 2000) {
        for (1 .. 3000) { my $r = $remaining->(); last if defined $r && $r <= $below; Time::HiRes::sleep(0.01); }
        my $victim = $node->safe_psql('postgres',
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'flint_crash_loop' AND state = 'active' LIMIT 1");
        $victim ||= $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE application_name = 'flint_crash_loop' LIMIT 1");
        if ($victim) {
            note("crash $below: kill -9 backend $victim with " . ($remaining->() // '?') . ' units not leased yet');
            kill 'KILL', $victim;
            $crashes++;
            # (psql may exit before reading its input while the server restarts: IPC::Run then dies)
            my $back = 0;
            for (1 .. 600) {
                my ($ret, $out) = eval { $node->psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'flint_keys log worker'") };
                if (defined $ret && $ret == 0 && ($out // '') eq '1') { $back = 1; last; }
                Time::HiRes::sleep(0.1);
            }
            die 'the server or its log worker did not come back' unless $back;
        }
    }
    my %running = map { $_ => 1 } @kids;
    while (%running) {
        $remaining->();
        delete $running{$_} for grep { waitpid($_, POSIX::WNOHANG()) != 0 } keys %running;
        Time::HiRes::sleep(0.05);
    }
    my ($ok, $refused, $left, $runs) = (0, 0, 0, 0);
    for my $c (1 .. $clients) {
        my @v = split ' ', (slurp_file("$dir/client$c") // '0 0 0 0');
        $ok += $v[0]; $refused += $v[1]; $left += $v[2]; $runs += $v[3];
    }
    # Whatever is still leased to this server is spent by one more client.
    my @tail = split /\n/, $node->safe_psql('postgres', $sql x 400);
    my $tail_ok = grep { $_ eq 'ok' } @tail;
    $ok += $tail_ok;
    flush_log();
    my $logged_ok = $node->safe_psql('postgres', "SELECT count(*) FROM flint.request_log WHERE key_id = '$key' AND outcome = 'ok'");
    diag("crash test: $crashes crash(es), $clients clients, $runs psql runs; $ok ok (the last $tail_ok after the clients), "
         . "$refused refused, $left calls not made; $logged_ok ok rows in the request log; "
         . ($total - $ok) . " units forfeited; lowest remaining seen $min_remaining");
    is($crashes, 2, 'two backends were killed mid-run');
    is($left, 0, 'every client made all its calls');
    ok($ok <= $total, "never more successes than the quota ($ok <= $total)");
    # A crash forfeits what this server held leased (at most flint.quota_lease:
    # a top-up only refills to it), plus what the calls in flight (one per
    # client: the postmaster ends every backend) had spent.
    my $floor = $total - $crashes * ($quota_lease + $clients);
    ok($ok >= $floor, "at most flint.quota_lease ($quota_lease) per crash plus the calls in flight forfeited ($ok >= $floor)");
    is($tail[-1], 'usage_exceeded', 'the quota ends used up');
    is($node->safe_psql('postgres', "SELECT remaining FROM flint.api_keys WHERE id = '$key'"), '0', 'the table has nothing left');
    ok($min_remaining >= 0, "remaining never went negative (lowest seen $min_remaining)");
    is($node->safe_psql('postgres', "SELECT count(*) FROM pg_constraint WHERE conrelid = 'flint.api_keys'::regclass AND pg_get_constraintdef(oid) LIKE '%remaining >= 0%'"),
        '1', 'and the table would refuse it (CHECK remaining >= 0)');
    # A call in flight when its backend is killed may have queued (or
    # spooled) its ok row without its client ever hearing of the success.
    ok($logged_ok <= $ok + $crashes * $clients,
        "the request log has no more ok rows than successes plus the calls in flight ($logged_ok; rows queued at a crash are lost)");

    # Rate buckets live in shared memory: the restart gave the key of part c a full bucket again.
    my ($rk, $rs) = @$rate_key_c;
    my %n;
    $n{$_}++ for split /\n/, $node->safe_psql('postgres', repeat_sql(check_sql($rs, $acme), 60));
    is_deeply(\%n, { ok => 50, rate_limited => 10 }, 'after the crash restart the rate bucket starts full again (per server, not durable)');
}

$node->stop;
done_testing();
