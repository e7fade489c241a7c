# Prometheus metrics through Debian's prometheus-postgres-exporter and
# contrib/postgres_exporter/queries.yaml: known traffic, one scrape of
# /metrics over loopback, and the flint_ series with the values that
# flint.metrics, flint.verification_counts and the key table say.
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
# Debian installs the exporter in /usr/bin; look on PATH first.
my ($exporter) = grep { -x $_ } map({ "$_/prometheus-postgres-exporter" } split(/:/, $ENV{PATH})),
  '/usr/bin/prometheus-postgres-exporter';
die "prometheus-postgres-exporter is not installed (scripts/install_deps.sh installs it)" unless $exporter;
my $contrib = "$src/contrib/postgres_exporter";
die "$contrib/queries.yaml is missing: the copy of the tree in FLINT_SRC must include contrib/"
  unless -f "$contrib/queries.yaml";

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $node = flint_node('exporter');

# A monitoring role as contrib/postgres_exporter/queries.yaml documents it:
# pg_monitor, which the extension lets read its metrics, and nothing else.
$node->safe_psql('postgres', q{
    CREATE ROLE flint_monitor LOGIN;
    GRANT pg_monitor TO flint_monitor;
});

# Keys: 4 active, 1 revoked, 1 expired, 1 disabled.
my @keys = map { [ make_key($node, '{payments:write}') ] } 1 .. 7;
my ($ok_id, $ok_secret) = @{ $keys[0] };
$node->safe_psql('postgres', qq{
    SELECT flint_revoke_key('$keys[4][0]', 'stolen');
    UPDATE flint.api_keys SET expires_at = now() - interval '1 second' WHERE id = '$keys[5][0]';
    SELECT flint_disable_key('$keys[6][0]', 'on hold');
});

# Traffic: 7 ok, 3 invalid_key (right key id, wrong secret), 2 malformed_key.
my $forged = $node->safe_psql('postgres', "SELECT (flint._mint_token('live', '$ok_id')).secret");
my $typo = substr($ok_secret, 0, 68) . (substr($ok_secret, 68) eq 'a' ? 'b' : 'a');
$node->safe_psql('postgres', qq{
    SELECT (flint_check_key('$ok_secret', 'payments:write', '$acme')).code FROM generate_series(1, 7);
    SELECT (flint_check_key('$forged', 'payments:write', '$acme')).code FROM generate_series(1, 3);
    SELECT (flint_check_key('$typo', 'payments:write', '$acme')).code FROM generate_series(1, 2);
});
$node->safe_psql('postgres', 'SELECT flint_flush_log()');

