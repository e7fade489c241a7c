# 1.3 roles and usage rollups across sessions, a hot standby and a crash:
#  - a role change is enforced at the next call of a session that had
#    cached the key, on the primary and on a standby once replayed;
#  - a standby's verifications reach the primary's rollups once forwarded,
#    and flint_usage sums exactly the request log there;
#  - after kill -9 of a backend (every server process restarts), the
#    rollups still sum exactly the rows that survived;
#  - the README's two recipes run as written.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
# The standby's forwarder connects with the README's GRANTs.
my $primary = forwarding_primary('primary');
my ($key, $secret) = split /\|/, $primary->safe_psql('postgres',
    "SELECT key_id || '|' || secret FROM flint_create_key('$acme', 'checkout server 1', '{customers:read}')");
my $role = $primary->safe_psql('postgres',
    "SELECT flint_create_role('$acme', 'checkout', '{payments:write}')");
$primary->safe_psql('postgres', "SELECT flint_grant_role('$key', 'checkout')");

my $standby = forwarding_standby($primary, 'standby');

# 1. Sessions that cached the key, on both servers.
my %session = (primary => $primary->background_psql('postgres'), standby => $standby->background_psql('postgres'));
my $check = sub {
    my ($where, $scope) = @_;
    return $session{$where}->query_safe(
        "SELECT coalesce(code, 'ok') FROM flint_check_key('$secret', '$scope', '$acme')");
};
for my $where (qw(primary standby)) {
    is($check->($where, 'payments:write'), 'ok', "$where: the key verifies a scope of its role");
    is($check->($where, 'customers:read'), 'ok', "$where: and its own scope");
}
$primary->safe_psql('postgres', "SELECT flint_update_role('$role', '{refunds:read}')");
$primary->wait_for_catchup($standby);
for my $where (qw(primary standby)) {
    is($check->($where, 'payments:write'), 'missing_scope', "$where: the role's change is enforced at the session's next call");
    is($check->($where, 'refunds:read'), 'ok', "$where: with the role's new scope");
}
$primary->safe_psql('postgres', "SELECT flint_revoke_role('$key', 'checkout')");
$primary->wait_for_catchup($standby);
is($check->('standby', 'refunds:read'), 'missing_scope', 'standby: a revoked role is gone at the next call');
is($check->('standby', 'customers:read'), 'ok', 'standby: the own scope stays');
is($primary->safe_psql('postgres', "SELECT string_agg(event, ',' ORDER BY id) FROM flint.key_events WHERE event LIKE 'role%'"),
    'role_granted,role_changed,role_revoked', 'one event per grant, change and revocation');

# 2. Rollups of a standby's verifications, once forwarded.
$standby->safe_psql('postgres', qq{
    SELECT count(*) FROM generate_series(1, 300) g,
           LATERAL flint_check_key('$secret' || left(g::text, 0), 'customers:read', '$acme')});
$standby->safe_psql('postgres', qq{
    SELECT count(*) FROM generate_series(1, 40) g,
           LATERAL flint_check_key('$secret' || left(g::text, 0), 'payments:read', '$acme')});
$standby->safe_psql('postgres', 'SELECT flint_flush_log()');    # on a standby: until they are on the primary
$primary->safe_psql('postgres', 'SELECT flint_flush_log()');
my $window = q{now() - interval '1 hour', now() + interval '1 minute'};
is($primary->safe_psql('postgres', qq{
    SELECT string_agg(outcome || '=' || requests, ',' ORDER BY outcome) FROM flint_usage('$acme', $window, 'day', '$key')}),
    $primary->safe_psql('postgres', qq{
    SELECT string_agg(outcome || '=' || n, ',' ORDER BY outcome)
      FROM (SELECT outcome, count(*) AS n FROM flint.request_log WHERE key_id = '$key' GROUP BY outcome) AS l}),
    'flint_usage on the primary sums exactly the request log, standby rows included');
cmp_ok($primary->safe_psql('postgres', "SELECT count(*) FROM flint.request_log WHERE server = 'standby' AND key_id = '$key'"),
    '>=', 340, 'the standby\'s rows arrived');
