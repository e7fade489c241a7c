# Nothing a tenant (or a long report) holds stops the log worker: with a key
# row locked by an open transaction, and with an open transaction reading the
# log across forced maintenance, 20,000 verifications from other sessions all
# succeed and the queue keeps draining. The worker reports its table activity,
# so autovacuum and autoanalyze process a log partition and api_keys while the
# server runs. kill -9 under load loses at most the documented bound, and
# never duplicates a row.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time);
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $bolt = 'bbbbbbbb-0000-0000-0000-000000000002';
my ($queue, $batch) = (1024, 500);
my $node = flint_node('availability',
    "flint.log_queue_size = $queue", "flint.log_batch_size = $batch", 'flint.last_used_interval = 200ms',
    'autovacuum_naptime = 1s', 'autovacuum_vacuum_insert_threshold = 500', 'autovacuum_vacuum_insert_scale_factor = 0',
    'autovacuum_vacuum_threshold = 50', 'autovacuum_vacuum_scale_factor = 0',
    'autovacuum_analyze_threshold = 50', 'autovacuum_analyze_scale_factor = 0');
$node->safe_psql('postgres', "INSERT INTO flint.merchants (id, name) VALUES ('$bolt', 'Bolt')");
my ($hostile_key, $hostile_secret) = make_key($node, '{payments:read}');
my $bolt_secret = $node->safe_psql('postgres', "SELECT secret FROM flint_create_key('$bolt', 'victim', '{payments:read}')");
my $bolt_key = $node->safe_psql('postgres', "SELECT id FROM flint.api_keys WHERE merchant_id = '$bolt'");

# 10,000 verifications in each of two other sessions at once; returns how many succeeded.
sub verify_20000 {
    my @runs;
    for (1 .. 2) {
        my ($out, $err) = ('', '');
        push @runs, [IPC::Run::start(['psql', '-X', '-At', '-d', $node->connstr('postgres'), '-c',
            # the secret depends on i, so the function runs once per row
            "SELECT count(*) FILTER (WHERE c.ok) FROM generate_series(1, 10000) AS i, "
            . "LATERAL flint_check_key('$bolt_secret' || left(i::text, 0), 'payments:read', '$bolt') AS c"],
            '>', \$out, '2>', \$err), \$out, \$err];
    }
    my $ok = 0;
    for my $r (@runs) { $r->[0]->finish; $ok += ${ $r->[1] } =~ /^(\d+)/ ? $1 : 0; diag ${ $r->[2] } if ${ $r->[2] }; }
    return $ok;
}
my $refused = sub { $node->safe_psql('postgres', 'SELECT refused FROM flint_log_status()') };

# 1. A row lock on a key that is in use.
$node->safe_psql('postgres', "SELECT flint_check_key('$hostile_secret', 'payments:read', '$acme') FROM generate_series(1, 10)");
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
my $used_before_lock = $node->safe_psql('postgres', "SELECT last_used_at FROM flint.api_keys WHERE id = '$hostile_key'");
my $locker = $node->background_psql('postgres');
$locker->query_safe("BEGIN; SELECT 1 FROM flint.api_keys WHERE id = '$hostile_key' FOR UPDATE;");
$node->safe_psql('postgres', "SELECT flint_check_key('$hostile_secret', 'payments:read', '$acme') FROM generate_series(1, 10)");
my $start = time;
my $rows_before = $node->safe_psql('postgres', 'SELECT pushed FROM (SELECT queued AS pushed FROM flint_log_status()) s');
is(verify_20000(), 20000, 'row lock held: 20,000 verifications of another merchant all succeed');
is($node->safe_psql('postgres', 'SELECT queued FROM flint_log_status()') - $rows_before, 20000,
    'each was a real verification (20,000 log rows queued)');
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
cmp_ok(time - $start, '<', 60, 'and the queue drained (flint_flush_log returned)');
is($refused->(), 0, 'no verification was refused');
is($node->safe_psql('postgres', "SELECT last_used_at IS NOT NULL FROM flint.api_keys WHERE id = '$bolt_key'"), 't',
    'last_used_at moved for the unlocked key');
is($node->safe_psql('postgres', "SELECT last_used_at FROM flint.api_keys WHERE id = '$hostile_key'"), $used_before_lock,
    'the locked key was skipped, not waited for (its last_used_at did not move)');
$locker->query_safe('COMMIT');
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
cmp_ok($node->safe_psql('postgres', "SELECT last_used_at FROM flint.api_keys WHERE id = '$hostile_key'"), 'gt', $used_before_lock,
    'and caught up once the lock was released');
$locker->quit;

