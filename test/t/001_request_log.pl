# The request-log pipeline across restarts, crashes, a full queue, day
# boundaries and retention.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FlintNode;

my $merchant = 'aaaaaaaa-0000-0000-0000-000000000001';
# A slow timer: only the shutdown drain (or a flush) moves rows to the table.
my $node = flint_node('log', 'flint.log_flush_interval = 60s', 'flint.log_queue_size = 4096',
                      'flint.log_queue_wait = 200ms', 'flint.log_spool_size = 1MB', 'flint.log_batch_size = 100',
                      # one merchant fills the spool here: all of it is its share
                      # (per-merchant shares of the spool: 022_spool_shares.pl)
                      'flint.merchant_share = 100');
my ($key, $secret) = make_key($node);

# 1. A clean restart drains the queue: no row lost.
$node->safe_psql('postgres', "SELECT flint_check_key('$secret', 'payments:read', '$merchant') FROM generate_series(1, 700)");
my $pending = $node->safe_psql('postgres', "SELECT pending FROM flint_log_status()");
cmp_ok($pending, '>', 0, "rows are still queued before the restart ($pending)");
$node->restart;    # fast shutdown: the worker drains on SIGTERM
is($node->safe_psql('postgres', "SELECT count(*) FROM flint.request_log WHERE key_id = '$key'"),
    700, 'clean restart: all 700 queued rows were inserted');
wait_for_worker($node);

# 2. kill -9 of a backend: the postmaster restarts everything, the worker comes back, logging goes on.
my $old_worker = wait_for_worker($node);
my $bg = $node->background_psql('postgres');
my $victim = $bg->query_safe('SELECT pg_backend_pid()');
kill 'KILL', $victim;
$node->poll_query_until('postgres', 'SELECT true') or die 'server did not come back';
my $new_worker = wait_for_worker($node);
isnt($new_worker, $old_worker, 'the log worker was restarted after the crash');
is($node->safe_psql('postgres', "SELECT flint_verify_key('$secret', 'payments:read', '$merchant') = '$key'"),
    't', 'verification works after the crash restart');
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
is($node->safe_psql('postgres', "SELECT count(*) FROM flint.request_log WHERE key_id = '$key' AND at > now() - interval '1 minute' AND source = 'verify'"),
    1, 'logging continues after the crash');

# 3. A full queue refuses (fail closed) with the documented error instead of
# dropping rows, once the durable spool (1 MB here) is full too.
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
my $rows_before = $node->safe_psql('postgres', 'SELECT count(*) FROM flint.request_log');
my $queued_before = $node->safe_psql('postgres', 'SELECT queued FROM flint_log_status()');
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE flint.request_log IN ACCESS EXCLUSIVE MODE');
# The worker blocks on the lock and spools what it cannot insert. Verify
# until a refusal says the spool is full: refusals before it (the queue full
# for flint.log_queue_wait while the worker waits on the lock, on a busy
# machine) are counted and the calls go on (FlintNode's verify_until_spool_full).
my ($accepted, $refused, $state, $message, $detail) = verify_until_spool_full($node, "flint_check_key('$secret', 'payments:read', '$merchant')", 50000);
my $refusals_seen = $refused;
like($detail, qr/its spool holds flint.log_spool_size \(1 MB\)/,
    "a full queue and spool refuse a call ($accepted accepted, $refused refusals): the DETAIL names the full spool");
like($message, qr/log_queue_full: the request log queue is full/, 'with the log_queue_full message');
is($state, '53000', 'SQLSTATE 53000 (insufficient_resources), from flint_check_key too');
cmp_ok($node->safe_psql('postgres', 'SELECT pending FROM flint_log_status()'), '>=', 4096 - 1, 'the queue is full');
cmp_ok($node->safe_psql('postgres', 'SELECT spooled FROM flint_log_status() LIMIT 1'), '>', 0,
    'after the spool took what it could');
