# pg_dump of a database using flint_keys, restored into a fresh cluster, keeps
# merchants, keys (still verifiable with the same secrets), custom scopes,
# key events and the request log, without inventing events.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $old = flint_node('source');
$old->safe_psql('postgres', q{INSERT INTO flint.scopes (name, description) VALUES ('disputes:read', 'Read disputes')});
my ($key1, $secret1) = make_key($old, '{payments:write,disputes:read}');
my ($key2, $secret2) = make_key($old, '{refunds:read}');
my $rotated = $old->safe_psql('postgres', "SELECT secret FROM flint_rotate_key('$key2', '1 day')");
$old->safe_psql('postgres', "SELECT flint_verify_key('$secret1', 'disputes:read', '$acme')");
$old->safe_psql('postgres', "SELECT flint_check_key('$secret1', 'refunds:read', '$acme')");
$old->safe_psql('postgres', 'SELECT flint_flush_log()');
my $snapshot = q{
    SELECT (SELECT count(*) FROM flint.merchants) || '/' || (SELECT count(*) FROM flint.api_keys) || '/' ||
           (SELECT count(*) FROM flint.key_events) || '/' || (SELECT count(*) FROM flint.scopes) || '/' ||
           (SELECT count(*) FROM flint.request_log) || '/' ||
           (SELECT string_agg(event, ',' ORDER BY id) FROM flint.key_events)};
my $before = $old->safe_psql('postgres', $snapshot);

my $dump = $old->basedir . '/flint.dump';
$old->command_ok(['pg_dump', '-Fc', '-d', $old->connstr('postgres'), '-f', $dump], 'pg_dump');

# Restore into a fresh cluster whose worker points at a database that does not
# exist yet, so that nothing writes to flint tables while the dump loads.
my $new = PostgreSQL::Test::Cluster->new('target');
$new->init;
$new->append_conf('postgresql.conf', "shared_preload_libraries = 'flint_keys'\nflint.database = 'restored'\n");
$new->start;
$new->safe_psql('postgres', 'CREATE DATABASE restored');
my ($ret, $out, $err) = ('', '', '');
$new->command_ok(['pg_restore', '--exit-on-error', '-d', $new->connstr('restored'), $dump], 'pg_restore without errors');
$new->restart;
wait_for_worker($new);

is($new->safe_psql('restored', $snapshot), $before, 'merchants, keys, events, scopes and log rows are all there, events not duplicated');
is($new->safe_psql('restored', "SELECT flint_verify_key('$secret1', 'disputes:read', '$acme') = '$key1'"), 't',
    'a key verifies with its original secret (and its custom scope) after the restore');
is($new->safe_psql('restored', "SELECT flint_verify_key('$rotated', 'refunds:read', '$acme') = '$key2'"), 't',
    'the rotated secret verifies');
is($new->safe_psql('restored', "SELECT flint_verify_key('$secret2', 'refunds:read', '$acme') = '$key2'"), 't',
    'the old secret is still in its grace period');
($ret, $out, $err) = $new->psql('restored', "SELECT flint_verify_key('$secret1', 'payouts:read', '$acme')");
like($err, qr/missing_scope/, 'and scopes are still enforced');
$new->safe_psql('restored', "SELECT flint_create_key('$acme', 'after restore', '{payments:read}')");
is($new->safe_psql('restored', q{SELECT count(*) FROM flint.key_events WHERE event = 'created' AND new ->> 'name' = 'after restore'}),
    1, 'new keys get their created event again');
$new->safe_psql('restored', 'SELECT flint_flush_log()');
is($new->safe_psql('restored', "SELECT count(*) FROM flint.request_log WHERE key_id = '$key1'"), 4,
    'old log rows were restored and new ones are appended');
done_testing();