# 2. An open transaction reading the log while maintenance wants an
# AccessExclusiveLock (retention dropping an old partition).
$node->safe_psql('postgres', q{CREATE TABLE flint.request_log_20200101 PARTITION OF flint.request_log
                               FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-01-02 00:00+00')});
my $reader = $node->background_psql('postgres');
$reader->query_safe('BEGIN; SELECT count(*) FROM flint.request_log;');
$node->append_conf('postgresql.conf', "flint.log_retention = '30 days'\n");
$node->reload;
my $log_offset = -s $node->logfile;
$node->poll_query_until('postgres', "SELECT pg_sleep(0.2) IS NOT NULL", 't');
is(verify_20000(), 20000, 'log read open across maintenance: 20,000 verifications all succeed');
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
is($refused->(), 0, 'no verification was refused');
$start = time;
is($node->safe_psql('postgres', 'SELECT count(*) > 0 FROM flint.request_log'), 't', 'a new reader of the log is not stuck');
cmp_ok(time - $start, '<', 5, 'behind the waiting maintenance');
ok($node->wait_for_log(qr/request_log_20200101 of the request log is in use by other sessions and was kept/, $log_offset),
    'the maintenance gave up its lock wait instead of queueing forever');
is($node->safe_psql('postgres', "SELECT to_regclass('flint.request_log_20200101') IS NOT NULL"), 't',
    'the old partition is still there while the reader holds it');
$reader->query_safe('COMMIT');
$reader->quit;
$node->reload; # maintenance again now
$node->poll_query_until('postgres', "SELECT to_regclass('flint.request_log_20200101') IS NULL")
  or die 'retention never dropped the old partition';
pass('retention ran once the reader was gone');

# 3. Autovacuum and autoanalyze see the worker's tables while the server runs.
my $today = $node->safe_psql('postgres', q{SELECT 'request_log_' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')});
ok($node->poll_query_until('postgres',
    "SELECT n_tup_ins > 0 AND last_autovacuum IS NOT NULL AND last_autoanalyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = '$today'"),
    "autovacuum and autoanalyze processed $today");
# api_keys: enough last_used_at updates to cross the thresholds
my @more = map { (make_key($node))[1] } 1 .. 60;
$node->safe_psql('postgres', join(';', map { "SELECT flint_check_key('$_', 'payments:read', '$acme')" } @more));
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
ok($node->poll_query_until('postgres',
    "SELECT n_tup_upd > 0 AND last_autoanalyze IS NOT NULL FROM pg_stat_user_tables WHERE relid = 'flint.api_keys'::regclass"),
    'autoanalyze processed flint.api_keys (its last_used_at updates were reported)');

# 4. Crash bound: kill -9 a backend under pgbench; lost rows <= the ring plus
# two batches (the worker's uncommitted one, the one its overflow thread is
# writing to the spool), none twice.
$node->safe_psql('postgres', 'TRUNCATE flint.request_log');
my $script = "$PostgreSQL::Test::Utils::tmp_check/verify.sql";
PostgreSQL::Test::Utils::append_to_file($script,
    "SELECT flint_check_key('$bolt_secret', 'payments:read', '$bolt');\n");
my ($out, $err) = ('', '');
my $bench = IPC::Run::start(['pgbench', '-n', '-c', '2', '-j', '2', '-T', '6', '-f', $script, '-d', $node->connstr('postgres')],
    '>', \$out, '2>', \$err);
my $bench_backend = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT flint_check_key%' AND pid <> pg_backend_pid() LIMIT 1";
$node->poll_query_until('postgres', "SELECT count(*) > 0 FROM ($bench_backend) b") or die "pgbench did not start: $err";
sleep 2;
my $victim = $node->safe_psql('postgres', $bench_backend);
kill 'KILL', $victim;
$bench->finish;
my ($processed) = $out =~ /number of transactions actually processed: (\d+)/;
$node->poll_query_until('postgres', 'SELECT true') or die 'server did not come back';
wait_for_worker($node);
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
my $rows = $node->safe_psql('postgres', "SELECT count(*) FROM flint.request_log WHERE key_id = '$bolt_key'");
ok(defined $processed && $processed > 100, "pgbench verified under load ($processed transactions before the crash)");
my $lost = $processed - $rows;
my $bound = $queue + 2 * $batch;
cmp_ok($lost, '<=', $bound, "lost $lost rows: at most the ring plus two batches ($bound)");
cmp_ok($rows, '<=', $processed + 2, 'no more rows than verifications (plus the two in flight)');
is($node->safe_psql('postgres', q{SELECT count(*) FROM (SELECT backend_pid, at, key_id FROM flint.request_log
                                   GROUP BY 1, 2, 3 HAVING count(*) > 1) d}), 0, 'no row was inserted twice');
done_testing();
