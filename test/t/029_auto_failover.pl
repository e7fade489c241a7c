# flint_keys under pg_auto_failover (Debian's postgresql-15-auto-failover):
# a monitor, a primary (a), a synchronous secondary (b) and a secondary that
# is never promoted (c, candidate priority 0), flint_keys preloaded on every
# node. Under a steady verification load through a multi-host connection
# string, the primary dies (kill -9 of its keeper and postmaster); the test
# measures the failover and checks what the README's "High availability"
# section promises: keys, revocations, disables and scope changes hold;
# rows lost stay within the bound; quotas are never over-granted; rate
# buckets start full on the new primary; c's forwarding follows the new
# primary; the old primary rejoins as a standby and obeys a revocation made
# while it was down. Then a planned switchover back with no verification
# refused.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time sleep);

my $bindir = `pg_config --bindir`;
chomp $bindir;
plan skip_all => 'pg_autoctl (postgresql-15-auto-failover) is not installed' unless -x '/usr/bin/pg_autoctl';

my $base = PostgreSQL::Test::Utils::tempdir('autofailover');
my %port = map { $_ => PostgreSQL::Test::Cluster::get_free_port() } qw(monitor a b c);
my $socket = '/var/run/postgresql'; # where pg_autoctl's nodes listen, with loopback TCP for replication
local $ENV{PATH} = "$bindir:/usr/bin:/bin";
local $ENV{XDG_CONFIG_HOME} = "$base/config";
local $ENV{XDG_DATA_HOME} = "$base/data";
local $ENV{PGAPPNAME} = '029_auto_failover';
delete $ENV{$_} for qw(PGHOST PGPORT PGDATABASE PGUSER PGDATA);

my %keeper; # node => IPC::Run harness of `pg_autoctl run`
sub autoctl {
    my @cmd = ('pg_autoctl', @_);
    my ($out, $err) = ('', '');
    my $ok = IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
    return ($ok, $out, $err);
}
sub start_keeper {
    my ($node) = @_;
    $keeper{$node} = IPC::Run::start(['pg_autoctl', 'run', '--pgdata', "$base/$node"],
        '>', "$base/$node.keeper.log", '2>&1');
}
sub stop_all {
    for my $node (keys %keeper) {
        eval { $keeper{$node}->signal('TERM') } if $keeper{$node};
    }
    sleep 2;
    for my $node (qw(a b c monitor)) {
        system("$bindir/pg_ctl -D $base/$node -m immediate stop >/dev/null 2>&1") if -e "$base/$node/postmaster.pid";
    }
    for my $node (keys %keeper) {
        eval { $keeper{$node}->kill_kill } if $keeper{$node};
    }
}
END { stop_all() if %keeper; }

my $monitor_url = "postgres://autoctl_node\@localhost:$port{monitor}/pg_auto_failover?sslmode=disable";
my ($ok, $out, $err) = autoctl('create', 'monitor', '--pgdata', "$base/monitor", '--pgport', $port{monitor},
    '--hostname', 'localhost', '--auth', 'trust', '--no-ssl');
ok($ok, 'pg_autoctl create monitor') or diag $err;
# The monitor notices a dead primary sooner than by default (the test's time).
append_to_file("$base/monitor/postgresql.conf",
    "listen_addresses = 'localhost'\npgautofailover.health_check_period = 1000\n"
      . "pgautofailover.health_check_timeout = 1000\npgautofailover.health_check_max_retries = 1\n"
      . "pgautofailover.health_check_retry_delay = 500\npgautofailover.node_considered_unhealthy_timeout = 3000\n");
start_keeper('monitor');

