# End to end: the example payments API (examples/payments_api) over real HTTP
# on loopback, first straight to PostgreSQL, then through PgBouncer in
# transaction pooling mode with ONE server connection shared by every client.
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
use POSIX ();
use FlintNode;

my $src = $ENV{FLINT_SRC} or die 'FLINT_SRC must point at the source tree';
my $python = '/usr/bin/python3';
plan skip_all => 'python3-psycopg is not installed' if system($python, '-c', 'import psycopg') != 0;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $bolt = 'bbbbbbbb-0000-0000-0000-000000000002';
my $gone = 'cccccccc-0000-0000-0000-000000000003';
my $node = flint_node('api');
$node->safe_psql('postgres', "INSERT INTO flint.merchants (id, name, status) VALUES ('$bolt', 'Bolt', 'active'), ('$gone', 'Gone', 'active')");
$node->safe_psql('postgres', slurp_file("$src/examples/payments_api/schema.sql"));

sub key {
    my ($merchant, $scopes, $extra) = @_;
    $extra //= '';
    return $node->safe_psql('postgres', "SELECT secret FROM flint_create_key('$merchant', 'api', '$scopes' $extra)");
}
my %key = (
    acme_rw   => key($acme, '{payments:write}'),
    acme_ro   => key($acme, '{payments:read}'),
    acme_none => key($acme, '{refunds:read}'),
    bolt_rw   => key($bolt, '{payments:write}'),
    revoked   => key($acme, '{payments:write}'),
    expired   => key($acme, '{payments:write}', ", expires_at => now() + interval '1 hour'"),
    suspended => key($gone, '{payments:write}'),
);
$node->safe_psql('postgres', qq{
    SELECT flint_revoke_key(id) FROM flint.api_keys WHERE secret_hash = sha256(convert_to('$key{revoked}', 'UTF8'));
    UPDATE flint.api_keys SET expires_at = now() - interval '1 second' WHERE secret_hash = sha256(convert_to('$key{expired}', 'UTF8'));
    UPDATE flint.merchants SET status = 'suspended' WHERE id = '$gone';
});
my $forged = $node->safe_psql('postgres', "SELECT (flint._mint_token('live', gen_random_uuid())).secret");

my $http = HTTP::Tiny->new(timeout => 20);
my ($server, $port, $pgb);
# Never leave the service or the pooler running, even when a test dies early.
END { for my $h ($server, $pgb) { eval { $h->kill_kill if $h && $h->pumpable } } }

sub start_api {
    my ($dsn) = @_;
    $port = PostgreSQL::Test::Cluster::get_free_port();
    local $ENV{FLINT_DSN} = $dsn;
    $server = IPC::Run::start([$python, "$src/examples/payments_api/server.py", '--port', $port, '--pool-size', '4'],
        '>', \my $out, '2>', \my $err);
    for (1 .. 100) {
        last if $http->get("http://127.0.0.1:$port/ping")->{status} == 404;
        select(undef, undef, undef, 0.1);
    }
}

sub stop_api { $server->kill_kill; $server->finish; }

sub call {
    my ($method, $path, $token, $body) = @_;
    my %headers = ('X-Request-Id' => 'req-' . int(rand(1e9)));
    $headers{Authorization} = "Bearer $token" if defined $token;
    $headers{'Content-Type'} = 'application/json' if $body;
    my $res = $http->request($method, "http://127.0.0.1:$port$path",
        { headers => \%headers, ($body ? (content => encode_json($body)) : ()) });
    my $json = eval { decode_json($res->{content}) } // {};
    return ($res->{status}, $json);
}

