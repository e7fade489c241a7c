# A standby's log rows reach the primary: its log worker spools them
# (durable, checksummed batch files), its forwarder sends them over libpq,
# and the primary inserts each batch once. Real streaming replication:
#  - 20,000 standby verifications, all on the primary with server = the standby;
#  - a primary outage: the standby keeps verifying, spools, survives a clean
#    restart, and forwards everything once the primary is back;
#  - kill -9 of the forwarder mid-forward: nothing lost, nothing doubled;
#  - the spool's bound: the standby fails closed with a hint naming the cause,
#    and every row it accepted arrives;
#  - promotion with rows in the spool: the new primary inserts them once.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
# The forwarder connects as a role with the README's two GRANTs and nothing else.
my $primary = forwarding_primary('primary');
my ($rc, $out, $err) = $primary->psql('postgres', 'SELECT count(*) FROM flint.request_log', extra_params => ['-U', 'flint_forwarder']);
like($err, qr/permission denied/, 'the forwarding role cannot read the log');
($rc, $out, $err) = $primary->psql('postgres', 'SELECT count(*) FROM flint.api_keys', extra_params => ['-U', 'flint_forwarder']);
like($err, qr/permission denied/, 'nor the keys');
my ($key_id, $secret) = split /\|/, $primary->safe_psql('postgres',
    "SELECT key_id || '|' || secret FROM flint_create_key('$acme', 'standby traffic', '{payments:write}')");
# A small queue, a short wait and small batches: the bound and the kill are quick to reach.
my $standby = forwarding_standby($primary, 'standby',
    'flint.log_queue_size = 1024', 'flint.log_queue_wait = 200ms', 'flint.log_batch_size = 500');