sub node_conf {
    my ($node) = @_;
    system("$bindir/initdb -D $base/$node -A trust --no-locale -E UTF8 >/dev/null") == 0 or die 'initdb';
    append_to_file("$base/$node/postgresql.conf",
        "shared_preload_libraries = 'flint_keys'\nflint.database = 'postgres'\nflint.log_flush_interval = 20ms\n");
}
sub create_node {
    my ($node, @extra) = @_;
    my @r = autoctl('create', 'postgres', '--pgdata', "$base/$node", '--pgport', $port{$node}, '--hostname', 'localhost',
        '--listen', 'localhost', '--auth', 'trust', '--no-ssl', '--name', $node, '--monitor', $monitor_url, @extra);
    ok($r[0], "pg_autoctl create postgres $node") or diag $r[2];
    start_keeper($node);
}
sub psql_at {
    my ($node, $sql, %opt) = @_;
    my $conn = $opt{conn} // "host=$socket port=$port{$node} dbname=postgres";
    my ($o, $e) = ('', '');
    IPC::Run::run(['psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $conn, '-c', $sql], '>', \$o, '2>', \$e,
        IPC::Run::timeout(120));
    chomp $o;
    return wantarray ? ($o, $e) : $o;
}
sub state_of { # the monitor's reported state of a node, from `pg_autoctl show state`
    my ($node) = @_;
    my ($ok2, $o) = autoctl('show', 'state', '--pgdata', "$base/monitor");
    for my $line (split /\n/, $o) {
        my @f = map { s/^\s+|\s+$//gr } split /\|/, $line;
        return $f[-2] if @f >= 3 && $f[0] eq $node && $f[-1] eq $f[-2];
    }
    return '';
}
sub wait_state { # $want: a state, or states joined by |
    my ($node, $want, $secs) = @_;
    my $until = time + ($secs // 180);
    while (time < $until) {
        return 1 if state_of($node) =~ /^(?:$want)$/;
        sleep 0.5;
    }
    diag "node $node is " . state_of($node) . ", not $want";
    return 0;
}

node_conf('a');
create_node('a');
ok(wait_state('a', 'single'), 'a is a single node');
create_node('b');
ok(wait_state('b', 'secondary'), 'b is its secondary');
create_node('c', '--candidate-priority', '0');
ok(wait_state('c', 'secondary'), 'c is a secondary too (never promoted)');
ok(wait_state('a', 'primary'), 'a is the primary');
like(psql_at('a', 'SHOW synchronous_standby_names'), qr/^ANY 1 /, 'with synchronous replication');
is(psql_at('b', 'SHOW shared_preload_libraries'), 'flint_keys', 'b preloads flint_keys (its basebackup has the settings)');

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
psql_at('a', "CREATE EXTENSION flint_keys; INSERT INTO flint.merchants (id, name) VALUES ('$acme', 'Acme')");
sub new_key {
    my ($name, $scopes) = @_;
    return split /\|/, psql_at('a', "SELECT key_id || '|' || secret FROM flint_create_key('$acme', '$name', '$scopes')");
}
my ($load_id, $load) = new_key('load', '{payments:read}');
my ($rev_id, $revoked) = new_key('to revoke', '{payments:read}');
my ($dis_id, $disabled) = new_key('to disable', '{payments:read}');
my ($sc_id, $rescoped) = new_key('to rescope', '{payments:read,refunds:write}');
my ($q_id, $quota) = new_key('quota', '{payments:read}');
my ($rl_id, $limited) = new_key('rate', '{payments:read}');
my ($late_id, $late) = new_key('revoked while a is down', '{payments:read}');
psql_at('a', "SELECT flint_set_key_limits('$q_id', remaining => 100); SELECT flint_set_key_limits('$rl_id', rate_limit => 3, rate_window => '1 hour')");

my $all = "host=$socket,$socket,$socket port=$port{a},$port{b},$port{c} dbname=postgres connect_timeout=2";
sub check {
    my ($secret, %opt) = @_;
    my $conn = $opt{conn} // "$all target_session_attrs=read-write";
    my $tag = $opt{tag} // '';
    my ($o, $e) = psql_at(undef, "SET flint.request_id = '$tag'; SELECT code FROM flint_check_key('$secret', 'payments:read', '$acme')",
        conn => $conn);
    return $e ne '' ? "error: $e" : ($o eq '' ? 'ok' : $o);
}

# The load: one verification per connection, through the multi-host string,
# each tagged; the loop writes "time ok|code|error tag" lines.
my $loadfile = "$base/load.txt";
my $stopfile = "$base/stop";
sub start_load {
    my ($attrs, $prefix) = @_;
    unlink $stopfile;
    my $script = qq{i=0; while [ ! -e '$stopfile' ]; do i=\$((i+1));
        r=\$(psql -XAtq -d "$all $attrs" -c "SET flint.request_id = '$prefix\$i'" -c "SELECT coalesce(code, 'ok') FROM flint_check_key('$load', 'payments:read', '$acme')" 2>&1 | tr '\\n' ' ');
        echo "\$(date +%s.%N) \$i \$r"; sleep 0.01; done};
    return IPC::Run::start(['bash', '-c', $script], '>', "$loadfile.$prefix", '2>&1');
}
sub stop_load {
    my ($h) = @_;
    append_to_file($stopfile, 'stop');
    $h->finish;
    my @lines = split /\n/, slurp_file("$loadfile.$_[1]");
    return map { [split / /, $_, 3] } @lines;
}

# Before the failure: changes the new primary must keep, a quota partly
# used, a rate bucket emptied.
is(check($revoked), 'ok', 'the key to revoke works');
psql_at('a', "SELECT flint_revoke_key('$rev_id'); SELECT flint_disable_key('$dis_id', 'fraud');
              SELECT flint_update_key('$sc_id', scopes => '{refunds:write}')");
is(check($revoked), 'key_revoked', 'revoked on the primary');
my $quota_before = grep { check($quota) eq 'ok' } 1 .. 10;
is($quota_before, 10, '10 quota units used before the failure');
is(join(',', map { check($limited) } 1 .. 4), 'ok,ok,ok,rate_limited', 'the rate bucket is spent (3 an hour)');

my $load_h = start_load('target_session_attrs=read-write', 'f');
sleep 3;
my $apid = $keeper{a}->{KIDS}[0]{PID};
my @services = split /\n/, `pgrep -P $apid`;
my $pm = (split /\n/, slurp_file("$base/a/postmaster.pid"))[0];
my $killed_at = time;
kill 'KILL', $apid, @services, $pm; # the node dies: its keeper, its services, its postmaster
eval { $keeper{a}->finish }; # reaped: a zombie would still hold pg_autoctl's pidfile
delete $keeper{a};
ok(wait_state('b', 'wait_primary|primary', 120), 'the monitor promotes b');
my $until = time + 120;
sleep 0.2 until psql_at('b', 'SELECT NOT pg_is_in_recovery()') eq 't' || time > $until;
sleep 3;
my @calls = stop_load($load_h, 'f');
my @ok = grep { $_->[2] =~ /^ok/ } @calls;
# The failover time: from the kill to the first success after the first
# failed call (a call in flight at the kill may still finish on a).
my ($first_failure) = grep { $_->[0] > $killed_at && $_->[2] !~ /^ok/ } @calls;
my ($first_after) = grep { $first_failure && $_->[0] > $first_failure->[0] && $_->[2] =~ /^ok/ } @calls;
ok($first_after, 'verifications resume through the multi-host connection string');
my $failover = $first_after ? $first_after->[0] - $killed_at : -1;
diag sprintf('failover: the first verification after the kill -9 succeeded %.1f s later; %d calls, %d ok', $failover,
    scalar @calls, scalar @ok);
my @refusals = grep { $_->[2] =~ /^[a-z_]+\s*$/ && $_->[2] !~ /^ok/ } @calls;
is(scalar @refusals, 0, 'no verification was refused by flint_keys (only connections failed meanwhile)');

# Rows: every ok call's row is on the new primary, but for the dead
# primary's queue (not replicated): at most the calls of its last second.
psql_at('b', 'SELECT flint_flush_log()');
my %present = map { $_ => 1 } split /\n/, psql_at('b', "SELECT request_id FROM flint.request_log WHERE request_id LIKE 'f%'");
my @lost = grep { !$present{"f$_->[1]"} } @ok;
my $last_second = grep { $_->[0] > $killed_at - 1 && $_->[0] <= $killed_at } @ok;
diag sprintf('rows lost: %d of %d ok calls (the last second before the kill had %d)', scalar @lost, scalar @ok,
    $last_second);
ok(@lost <= $last_second, 'rows lost are at most the calls of the last second before the failure');
ok(!grep({ $_->[0] > $killed_at + $failover + 0.5 } @lost), 'none lost after the failover');

is(check($revoked), 'key_revoked', 'after the failover: the revocation holds');
is(check($disabled), 'key_disabled', '... the disable holds');
is(check($rescoped), 'missing_scope', '... the scope change holds');
is(check($load), 'ok', '... and keys verify');
my $quota_after = grep { check($quota) eq 'ok' } 1 .. 100;
cmp_ok($quota_before + $quota_after, '<=', 100, "the quota is never over-granted ($quota_before before, $quota_after after)");
psql_at('b', 'SELECT flint_flush_log()');
my $remaining = psql_at('b', "SELECT remaining FROM flint.key_info WHERE key_id = '$q_id'");
cmp_ok($remaining, '<=', 100 - $quota_before - $quota_after, "leased units on the dead primary are forfeited ($remaining left)");
is(join(',', map { check($limited) } 1 .. 4), 'ok,ok,ok,rate_limited',
    'rate buckets are per server: full on the new primary (one more window, as documented)');

# c follows the new primary: its rows reach b.
ok(wait_state('c', 'secondary', 120), 'c is a secondary of b');
is(check($load, conn => "host=$socket port=$port{c} dbname=postgres", tag => 'from-c'), 'ok', 'c verifies');
psql_at('c', 'SELECT flint_flush_log()');
is(psql_at('b', "SELECT count(*) FROM flint.request_log WHERE request_id = 'from-c'"), 1,
    "c's forwarder follows the new primary: its row is on b");

# The old primary rejoins as a standby and obeys a revocation made meanwhile.
psql_at('b', "SELECT flint_revoke_key('$late_id')");
start_keeper('a');
ok(wait_state('a', 'secondary', 180), 'a rejoins as a secondary');
is(check($late, conn => "host=$socket port=$port{a} dbname=postgres"), 'key_revoked',
    'a refuses the key revoked while it was down');

# A planned switchover back to a, under load through any node (standbys
# verify too): no verification refused.
$load_h = start_load('target_session_attrs=any', 's');
sleep 2;
($ok, $out, $err) = autoctl('perform', 'switchover', '--pgdata', "$base/b", '--wait', '120');
ok($ok, 'pg_autoctl perform switchover') or diag $err;
sleep 2;
@calls = stop_load($load_h, 's');
@ok = grep { $_->[2] =~ /^ok/ } @calls;
my @failed = grep { $_->[2] !~ /^ok/ } @calls;
diag sprintf('switchover: %d calls, %d ok, %d not (connections closed by the switch)', scalar @calls, scalar @ok,
    scalar @failed);
is(scalar(grep { $_->[2] =~ /^[a-z_]+\s*$/ } @failed), 0, 'no verification refused during the switchover');
ok(wait_state('a', 'primary', 120), 'a is the primary again');
is(check($load), 'ok', 'and verifies');

done_testing();