sub status_matrix {
    my ($label) = @_;
    my @cases = (
        ['no Authorization header', 'GET', '/payments', undef, undef, 401, 'malformed_key'],
        ['garbage token', 'GET', '/payments', 'fk_live_nope', undef, 401, 'malformed_key'],
        ['one character changed', 'GET', '/payments', substr($key{acme_rw}, 0, 68) . (substr($key{acme_rw}, 68) eq 'a' ? 'b' : 'a'), undef, 401, 'malformed_key'],
        ['well-formed unknown key', 'GET', '/payments', $forged, undef, 401, 'invalid_key'],
        ['revoked key', 'GET', '/payments', $key{revoked}, undef, 401, 'key_revoked'],
        ['expired key', 'GET', '/payments', $key{expired}, undef, 401, 'key_expired'],
        ['suspended merchant', 'GET', '/payments', $key{suspended}, undef, 403, 'merchant_suspended'],
        ['read-only key writes', 'POST', '/payments', $key{acme_ro}, { amount_cents => 5 }, 403, 'missing_scope'],
        ['payment for another merchant', 'POST', '/payments', $key{acme_rw}, { amount_cents => 5, merchant_id => $bolt }, 403, 'wrong_merchant'],
        ['bad body', 'POST', '/payments', $key{acme_rw}, { currency => 'EUR' }, 400, 'bad_request'],
        ['unknown endpoint', 'GET', '/nope', $key{acme_rw}, undef, 404, 'not_found'],
    );
    for my $c (@cases) {
        my ($name, $method, $path, $token, $body, $want_status, $want_code) = @$c;
        my ($status, $json) = call($method, $path, $token, $body);
        is($status, $want_status, "$label: $name -> $want_status");
        is($json->{error}{code}, $want_code, "$label: $name -> $want_code");
    }
    my ($status, $json) = call('POST', '/payments', $key{acme_rw}, { amount_cents => 1250 });
    is($status, 201, "$label: Acme creates a payment");
    is($json->{merchant_id}, $acme, "$label: for Acme");
    ($status, $json) = call('POST', '/payments', $key{bolt_rw}, { amount_cents => 777 });
    is($status, 201, "$label: Bolt creates a payment");
    ($status, $json) = call('GET', '/payments', $key{acme_ro});
    is($status, 200, "$label: Acme lists payments");
    ok(@{ $json->{payments} } > 0 && !grep({ $_->{merchant_id} ne $acme } @{ $json->{payments} }), "$label: only Acme's payments");
    ($status, $json) = call('GET', '/payments', $key{acme_none});
    is(scalar @{ $json->{payments} }, 0, "$label: a key without payments:read sees no payments");
    $node->safe_psql('postgres', 'SELECT flint_flush_log()');
    ($status, $json) = call('GET', '/requests', $key{acme_ro});
    is($status, 200, "$label: the key's request log");
    my @rows = @{ $json->{requests} };
    ok(@rows >= 3, "$label: the read-only key's requests are listed (" . scalar(@rows) . ")");
    is(scalar(grep { ($_->{request_id} // '') !~ /^req-\d+$/ } @rows), 0, "$label: every row carries its X-Request-Id");
    ok((grep { $_->{outcome} eq 'missing_scope' && $_->{source} eq 'guarded_write' } @rows), "$label: the refused write is among them");
}

# 1. Straight to PostgreSQL.
start_api("host=" . $node->host . " port=" . $node->port . " dbname=postgres user=checkout_app");
status_matrix('direct');
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
is($node->safe_psql('postgres', q{SELECT count(*) > 0 FROM flint.request_log WHERE request_id LIKE 'req-%' AND outcome = 'malformed_key'}),
    't', 'refused HTTP requests are in the request log with their request id');
stop_api();

# 2. Through PgBouncer, transaction pooling, one server connection for everyone.
my $pgb_port = PostgreSQL::Test::Cluster::get_free_port();
my $pgb_dir = PostgreSQL::Test::Utils::tempdir();
open my $ini, '>', "$pgb_dir/pgbouncer.ini" or die;
print $ini "[databases]\npostgres = host=" . $node->host . " port=" . $node->port . " dbname=postgres user=checkout_app\n"
  . "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = $pgb_port\nunix_socket_dir =\nauth_type = any\n"
  . "pool_mode = transaction\ndefault_pool_size = 1\nmax_client_conn = 50\n"
  . "logfile = $pgb_dir/pgbouncer.log\npidfile = $pgb_dir/pgbouncer.pid\n";
close $ini;
# Debian installs pgbouncer in /usr/sbin, which is not on a normal user's PATH.
my ($pgbouncer) = grep { -x $_ } map({ "$_/pgbouncer" } split(/:/, $ENV{PATH})), '/usr/sbin/pgbouncer';
die "pgbouncer is not installed (scripts/install_deps.sh installs it)" unless $pgbouncer;
$pgb = IPC::Run::start([$pgbouncer, "$pgb_dir/pgbouncer.ini"], '>', \my $pgb_out, '2>', \my $pgb_err);
my $psql_pgb = sub {
    my ($sql) = @_;
    my $out = `psql -X -A -t -h 127.0.0.1 -p $pgb_port -d postgres -c "$sql" 2>&1`;
    chomp $out;
    return $out;
};
for (1 .. 100) { last if $psql_pgb->('SELECT 1') eq '1'; select(undef, undef, undef, 0.1); }
is($psql_pgb->('SELECT current_user'), 'checkout_app', 'PgBouncer is up and logs in as checkout_app');

# The context set by one client never reaches the next client on the same server connection.
my $acme_rw = $key{acme_rw};
my $first = $psql_pgb->("BEGIN; SELECT merchant_id FROM flint_authenticate('$acme_rw'); SELECT count(*) FROM payments; COMMIT;");
like($first, qr/$acme/, 'client 1 authenticated as Acme through the pooler');
my $backend1 = $psql_pgb->('SELECT pg_backend_pid()');
is($psql_pgb->('SELECT coalesce(flint_current_merchant()::text, \'none\') || \',\' || (SELECT count(*) FROM payments)'),
    'none,0', 'client 2 on the same server connection has no context and sees no rows');
is($psql_pgb->('SELECT pg_backend_pid()'), $backend1, 'both clients used the one pooled server connection');

# A temporary table named like a protected one would shadow it for the next
# client of the same server connection: flint_authenticate refuses there.
$psql_pgb->('CREATE TEMP TABLE payments (id bigint, merchant_id uuid, amount_cents integer, currency text, created_at timestamptz)');
is($psql_pgb->("SELECT count(*) FROM pg_class WHERE relname = 'payments' AND relpersistence = 't'"), '1',
    'a client planted a temp table "payments" on the pooled connection (TEMPORARY still granted)');
# (one implicit transaction: on error the pooler keeps the idle server connection)
like($psql_pgb->("SELECT count(*) FROM flint_authenticate('$acme_rw'); INSERT INTO payments (merchant_id, amount_cents) VALUES ('$acme', 999);"),
    qr/temporary table "payments" on this connection shadows a protected table; refusing to authenticate/,
    'the next client is refused instead of writing into it');
is($psql_pgb->('SELECT count(*) FROM pg_temp.payments'), '0', 'nothing was captured');
is($psql_pgb->('SELECT pg_backend_pid()'), $backend1, 'on the same server connection');
$psql_pgb->('DROP TABLE pg_temp.payments');
# The recommended setup closes it at the source: no TEMPORARY for the application.
$node->safe_psql('postgres', 'REVOKE TEMPORARY ON DATABASE postgres FROM PUBLIC');
like($psql_pgb->('CREATE TEMP TABLE payments (id int)'), qr/permission denied (to create temporary tables|for schema pg_temp)/,
    'with the README GRANTs the application role cannot create temp tables');
like($psql_pgb->("BEGIN; SELECT count(*) FROM flint_authenticate('$acme_rw'); COMMIT;"), qr/^1$/m,
    'and authentication works again on that connection');

start_api("host=127.0.0.1 port=$pgb_port dbname=postgres");
status_matrix('pgbouncer');

# Interleaved clients, Acme and Bolt, all multiplexed over one server connection.
my @kids;
for my $i (1 .. 6) {
    my $pid = fork();
    if ($pid == 0) {
        my ($who, $token) = $i % 2 ? ($acme, $key{acme_rw}) : ($bolt, $key{bolt_rw});
        my $bad = 0;
        for (1 .. 15) {
            my ($s, $j) = call('GET', '/payments', $token);
            $bad++ if $s != 200 || grep { $_->{merchant_id} ne $who } @{ $j->{payments} };
            ($s, $j) = call('POST', '/payments', $token, { amount_cents => 1 });
            $bad++ if $s != 201 || $j->{merchant_id} ne $who;
        }
        POSIX::_exit($bad ? 1 : 0);  # no END blocks: they would stop the node
    }
    push @kids, $pid;
}
my $failures = 0;
for (@kids) { waitpid($_, 0); $failures++ if $? != 0; }
is($failures, 0, '6 concurrent clients x 30 requests through one pooled connection: each saw only its own merchant');
is($node->safe_psql('postgres', "SELECT count(*) FROM payments WHERE merchant_id = '$acme' AND amount_cents = 1"), 45, 'all Acme writes landed for Acme');
is($node->safe_psql('postgres', "SELECT count(*) FROM payments WHERE merchant_id = '$bolt' AND amount_cents = 1"), 45, 'all Bolt writes landed for Bolt');

stop_api();
$pgb->kill_kill;
$node->stop;
done_testing();