# $n verifications on the standby tagged $tag; returns how many succeeded.
my $verify_on_standby = sub {
    my ($n, $tag) = @_;
    return $standby->safe_psql('postgres', qq{
        SET flint.request_id = '$tag';
        SELECT count(*) FROM generate_series(1, $n) g,
               LATERAL flint_check_key('$secret' || left(g::text, 0), 'payments:write', '$acme') c WHERE c.code IS NULL});
};
# On $node: (rows tagged $tag from the standby, distinct calls among them).
my $arrived = sub {
    my ($node, $tag) = @_;
    return split /\|/, $node->safe_psql('postgres', qq{
        SELECT count(*), count(DISTINCT (at, backend_pid)) FROM flint.request_log
         WHERE request_id = '$tag' AND server = 'standby'});
};
my $standby_status = sub {
    my ($cols) = @_;
    return $standby->safe_psql('postgres', "SELECT $cols FROM flint_log_status() WHERE role = 'standby'");
};
my $forwarder_pid = sub {
    return $standby->safe_psql('postgres',
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'flint_keys log forwarder'");
};

$standby->poll_query_until('postgres',
    "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type IN ('flint_keys log worker', 'flint_keys log forwarder')")
  or die 'the standby\'s log worker and forwarder did not start';

# 2. Steady state: 20,000 verifications on the standby, none refused, all on the primary.
is($verify_on_standby->(20000, 's2'), 20000, '20,000 verifications on the standby succeed');
$standby->safe_psql('postgres', 'SELECT flint_flush_log()');
my ($rows, $distinct) = $arrived->($primary, 's2');
is($rows, 20000, 'flint_flush_log() on the standby returns once all 20,000 rows are on the primary');
is($distinct, 20000, 'each exactly once');
is($standby_status->('refused'), 0, 'none refused');
is($standby_status->('primary_connection'), 'connected', 'flint_log_status() on the standby: connected to the primary');
is($primary->safe_psql('postgres', "SELECT usename FROM pg_stat_activity WHERE application_name = 'flint_keys forwarder'"),
    'flint_forwarder', 'as the role flint.primary_conninfo names');
cmp_ok($standby_status->('forwarded'), '>=', 20000, 'and counts the forwarded rows');
is($primary->safe_psql('postgres',
    "SELECT role || ' ' || (forwarded >= 20000) FROM flint_log_status() WHERE server = 'standby'"),
    'forwarding true', 'flint_log_status() on the primary lists the standby and its forwarded rows');
isnt($primary->safe_psql('postgres', "SELECT last_used_at FROM flint.api_keys WHERE id = '$key_id'"), '',
    'last_used_at on the primary moved from the forwarded rows');
is($primary->safe_psql('postgres', "SELECT count(*) FROM flint.request_log WHERE server = 'primary'"), 0,
    'no standby row is attributed to the primary');

# 3. Primary outage: the standby keeps verifying and spools; a clean restart keeps the spool.
$primary->stop;
is($verify_on_standby->(5000, 's3'), 5000, 'with the primary down, 5,000 standby verifications succeed');
$standby->poll_query_until('postgres',
    "SELECT spooled >= 5000 AND pending = 0 FROM flint_log_status() WHERE role = 'standby'")
  or die 'rows not spooled';
like($standby_status->('primary_connection'), qr/^unreachable/, 'the status says the primary is unreachable');
my @files = glob($standby->data_dir . '/flint_keys_spool/*.batch');
ok(@files > 0, 'the rows are in spool files under the data directory (' . scalar(@files) . ')');
($rc, $out, $err) = $standby->psql('postgres', "SET statement_timeout = '40s'; SELECT flint_flush_log()");
like($err, qr/primary has not received this standby's rows for 30 s/, 'flint_flush_log() on the standby says the primary is away');
# Damage the spool as a disk might: a batch that is not one (first in line),
# and a batch a crash cut off before its rename.
my $spool = $standby->data_dir . '/flint_keys_spool';
PostgreSQL::Test::Utils::append_to_file("$spool/0000000000000001.batch", 'not a batch at all' x 10);
PostgreSQL::Test::Utils::append_to_file("$spool/00000000000000ff.batch.tmp", 'half a batch');
$standby->restart;
$standby->poll_query_until('postgres', "SELECT spooled >= 5000 FROM flint_log_status() WHERE role = 'standby'")
  or die 'spool lost';
pass('a clean standby restart keeps the spool');
ok(!-e "$spool/00000000000000ff.batch.tmp", 'an unfinished batch file is removed at start');
$primary->start;
$standby->poll_query_until('postgres', "SELECT primary_connection = 'connected' FROM flint_log_status() WHERE role = 'standby'")
  or die 'the forwarder did not reconnect';
$standby->safe_psql('postgres', 'SELECT flint_flush_log()');
($rows, $distinct) = $arrived->($primary, 's3');
is($rows, 5000, 'the primary is back: all 5,000 rows arrive');
is($distinct, 5000, 'none twice');
$standby->poll_query_until('postgres', "SELECT spooled = 0 FROM flint_log_status() WHERE role = 'standby'")
  or die 'spool not emptied';
pass('the spool empties once the standby has replayed the primary\'s commits');
ok(-e "$spool/0000000000000001.batch.damaged", 'the damaged batch was set aside, not sent');
like(PostgreSQL::Test::Utils::slurp_file($standby->logfile), qr/spool batch 0000000000000001.batch is damaged \(not a spool batch\)/,
    'with a WARNING in the server log');

# 6. kill -9 of the forwarder mid-forward: batches the primary committed are
# not inserted again, the others are sent after the restart.
$primary->stop;
is($verify_on_standby->(30000, 's6'), 30000, '30,000 verifications spooled during a second outage');
$standby->poll_query_until('postgres', "SELECT spooled >= 30000 AND pending = 0 FROM flint_log_status() WHERE role = 'standby'")
  or die 'rows not spooled';
$primary->start;
my $pid = $forwarder_pid->();
$primary->poll_query_until('postgres', "SELECT count(*) > 0 FROM flint.request_log WHERE request_id = 's6'", 't')
  or die 'forwarding did not resume';
kill 'KILL', $pid;
my $partial = $primary->safe_psql('postgres', "SELECT count(*) FROM flint.request_log WHERE request_id = 's6'");
note "the forwarder was killed with $partial of 30,000 rows on the primary";
$standby->poll_query_until('postgres',
    "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'flint_keys log forwarder' AND pid <> $pid")
  or die 'the forwarder did not restart';
$standby->safe_psql('postgres', 'SELECT flint_flush_log()');
($rows, $distinct) = $arrived->($primary, 's6');
is($rows, 30000, 'after the kill -9 and restart, all 30,000 spooled rows are on the primary');
is($distinct, 30000, 'none doubled');

# kill -9 of the standby's log worker while a session verifies: the standby
# restarts after the crash (every backend with it); what was spooled arrives
# once, and the standby carries on.
my $bg = $standby->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, "\\echo started\nSET flint.request_id = 's8';\n"
    . "SELECT count(*) FROM generate_series(1, 60000) g, LATERAL flint_check_key('$secret' || left(g::text, 0), 'payments:write', '$acme') c;\n");
$primary->poll_query_until('postgres', "SELECT count(*) > 1000 FROM flint.request_log WHERE request_id = 's8'", 't')
  or die 'no s8 rows forwarded';
my $worker_pid = $standby->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'flint_keys log worker'");
kill 'KILL', $worker_pid;
eval { $bg->quit };
$standby->poll_query_until('postgres',
    "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type IN ('flint_keys log worker', 'flint_keys log forwarder') AND pid <> $worker_pid")
  or die 'the standby did not come back';
$standby->safe_psql('postgres', 'SELECT flint_flush_log()');
($rows, $distinct) = $arrived->($primary, 's8');
note "after the kill -9 of the log worker: $rows rows of the interrupted statement on the primary";
cmp_ok($rows, '>', 1000, 'the rows spooled before the crash arrived');
cmp_ok($rows, '<=', 60000, 'no more than were verified');
is($distinct, $rows, 'none twice');
is($verify_on_standby->(100, 's8b'), 100, 'the standby verifies again after the crash restart');
$standby->safe_psql('postgres', 'SELECT flint_flush_log()');
($rows) = $arrived->($primary, 's8b');
is($rows, 100, 'and forwards again');

# A batch damaged while the standby runs (cut short below its header, as a
# full disk might leave it): set aside when the forwarder reaches it, and the
# spool's count goes back to what its files hold, instead of keeping the
# rows the batch was written with for good.
$primary->stop;
is($verify_on_standby->(3000, 's9'), 3000, '3,000 verifications spooled while the primary is away');
$standby->poll_query_until('postgres', "SELECT spooled >= 3000 AND pending = 0 FROM flint_log_status() WHERE role = 'standby'")
  or die 'rows not spooled';
my @batches = sort glob($standby->data_dir . '/flint_keys_spool/*.batch');
cmp_ok(scalar @batches, '>', 1, 'in several batches (' . scalar(@batches) . ')');
my $cut = $batches[-1];
truncate($cut, 4) or die "truncate $cut: $!";
$primary->start;
ok($standby->poll_query_until('postgres', "SELECT spooled = 0 AND pending = 0 FROM flint_log_status() WHERE role = 'standby'"),
    'the spool count returns to 0 once the rest is on the primary and the cut batch is set aside');
ok(-e "$cut.damaged", 'the cut batch was set aside');
$primary->poll_query_until('postgres', "SELECT count(*) > 0 FROM flint.request_log WHERE request_id = 's9'", 't');
($rows, $distinct) = $arrived->($primary, 's9');
ok($rows > 0 && $rows < 3000, "the other batches' rows arrived ($rows of 3,000)");
is($distinct, $rows, 'once each');

# 4. The spool's bound: past flint.log_spool_size the standby fails closed, clearly.
# A forwarded batch stays in the spool (and counts) until the standby has
# replayed its commit: start from an empty spool, or the bound is reached
# by what was already there (1,024 accepted, the queue alone, on a slow machine).
$standby->poll_query_until('postgres', "SELECT spooled = 0 FROM flint_log_status() WHERE role = 'standby'")
  or die 'the spool did not empty';
$primary->stop;
$standby->append_conf('postgresql.conf', "flint.log_spool_size = 1MB\n");
$standby->reload;
# A refusal of the queue wait (the worker busy spooling, on a busy machine)
# is not the bound: verify until one names the full spool.
my ($accepted, $refused, $state, $message, $detail, $waits) = verify_until_spool_full($standby,
    "flint_verify_key('$secret', 'payments:write', '$acme')", 100000, "SET flint.request_id = 's4';");
note "spool bound: $accepted accepted, $refused refusals; the worker at the other refusals: "
  . ($waits eq '' ? 'none' : $waits);
like($detail, qr/spool holds flint.log_spool_size/, 'verifications go on until the spool is full')
  or diag "last refusal: $state $message $detail";
cmp_ok($accepted, '>', 3000, "the spool takes about 1 MB of rows, plus the queue ($accepted accepted)");
cmp_ok($accepted, '<', 100000, 'then the standby refuses');
($rc, $out, $err) = $standby->psql('postgres', "SELECT flint_verify_key('$secret', 'payments:write', '$acme')");
like($err, qr/log_queue_full/, 'the refusal is log_queue_full');
like($err, qr/spool holds flint.log_spool_size/, 'its detail names the full spool');
like($err, qr/HINT:.*primary is unreachable/s, 'its hint names the cause');
unlike($err, qr/\Q$secret\E/, 'and never echoes the secret');
$primary->start;
$standby->append_conf('postgresql.conf', "flint.log_spool_size = 1GB\n");
$standby->reload;
$standby->safe_psql('postgres', 'SELECT flint_flush_log()');
($rows, $distinct) = $arrived->($primary, 's4');
is($rows, $accepted, 'every verification accepted below the bound arrives on the primary');
is($distinct, $accepted, 'once');
is($verify_on_standby->(100, 's4b'), 100, 'with the primary back, the standby verifies again');

# 5. Promotion with rows in the spool: the new primary inserts them once, and carries on.
$standby->safe_psql('postgres', 'SELECT flint_flush_log()');
# A batch the primary has committed stays in the spool until the standby has
# replayed that commit (were the primary lost first, the promoted standby
# would still have it).
$standby->safe_psql('postgres', 'SELECT pg_wal_replay_pause()');
is($verify_on_standby->(50, 's7'), 50, 'with replay paused, 50 more standby verifications');
$standby->safe_psql('postgres', 'SELECT flint_flush_log()');
($rows) = $arrived->($primary, 's7');
is($rows, 50, 'they are on the primary');
sleep 1;
cmp_ok($standby_status->('spooled'), '>=', 50, 'and still in the spool: the standby has not replayed their commit');
$primary->stop;
is($verify_on_standby->(3000, 's5'), 3000, '3,000 rows spooled before the promotion');
$standby->poll_query_until('postgres', "SELECT spooled >= 3000 AND pending = 0 FROM flint_log_status() WHERE role = 'standby'")
  or die 'rows not spooled';
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()') or die 'no promotion';
$standby->safe_psql('postgres', 'SELECT flint_flush_log()');
($rows, $distinct) = $arrived->($standby, 's5');
is($rows, 3000, 'after pg_promote the new primary has inserted its spooled rows');
is($distinct, 3000, 'once each');
($rows, $distinct) = $arrived->($standby, 's7');
is("$rows $distinct", '50 50', 'the batch kept for replay is there once (replayed at promotion, its spool copy refused)');
($rows) = $arrived->($standby, 's2');
is($rows, 20000, 'the rows forwarded earlier came back by replication, not twice');
is($standby->safe_psql('postgres', "SELECT role || ' ' || spooled FROM flint_log_status() LIMIT 1"), 'primary 0',
    'it reports itself as a primary with an empty spool');
is($verify_on_standby->(10, 's5b'), 10, 'it verifies as a primary');
$standby->safe_psql('postgres', 'SELECT flint_flush_log()');
($rows) = $arrived->($standby, 's5b');
is($rows, 10, 'and inserts its new rows itself');
my $today = $standby->safe_psql('postgres', "SELECT to_char(current_date + 7, 'YYYYMMDD')");
$standby->poll_query_until('postgres', "SELECT to_regclass('flint.request_log_$today') IS NOT NULL")
  or die 'no partitions';
pass('its worker keeps the partitions a week ahead');
is($standby->safe_psql('postgres', "SELECT flint_create_key('$acme', 'after promotion', '{payments:read}') IS NOT NULL"),
    't', 'key management works on the new primary');
done_testing();