# Past that point only the spool's last room takes a call: it is "full" once
# it cannot take a batch (100 rows here, counted at the in-memory row size;
# its files pack tighter), and the worker or the overflow writer may still
# fill what is left, so flint_verify_key is refused within a few hundred calls.
($accepted, $refused, $state, $message, $detail) = verify_until_spool_full($node, "flint_verify_key('$secret', 'payments:read', '$merchant')", 1000);
$refusals_seen += $refused;
cmp_ok($accepted, '<', 1000, "then flint_verify_key is refused too ($accepted accepted first)");
like($detail, qr/its spool holds flint.log_spool_size/, 'for the full spool');
cmp_ok($node->safe_psql('postgres', 'SELECT refused FROM flint_log_status()'), '>=', $refusals_seen,
    "refusals are counted (at least the $refusals_seen seen here)");
$locker->query_safe('COMMIT');
$locker->quit;
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
is($node->safe_psql('postgres', 'SELECT pending FROM flint_log_status()'), 0, 'the queue drains once the table is free');
is($node->safe_psql('postgres', "SELECT flint_verify_key('$secret', 'payments:read', '$merchant') = '$key'"),
    't', 'verification works again');
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
my $queued_after = $node->safe_psql('postgres', 'SELECT queued FROM flint_log_status()');
is($node->safe_psql('postgres', 'SELECT count(*) FROM flint.request_log'), $rows_before + ($queued_after - $queued_before),
    'every accepted row is in the table: none was dropped');

# 4. Partitions roll over at a (simulated) day boundary, in UTC.
$node->safe_psql('postgres', q{SELECT flint._maintain_request_log('2031-03-01')});
$node->safe_psql('postgres', q{
    INSERT INTO flint.request_log (at, outcome, sqlstate, backend_pid, source)
    VALUES ('2031-03-01 23:59:59.999+00', 'ok', '00000', 1, 'verify'),
           ('2031-03-02 00:00:00+00', 'ok', '00000', 1, 'verify'),
           ('2031-03-03 12:00:00+00', 'ok', '00000', 1, 'verify')});
is($node->safe_psql('postgres', q{SELECT string_agg(tableoid::regclass::text, ',' ORDER BY at) FROM flint.request_log WHERE at >= '2031-03-01'}),
    'flint.request_log_20310301,flint.request_log_20310302,flint.request_log_20310303',
    'rows on each side of midnight land in their own day partition');
# the worker keeps partitions ahead of today
my $today = $node->safe_psql('postgres', q{SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')});
my $ahead = $node->safe_psql('postgres', q{SELECT to_char((now() AT TIME ZONE 'UTC') + interval '2 days', 'YYYYMMDD')});
ok($node->safe_psql('postgres', "SELECT to_regclass('flint.request_log_$today') IS NOT NULL AND to_regclass('flint.request_log_$ahead') IS NOT NULL") eq 't',
    'the worker created partitions for today and two days ahead');

# 5. Retention: the worker drops whole partitions older than flint.log_retention.
$node->safe_psql('postgres', q{SELECT flint._maintain_request_log((now() AT TIME ZONE 'UTC')::date - 10)});
my $old = $node->safe_psql('postgres', q{SELECT to_char((now() AT TIME ZONE 'UTC') - interval '10 days', 'YYYYMMDD')});
ok($node->safe_psql('postgres', "SELECT to_regclass('flint.request_log_$old') IS NOT NULL") eq 't', 'an old partition exists');
$node->append_conf('postgresql.conf', "flint.log_retention = '3 days'\n");
$node->reload;
$node->poll_query_until('postgres', "SELECT to_regclass('flint.request_log_$old') IS NULL")
  or die 'old partition was not dropped';
pass('flint.log_retention: the worker dropped the 10-day-old partition');
ok($node->safe_psql('postgres', "SELECT to_regclass('flint.request_log_$today') IS NOT NULL") eq 't', "today's partition stays");

$node->stop;
done_testing();
