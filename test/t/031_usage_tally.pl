# The log worker's usage roll-up steps, left to themselves (no forced
# roll-up): flint.usage holds exactly the request-log rows before the mark,
# per merchant, key and outcome, whether a step wrote the worker's tally of
# the rows it inserted or read them back from the table:
#  - verifications spread over several tally steps, on the primary and on a
#    standby (forwarded rows are not in the tally);
#  - the worker killed while its tally holds rows not yet rolled up (the
#    next worker reads them from the table, never twice);
#  - the mark moved by someone else meanwhile;
#  - flint.usage renamed away for a while.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $bolt = 'bbbbbbbb-0000-0000-0000-000000000002';
my $primary = forwarding_primary('primary', 'log_min_messages = debug1'); # the steps say which kind they were
$primary->safe_psql('postgres', "INSERT INTO flint.merchants (id, name) VALUES ('$bolt', 'Bolt')");
my %secret;
for my $k (['a1', $acme], ['a2', $acme], ['b1', $bolt]) {
    (undef, $secret{$k->[0]}) = split /\|/, $primary->safe_psql('postgres',
        "SELECT key_id || '|' || secret FROM flint_create_key('$k->[1]', '$k->[0]', '{payments:read}')");
}
my $standby = forwarding_standby($primary, 'standby');

# A burst of calls on one server: ok and missing_scope for each key, and a
# malformed token (no merchant, no key); $n calls of each kind.
my $burst = sub {
    my ($node, $n) = @_;
    my $sql = join ";\n", map {
        my ($key, $merchant) = @$_;
        qq{SELECT count(*) FROM generate_series(1, $n) g, LATERAL flint_check_key('$secret{$key}' || left(g::text, 0), 'payments:read', '$merchant');
           SELECT count(*) FROM generate_series(1, 2) g, LATERAL flint_check_key('$secret{$key}' || left(g::text, 0), 'refunds:read', '$merchant')}
    } (['a1', $acme], ['a2', $acme], ['b1', $bolt]);
    $node->safe_psql('postgres', "$sql; SELECT count(*) FROM flint_check_key('not a key', 'payments:read', '$acme')");
};

# Waits until the worker's own steps have moved the mark past every row
# logged so far, then compares flint.usage with the request log.
my $check = sub {
    my ($title) = @_;
    $standby->safe_psql('postgres', 'SELECT flint_flush_log()');
    $primary->safe_psql('postgres', 'SELECT flint_flush_log()');
    my $last = $primary->safe_psql('postgres', 'SELECT max(at) FROM flint.request_log');
    ok($primary->poll_query_until('postgres',
        "SELECT rolled_up_to > '$last' FROM flint.usage_watermark"), "$title: the worker's steps passed every row");
    my $by_group = q{
        SELECT string_agg(g, ',' ORDER BY g) FROM (SELECT concat_ws(':', merchant_id, key_id, outcome, n, c) AS g FROM (
            SELECT merchant_id, key_id, outcome, %s AS n, %s AS c FROM %s GROUP BY 1, 2, 3) AS s) AS g};
    my $mark = "(SELECT rolled_up_to FROM flint.usage_watermark)";
    my $usage = $primary->safe_psql('postgres', sprintf($by_group, 'sum(requests)', 'sum(cost)', 'flint.usage'));
    my $log = $primary->safe_psql('postgres', sprintf($by_group, 'count(*)', 'sum(COALESCE(cost, 1))',
        "flint.request_log WHERE at < $mark"));
    is($usage, $log, "$title: flint.usage sums exactly the log rows before the mark, per merchant, key and outcome");
    isnt($usage, '', "$title: (there are rows)");
};

# 1. Calls spread over several steps, on both servers.
for my $round (1 .. 4) {
    $burst->($primary, 50 * $round);
    $burst->($standby, 20) if $round % 2 == 0;
    sleep 4;
}
$check->('calls over 16 s, standby rows forwarded');
my $log = slurp_file($primary->logfile);
like($log, qr/usage rolled up to .* from the table/, 'and read the table after the start and the forwarded rows');

# 2. The worker killed while its tally holds rows not rolled up yet.
my $offset = -s $primary->logfile;
$burst->($primary, 300);
$primary->safe_psql('postgres', 'SELECT flint_flush_log()');
my $worker_pid = q{SELECT worker_pid FROM flint_log_status() WHERE role <> 'forwarding'}; # (a row per standby follows)
my $pid = $primary->safe_psql('postgres', $worker_pid);
$primary->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
my $new_pid = '';
for (1 .. 100) {
    $new_pid = $primary->safe_psql('postgres', $worker_pid);
    last if $new_pid ne '' && $new_pid ne $pid;
    usleep(100_000);
}
isnt($new_pid, $pid, "a new log worker started within 10 s (the worker's restart time is 1 s)");
like($new_pid, qr/^\d+$/, '(its pid)');
$burst->($primary, 30);
$check->('after the worker was killed with rows in its tally');
like(substr(slurp_file($primary->logfile), $offset), qr/usage rolled up to .* from the table/,
    'the new worker read the rows of the old one from the table');

# 3. The mark moved by someone else, between the worker's steps.
$burst->($primary, 40);
$primary->safe_psql('postgres', 'SELECT flint_flush_log(); SELECT flint._roll_up_usage(now())');
$burst->($primary, 40);
$check->('after a roll-up the worker did not make');

# 4. flint.usage missing for a while (a DBA renamed it): rows inserted
# meanwhile are not in the tally, and no step moves the mark past them.
$primary->safe_psql('postgres', 'ALTER TABLE flint.usage RENAME TO usage_away');
$burst->($primary, 60);
$primary->safe_psql('postgres', 'SELECT flint_flush_log()');
my $mark = $primary->safe_psql('postgres', 'SELECT rolled_up_to FROM flint.usage_watermark');
sleep 12; # more than a step from the tally
is($primary->safe_psql('postgres', 'SELECT rolled_up_to FROM flint.usage_watermark'), $mark,
    'without flint.usage the mark stays');
$primary->safe_psql('postgres', 'ALTER TABLE flint.usage_away RENAME TO usage');
$check->('after flint.usage came back');

# Over the whole run (when steps write from the tally depends on when the
# standby's rows arrive): some steps wrote the worker's tally.
like(slurp_file($primary->logfile), qr/usage rolled up to .* from the tally/, 'steps wrote the worker\'s tally');

done_testing();
