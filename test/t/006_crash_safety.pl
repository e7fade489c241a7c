# Crashes never leave keys half-changed: kill -9 of a backend in the middle of
# create, rotate and revoke is all-or-nothing; an immediate shutdown keeps every
# committed key verifiable; shared memory and the log worker come back.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $node = flint_node('crash');
my $verify = sub {
    my ($secret) = @_;
    my ($ret, $out, $err) = $node->psql('postgres', "SELECT flint_check_key('$secret', 'payments:read', '$acme')");
    return $out;
};

# Committed keys, then an immediate shutdown (no checkpoint, WAL replay on start).
my %keys;
for (1 .. 30) { my ($k, $s) = make_key($node); $keys{$k} = $s; }
$node->stop('immediate');
$node->start;
my $ok = grep { $verify->($keys{$_}) =~ /^\(t,$_,,\)$/ } keys %keys;
is($ok, 30, 'after an immediate shutdown every committed key verifies');

my ($key, $secret) = make_key($node);
my ($victim_key, $victim_secret) = make_key($node);
my $events = sub { $node->safe_psql('postgres', "SELECT count(*) FROM flint.key_events WHERE key_id = '$_[0]'") };
my $keys_before = $node->safe_psql('postgres', 'SELECT count(*) FROM flint.api_keys');

# kill -9 in the middle of each operation, after its work but before COMMIT.
for my $op (
    ['create', "SELECT flint_create_key('$acme', 'half', '{payments:read}')"],
    ['rotate', "SELECT flint_rotate_key('$key', '1 hour')"],
    ['revoke', "SELECT flint_revoke_key('$victim_key', 'crash')"],
    ['update', "SELECT flint_update_key('$key', scopes => '{refunds:read}')"]) {
    my ($name, $sql) = @$op;
    my $events_before = $events->($name eq 'revoke' ? $victim_key : $key);
    my $bg = $node->background_psql('postgres', on_error_stop => 0);
    my $pid = $bg->query_safe('SELECT pg_backend_pid()');
    $bg->query_safe("BEGIN; $sql");
    kill 'KILL', $pid;
    eval { $bg->quit };
    $node->poll_query_until('postgres', 'SELECT true') or die 'server did not come back';
    wait_for_worker($node);
    is($node->safe_psql('postgres', 'SELECT count(*) FROM flint.api_keys'), $keys_before, "$name: no key was added");
    is($events->($name eq 'revoke' ? $victim_key : $key), $events_before, "$name: no event was recorded");
    like($verify->($secret), qr/^\(t,/, "$name: the key's secret still verifies, unchanged");
    like($verify->($victim_secret), qr/^\(t,/, "$name: the other key still verifies (not revoked)");
}
is($node->safe_psql('postgres', "SELECT previous_secret_hash IS NULL AND scopes = '{payments:read}' FROM flint.api_keys WHERE id = '$key'"),
    't', 'the half-done rotation and update left no trace');

# Shared memory was re-initialised: the queue works, the worker drains it.
my $status = $node->safe_psql('postgres', 'SELECT capacity > 0 AND worker_pid IS NOT NULL FROM flint_log_status()');
is($status, 't', 'flint_log_status works after the crash restart');
$node->safe_psql('postgres', "SELECT flint_check_key('$secret', 'payments:read', '$acme') FROM generate_series(1, 100)");
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
is($node->safe_psql('postgres', "SELECT count(*) >= 100 FROM flint.request_log WHERE key_id = '$key' AND source = 'check'"),
    't', 'and logging works again');
# A committed change after the crash is seen by a session that was connected before it.
my $bg = $node->background_psql('postgres');
like($bg->query_safe("SELECT flint_check_key('$secret', 'payments:read', '$acme')"), qr/^\(t,/, 'a session sees the key');
$node->safe_psql('postgres', "SELECT flint_revoke_key('$key')");
like($bg->query_safe("SELECT flint_check_key('$secret', 'payments:read', '$acme')"), qr/key_revoked/,
    'and its very next verification sees the revoke (cache generation survives restarts)');
$bg->quit;
done_testing();