is($standby->safe_psql('postgres', "SELECT sum(requests) FROM flint_usage('$acme', $window, 'hour', '$key')"),
    $primary->safe_psql('postgres', "SELECT sum(requests) FROM flint_usage('$acme', $window, 'hour', '$key')"),
    'the standby reads the same rollups once replayed');
$standby->stop;

# 3. A crash: every backend restarts; rows and rollups agree afterwards.
my $bg = $primary->background_psql('postgres');
$bg->query_safe(qq{
    SELECT count(*) FROM generate_series(1, 5000) g,
           LATERAL flint_check_key('$secret' || left(g::text, 0), 'customers:read', '$acme')});
my $victim = $bg->query_safe('SELECT pg_backend_pid()');
kill 'KILL', $victim;
$primary->poll_query_until('postgres', 'SELECT true') or die 'the primary did not come back';
$primary->poll_query_until('postgres',
    "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'flint_keys log worker'")
    or die 'no log worker after the crash';
$primary->safe_psql('postgres', "SELECT flint_check_key('$secret', 'customers:read', '$acme')");
$primary->safe_psql('postgres', 'SELECT flint_flush_log()');
my $log_rows = $primary->safe_psql('postgres', "SELECT count(*) FROM flint.request_log WHERE merchant_id = '$acme'");
is($primary->safe_psql('postgres', "SELECT sum(requests) FROM flint_usage('$acme', $window)"), $log_rows,
    "after kill -9, flint_usage sums exactly the rows that survived ($log_rows)");
# What is rolled up and what is not yet agree with the log too: roll everything up now.
$primary->safe_psql('postgres', "SELECT flint._roll_up_usage(now() + interval '1 minute')");
my ($all_rows, $rollup_rows) = split /\|/, $primary->safe_psql('postgres', q{
    SELECT (SELECT count(*) FROM flint.request_log) || '|' || (SELECT sum(requests) FROM flint.usage)});
is($rollup_rows, $all_rows, 'and flint.usage, once rolled up, holds every row');
my ($log_cost, $rollup_cost) = split /\|/, $primary->safe_psql('postgres', q{
    SELECT (SELECT sum(cost) FROM flint.request_log) || '|' || (SELECT sum(cost) FROM flint.usage)});
is($rollup_cost, $log_cost, 'and their cost');

# 4. The README's recipes, as written.
# A merchant of their own, with four checkout servers' keys and some traffic.
my %readme;
my $readme = slurp_file("$ENV{FLINT_SRC}/README.md");
my $shop = 'cccccccc-0000-0000-0000-000000000003';
my @servers = split /\n/, $primary->safe_psql('postgres', qq{
    INSERT INTO flint.merchants (id, name) VALUES ('$shop', 'Shop');
    SELECT secret FROM generate_series(1, 4) g,
           LATERAL flint_create_key('$shop', 'checkout server ' || g, '{customers:read}')});
$primary->safe_psql('postgres', "SELECT flint_check_key('$_', 'customers:read', '$shop')") for @servers;
$primary->safe_psql('postgres', 'SELECT flint_flush_log()');
for my $title ('one role for all checkout servers', 'usage per key per day for billing') {
    my ($sql) = $readme =~ /### Recipe: \Q$title\E\n\n```sql\n(.*?)```/s;
    ok(defined $sql, "the README has the recipe '$title'");
    my ($rc, $out, $err) = $primary->psql('postgres', $sql // '',
        extra_params => ['-v', "merchant=$shop", '-v', 'ON_ERROR_STOP=1']);
    is($rc, 0, "the recipe '$title' runs") or diag($err);
    $readme{$title} = $out;
}
is($primary->safe_psql('postgres', qq{
    SELECT count(*) FROM flint.key_info WHERE merchant_id = '$shop' AND 'checkout' = ANY (roles)
       AND 'refunds:write' = ANY (effective_scopes)}), 4, 'the first gave all four checkout servers the changed role');
like($readme{'usage per key per day for billing'}, qr/checkout server 1\|1\|1\n.*checkout server 4\|1\|1/s,
    'the second lists the day\'s requests and units per key');
done_testing();
