# Sustained load (product contract): two pgbench clients at full speed
# (pgbench -M prepared -c 2 -j 2) verifying random keys among 10,000, for
# FLINT_SUSTAINED_SECONDS (default 120), once with default settings and once
# with a checkpoint every 30 s. In each run: no verification refused
# (flint.metrics.refused_total does not move, pgbench has no failed
# transaction and no aborted client), every verification is a request-log row
# after flint_flush_log(), and the slowest 10-second interval runs at least
# 0.5x the run's mean TPS. While pgbench runs, the log worker is sampled from
# pg_stat_activity (how long its transactions stay open, what it waits on)
# along with the queue depth; the numbers are printed with diag.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time sleep);
use FlintNode;

my $secs = $ENV{FLINT_SUSTAINED_SECONDS} // 120;
my $interval = 10;
plan skip_all => "FLINT_SUSTAINED_SECONDS must be at least 30 (three 10-second intervals), not $secs"
  if $secs !~ /^\d+$/ || $secs < 3 * $interval;
my $nkeys = 10000;
my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';

# Default settings: undo what PostgreSQL::Test::Cluster (fsync off, every
# statement logged, wal_level minimal) and flint_node (a 20 ms flush
# interval) change for quick tests; only flint.database stays pointed here.
my $node = flint_node('sustained', 'fsync = on', 'log_statement = none', 'wal_level = replica',
    'max_wal_senders = 10', 'log_checkpoints = on');
for my $row (split /\n/, $node->safe_psql('postgres', q{
        SELECT name || '|' || boot_val FROM pg_settings
         WHERE name LIKE 'flint.%' AND name <> 'flint.database' AND source = 'configuration file'
           AND context IN ('sighup', 'superuser', 'user')})) {
    my ($name, $boot) = split /\|/, $row, 2;
    $node->safe_psql('postgres', "ALTER SYSTEM SET $name = '$boot'");
}
$node->reload;
$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_settings
    WHERE name LIKE 'flint.%' AND name <> 'flint.database' AND setting <> boot_val})
  or die 'the flint settings did not return to their defaults';
note 'settings not at their defaults: ' . $node->safe_psql('postgres', q{
    SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings
     WHERE source NOT IN ('default', 'override', 'client') AND setting IS DISTINCT FROM boot_val});

# 10,000 keys through the public API; their secrets in a plain table that the
# pgbench script reads by primary key (a prepared index lookup: cheap). Scope
# and merchant travel as bind parameters, as an application sends them (and
# pgbench would take the ':read' of a literal 'payments:read' for a variable).
$node->safe_psql('postgres', qq{
    CREATE TABLE bench_keys (i int PRIMARY KEY, secret text NOT NULL);
    INSERT INTO bench_keys
    SELECT g, k.secret FROM generate_series(1, $nkeys) g,
           LATERAL flint_create_key('$acme', 'sustained ' || g, '{payments:read}') k;
    ANALYZE bench_keys;});
is($node->safe_psql('postgres', "SELECT count(*) FROM flint.api_keys WHERE merchant_id = '$acme'"), $nkeys,
    "$nkeys keys created");
diag 'flint_keys ' . $node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'flint_keys'")
  . ", $secs s per run";
my $script = "$PostgreSQL::Test::Utils::tmp_check/sustained_verify.sql";
PostgreSQL::Test::Utils::append_to_file($script,
    "\\set i random(1, $nkeys)\n"
    . "SELECT flint_verify_key(secret, :scope, :merchant) FROM bench_keys WHERE i = :i;\n");

# One query that reads the counters the asserts compare before and after.
sub counters {
    my $row = $node->safe_psql('postgres', q{
        SELECT m.refused_total, m.queued_total, m.inserted_total, s.batches,
               (SELECT count(*) FROM flint.request_log WHERE source = 'verify' AND outcome = 'ok'),
               (SELECT count(*) FROM flint.request_log WHERE source = 'verify' AND outcome <> 'ok'),
               b.checkpoints_timed, b.checkpoints_req
          FROM flint.metrics m, (SELECT * FROM flint_log_status() LIMIT 1) s, pg_stat_bgwriter b});
    my %c;
    @c{qw(refused queued inserted batches rows_ok rows_other ckpt_timed ckpt_req)} = split /\|/, $row;
    return \%c;
}

