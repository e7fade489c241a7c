# A hot standby with the same preload verifies the replicated keys, and a
# revoke, scope change, rotation, disable or suspension committed on the
# primary is enforced in a standby session that had cached the key, as soon
# as the standby has replayed it (the commit's WAL carries a relcache
# invalidation). Key management on the standby fails with a clear error.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf',
    "shared_preload_libraries = 'flint_keys'\nflint.database = 'postgres'\nflint.log_flush_interval = 20ms\n");
$primary->start;
$primary->safe_psql('postgres', "CREATE EXTENSION flint_keys; INSERT INTO flint.merchants (id, name) VALUES ('$acme', 'Acme')");
my %key;
for my $name (qw(revoked narrowed rotated disabled other)) {
    my ($id, $secret) = split /\|/, $primary->safe_psql('postgres',
        "SELECT key_id || '|' || secret FROM flint_create_key('$acme', '$name', '{payments:write}')");
    $key{$name} = { id => $id, secret => $secret };
}
$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');

# One standby session that verifies (and so caches) every key before the changes.
my $session = $standby->background_psql('postgres');
my $check = sub {
    my ($name, $scope) = @_;
    $scope //= 'payments:write';
    return $session->query_safe("SELECT coalesce(code, 'ok') FROM flint_check_key('$key{$name}{secret}', '$scope', '$acme')");
};
for my $name (sort keys %key) { is($check->($name), 'ok', "the standby verifies the replicated key '$name'"); }
is($check->('narrowed', 'payments:read'), 'ok', 'payments:write grants payments:read there too');
my $auth = $session->query_safe("BEGIN; SELECT merchant_id FROM flint_authenticate('$key{other}{secret}'); COMMIT;");
like($auth, qr/$acme/, 'flint_authenticate works on the standby');

# Changes committed on the primary.
$primary->safe_psql('postgres', qq{
    SELECT flint_revoke_key('$key{revoked}{id}');
    SELECT flint_update_key('$key{narrowed}{id}', scopes => '{refunds:read}');
    SELECT flint_rotate_key('$key{rotated}{id}');
    SELECT flint_disable_key('$key{disabled}{id}');});
$primary->wait_for_catchup($standby);
is($check->('revoked'), 'key_revoked', 'a revoke on the primary: the same standby session refuses the key after replay');
is($check->('narrowed', 'payments:read'), 'missing_scope', 'a scope change is enforced there');
is($check->('rotated'), 'key_expired', 'a rotation without grace: the old secret is dead there');
is($check->('disabled'), 'key_disabled', 'a disable is enforced there');
is($check->('other'), 'ok', 'an unchanged key still verifies');
$primary->safe_psql('postgres', "UPDATE flint.merchants SET status = 'suspended' WHERE id = '$acme'");
$primary->wait_for_catchup($standby);
is($check->('other'), 'merchant_suspended', 'a merchant suspension is enforced there');

# Key management on the standby: a clear error naming the standby.
my ($rc, $out, $err) = $standby->psql('postgres', "SELECT flint_create_key('$acme', 'nope', '{payments:read}')");
isnt($rc, 0, 'creating a key on the standby fails');
like($err, qr/key management is not possible on a standby/, 'with a clear error');
($rc, $out, $err) = $standby->psql('postgres', "SELECT flint_revoke_key('$key{other}{id}')");
like($err, qr/key management is not possible on a standby/, 'revoking too');
$session->quit;
done_testing();