# The exporter, on a free loopback port, as flint_monitor over the node's Unix socket.
my $port = PostgreSQL::Test::Cluster::get_free_port();
# Its log (IPC::Run fills scalars only when pumped, a file at once).
my $exporter_log = "$PostgreSQL::Test::Utils::tmp_check/exporter.log";
my $proc;
# Never leave the exporter running, even when a test dies early.
END { eval { $proc->kill_kill if $proc && $proc->pumpable } }
{
    local $ENV{DATA_SOURCE_NAME} = 'host=' . $node->host . ' port=' . $node->port
      . ' user=flint_monitor dbname=postgres sslmode=disable';
    $proc = IPC::Run::start([$exporter, "--web.listen-address=127.0.0.1:$port",
        "--extend.query-path=$contrib/queries.yaml",
        '--disable-default-metrics', '--disable-settings-metrics',
        '--no-collector.database', '--no-collector.bgwriter', '--log.level=info'],
        '<', \undef, '>&', $exporter_log);
}
my $http = HTTP::Tiny->new(timeout => 20);
sub scrape {
    my %series;
    my $res = $http->get("http://127.0.0.1:$port/metrics");
    return ({}, '') unless $res->{success};
    for my $line (split /\n/, $res->{content}) {
        next unless $line =~ /^(flint_\w+)(?:\{([^}]*)\})?\s+(\S+)$/;
        my ($name, $labels, $value) = ($1, $2 // '', $3);
        my ($outcome) = $labels =~ /\boutcome="([^"]*)"/;
        $series{ defined $outcome ? "$name\{$outcome}" : $name } = $value;
    }
    return (\%series, $res->{content});
}
my ($m, $text) = ({}, '');
for (1 .. 100) {
    ($m, $text) = scrape();
    last if exists $m->{flint_queue_depth};
    select(undef, undef, undef, 0.1);
}
ok(exists $m->{flint_queue_depth}, 'the exporter serves the flint_ series')
  or diag("exporter log:\n" . slurp_file($exporter_log) . "\n/metrics:\n" . join("\n", grep { !/^(# \w+ )?(go|process|promhttp)_/ } split /\n/, $text));

# Every column of the two views became its series.
for my $name (qw(queue_depth queue_capacity queued_total inserted_total refused_total worker_up worker_lag_seconds
                 cache_hits_total cache_misses_total keys_active keys_expired keys_revoked keys_disabled)) {
    ok(exists $m->{"flint_$name"}, "flint_$name is exported");
}
like($text, qr/^pg_exporter_last_scrape_error 0$/m, 'the scrape ran every query without an error')
  or diag(join("\n", grep { /err=/ } split /\n/, slurp_file($exporter_log)));
like($text, qr/^# TYPE flint_verifications_total counter$/m, 'flint_verifications_total is a counter');
like($text, qr/^# TYPE flint_queue_depth gauge$/m, 'flint_queue_depth is a gauge');

# The verification counters.
is($m->{'flint_verifications_total{ok}'}, 7, 'flint_verifications_total{outcome="ok"} is 7');
is($m->{'flint_verifications_total{invalid_key}'}, 3, 'flint_verifications_total{outcome="invalid_key"} is 3');
is($m->{'flint_verifications_total{malformed_key}'}, 2, 'flint_verifications_total{outcome="malformed_key"} is 2');
my @outcomes = grep { /^flint_verifications_total\{/ } keys %$m;
is_deeply([ sort map { /\{(.*)\}/ } @outcomes ],
    [ split /\n/, $node->safe_psql('postgres', 'SELECT outcome FROM flint.verification_counts ORDER BY 1') ],
    'one series per outcome code of flint.verification_counts (' . scalar(@outcomes) . ')');
is(scalar(grep { !/\{(ok|invalid_key|malformed_key)\}$/ && $m->{$_} != 0 } @outcomes), 0, 'every other outcome is 0');

# Keys by status, from the key table.
is($m->{flint_keys_active}, 4, 'flint_keys_active is 4');
is($m->{flint_keys_revoked}, 1, 'flint_keys_revoked is 1');
is($m->{flint_keys_expired}, 1, 'flint_keys_expired is 1');
is($m->{flint_keys_disabled}, 1, 'flint_keys_disabled is 1');
is($m->{flint_keys_active}, $node->safe_psql('postgres', "SELECT count(*) FROM flint.key_info WHERE status = 'active'"),
    'flint_keys_active equals the active keys in flint.key_info');

# The log queue, drained and idle: the same numbers as flint_log_status().
my ($queued, $inserted, $pending, $refused, $capacity) =
  split /\|/, $node->safe_psql('postgres', 'SELECT queued, inserted, pending, refused, capacity FROM flint_log_status()');
is($m->{flint_queue_depth}, 0, 'flint_queue_depth is 0 after a flush');
is($m->{flint_queue_capacity}, $capacity, "flint_queue_capacity is the queue's capacity ($capacity)");
is($m->{flint_queued_total}, $queued, "flint_queued_total is flint_log_status().queued ($queued)");
ok($queued >= 12, 'which counts the 12 verifications');
is($m->{flint_inserted_total}, $inserted, "flint_inserted_total is flint_log_status().inserted ($inserted)");
is($m->{flint_refused_total}, 0, 'flint_refused_total is 0');
is($m->{flint_worker_up}, 1, 'flint_worker_up is 1');
is($m->{flint_worker_lag_seconds}, 0, 'flint_worker_lag_seconds is 0 with an empty queue');
ok($m->{flint_cache_hits_total} + $m->{flint_cache_misses_total} > 0, 'the key cache counters moved');

# A second scrape sees new traffic: the counters are live, not cached.
$node->safe_psql('postgres', "SELECT (flint_check_key('$ok_secret', 'payments:write', '$acme')).code FROM generate_series(1, 5)");
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
($m) = scrape();
is($m->{'flint_verifications_total{ok}'}, 12, 'five more verifications: flint_verifications_total{outcome="ok"} is 12');

$proc->kill_kill;
$proc->finish;
is_deeply([ grep { /level=error/ } split /\n/, slurp_file($exporter_log) ], [], 'the exporter logged no error');

# The alert rules over these series, when Prometheus' promtool is at hand.
SKIP: {
    my ($promtool) = grep { -x $_ } map({ "$_/promtool" } split(/:/, $ENV{PATH})), '/usr/bin/promtool';
    skip 'promtool (Debian package prometheus) is not installed', 2 unless $promtool;
    my ($o, $e) = ('', '');
    ok(IPC::Run::run([$promtool, 'check', 'rules', "$contrib/alerts.yaml"], '>', \$o, '2>&1'), 'promtool check rules alerts.yaml')
      or diag($o);
    ok(IPC::Run::run([$promtool, 'test', 'rules', "$contrib/alerts_test.yaml"], '>', \$o, '2>&1'),
        'promtool test rules alerts_test.yaml: each alert fires when it should') or diag($o);
}
$node->stop;
done_testing();