# sample HARNESS, \IN, \OUT, QUERY: QUERY's output from the psql session, or
# undef if it gave none within 5 s.
sub sample {
    my ($h, $in, $out, $query) = @_;
    $$in .= "$query;\n\\echo sample_end\n";
    my $until = time + 5;
    $h->pump_nb while $$out !~ /^sample_end$/m && time < $until && sleep 0.01;
    return undef unless $$out =~ s/^(.*?)sample_end\n//s;
    my $result = $1;
    chomp $result;
    return $result;
}

# run_load LABEL: one pgbench run, with the log worker sampled meanwhile;
# then the contract's checks.
sub run_load {
    my ($label) = @_;
    $node->safe_psql('postgres', 'SELECT flint_flush_log()');
    my $before = counters();
    my $log_offset = -s $node->logfile;
    # A psql session of our own for the samples (BackgroundPsql notes every query).
    my ($s_in, $s_out, $s_err) = ('', '', '');
    my $sampler = IPC::Run::start(['psql', '-XAtq', '-d', $node->connstr('postgres')],
        '<', \$s_in, '>', \$s_out, '2>', \$s_err);
    my ($out, $err) = ('', '');
    my $started = time;
    my $bench = IPC::Run::start(
        ['pgbench', '-n', '-M', 'prepared', '-c', '2', '-j', '2', '-T', $secs, '-P', $interval,
         '-D', 'scope=payments:read', '-D', "merchant=$acme", '-f', $script, $node->connstr('postgres')],
        '>', \$out, '2>', \$err);
    # Every 0.25 s: the worker's open transaction (age, wait event) and the queue.
    my ($max_xact, $max_depth, $max_lag, $samples, $capacity) = (0, 0, 0, 0, 0);
    my %waits;
    my $deadline = $started + $secs + 120;
    while ($bench->pumpable) {
        $bench->pump_nb;
        if (time > $deadline) { $bench->kill_kill; last; }
        my $s = sample($sampler, \$s_in, \$s_out, q{
            SELECT coalesce(extract(epoch FROM clock_timestamp() - a.xact_start), 0)::numeric(10,3),
                   coalesce(a.wait_event_type || ':' || a.wait_event, a.state, '-'),
                   s.pending, s.capacity, coalesce(c.value, 0)
              FROM (SELECT * FROM flint_log_status() LIMIT 1) s
              LEFT JOIN pg_stat_activity a ON a.backend_type = 'flint_keys log worker'
              LEFT JOIN flint._counters() c ON c.name = 'worker_lag_us'});
        if (defined $s && $s =~ /^([\d.]+)\|([^|]*)\|(\d+)\|(\d+)\|(\d+)$/) {
            $samples++;
            $max_xact = $1 if $1 > $max_xact;
            $waits{$2}++;
            $max_depth = $3 if $3 > $max_depth;
            $capacity = $4;
            $max_lag = $5 / 1e6 if $5 / 1e6 > $max_lag;
        }
        sleep 0.25;
    }
    $bench->finish;
    my $status = $bench->full_result(0);
    my $exit = defined $status ? $status >> 8 : undef;
    my $wall = time - $started;
    $s_in .= "\\q\n";
    $sampler->finish;

    my ($processed) = $out =~ /number of transactions actually processed: (\d+)/;
    my ($failed) = $out =~ /number of failed transactions: (\d+)/;
    my ($tps) = $out =~ /^tps = ([\d.]+) \(without initial connection time\)/m;
    my $aborted = () = $err =~ /client \d+ script \d+ aborted/g;
    my @aborts = $err =~ /^(client \d+ script \d+ aborted.*)$/mg;
    $processed //= 0;
    $tps //= 0;
    # -P lines: "progress: 10.0 s, 9876.5 tps, lat 0.202 ms stddev 0.050, 0 failed".
    # pgbench prints none for the interval that ends the run: that one is
    # what the total leaves over the reported ones. Only full intervals
    # count (a final short one, as when -T is no multiple of 10, is left out).
    my ($prev, $reported, @intervals) = (0, 0);
    while ($err =~ /^progress: ([\d.]+) s, ([\d.]+) tps/mg) {
        my ($at, $itps) = ($1, $2);
        $reported += $itps * ($at - $prev);
        push @intervals, [$at, $itps] if $at - $prev >= 0.95 * $interval && $at <= $secs + 0.5;
        $prev = $at;
    }
    push @intervals, [$secs, ($processed - $reported) / ($secs - $prev), '*']
      if $processed && $secs - $prev >= 0.95 * $interval;

    $node->safe_psql('postgres', 'SELECT flint_flush_log()');
    my $after = counters();
    my %d = map { $_ => $after->{$_} - $before->{$_} } keys %$after;

    my ($slowest) = sort { $a->[1] <=> $b->[1] } @intervals;
    my $ratio = $slowest && $tps > 0 ? $slowest->[1] / $tps : 0;
    diag sprintf('%s: %d s, pgbench exit %s, %d transactions, mean %.0f tps, %d failed, %d clients aborted',
        $label, $secs, $exit // 'none', $processed, $tps, $failed // -1, $aborted);
    diag "$label: $_" for @aborts[0 .. ($#aborts < 1 ? $#aborts : 1)];
    diag sprintf('%s: tps per 10 s: %s', $label, join(' ', map { sprintf '%.0f%s', $_->[1], $_->[2] // '' } @intervals))
      . ' (*: the last, from the total)';
    diag sprintf('%s: slowest interval %.0f tps (ending at %.0f s) = %.2fx the mean', $label,
        $slowest ? ($slowest->[1], $slowest->[0]) : (0, 0), $ratio);
    diag sprintf('%s: refused %d; verify rows %d ok + %d other for %d transactions; %d batches (%.0f rows each)',
        $label, $d{refused}, $d{rows_ok}, $d{rows_other}, $processed, $d{batches},
        $d{batches} ? $d{inserted} / $d{batches} : 0);
    diag sprintf('%s: checkpoints %d timed + %d requested; log worker over %d samples: longest open transaction '
          . '%.3f s, queue depth max %d of %d, worker lag max %.3f s; states: %s', $label,
        $d{ckpt_timed}, $d{ckpt_req}, $samples, $max_xact, $max_depth, $capacity, $max_lag,
        join(', ', map { "$_ $waits{$_}" } sort { $waits{$b} <=> $waits{$a} } keys %waits));
    # What the server logged meanwhile: the worker's warnings, errors, checkpoints.
    my @log = grep { /flint|WARNING|ERROR|FATAL|PANIC|checkpoint complete/ }
      split /\n/, substr(slurp_file($node->logfile), $log_offset);
    my %seen;
    my @shown = grep {
        (my $k = $_) =~ s/^\S+ \S+ \S+ \[\d+\] //;
        $k =~ s/[\d.]+/N/g;
        !$seen{$k}++
    } @log;
    diag sprintf('%s: server log: %d matching lines, %d distinct shapes:', $label, scalar @log, scalar @shown);
    diag "  $_" for @shown[0 .. ($#shown < 11 ? $#shown : 11)];
    my @ckpt = map { [/write=([\d.]+) s, sync=([\d.]+) s, total=([\d.]+) s/] } grep { /checkpoint complete/ } @log;
    my @max = (0, 0, 0);
    for my $c (@ckpt) { $max[$_] = $c->[$_] > $max[$_] ? $c->[$_] : $max[$_] for 0 .. 2; }
    diag sprintf('%s: %d checkpoints completed, longest write %.3f s, sync %.3f s, total %.3f s',
        $label, scalar @ckpt, @max) if @ckpt;

    ok(defined $status && $status == 0, "$label: pgbench exited 0") or diag $err =~ s/^progress:.*\n//mgr;
    ok($processed > 0 && defined $failed && $failed == 0 && $aborted == 0,
        "$label: no failed transaction, no aborted client");
    is($d{refused}, 0, "$label: no verification refused (refused_total did not move)");
    is($d{rows_ok}, $processed, "$label: every verification is a request-log row after flint_flush_log()");
    is($d{rows_other}, 0, "$label: and every one succeeded");
    cmp_ok(scalar @intervals, '>=', int($secs / $interval), "$label: every 10-second interval measured");
    cmp_ok($ratio, '>=', 0.5, sprintf('%s: slowest 10-second interval at least 0.5x the mean TPS (%.2f)', $label, $ratio));
    cmp_ok($wall, '<', $secs + 60, "$label: the run stopped by itself");
    return \%d;
}

run_load('default settings');

$node->safe_psql('postgres', "ALTER SYSTEM SET checkpoint_timeout = '30s'");
$node->reload;
$node->poll_query_until('postgres', "SELECT current_setting('checkpoint_timeout') = '30s'")
  or die 'checkpoint_timeout did not change';
my $d = run_load('checkpoint_timeout = 30s');
cmp_ok($d->{ckpt_timed} + $d->{ckpt_req}, '>=', int($secs / 30) - 1,
    'checkpoints happened during the 30 s-checkpoint run');

done_testing();
