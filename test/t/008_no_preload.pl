# Without shared_preload_libraries the extension installs, and every function
# that needs shared memory fails with a message saying how to fix it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('nopreload');
$node->init;
$node->start;
$node->safe_psql('postgres', q{
    CREATE EXTENSION flint_keys;
    INSERT INTO flint.merchants (id, name) VALUES ('aaaaaaaa-0000-0000-0000-000000000001', 'Acme')});
for my $sql (
    q{SELECT flint_verify_key('fk_live_x', 'payments:read', 'aaaaaaaa-0000-0000-0000-000000000001')},
    q{SELECT flint_check_key('fk_live_x', 'payments:read', 'aaaaaaaa-0000-0000-0000-000000000001')},
    q{SELECT flint_authenticate('fk_live_x')},
    q{SELECT flint_flush_log()},
    q{SELECT flint_log_status()}) {
    my ($ret, $out, $err) = $node->psql('postgres', $sql);
    isnt($ret, 0, "fails without preload: $sql");
    like($err, qr/flint_keys must be loaded via shared_preload_libraries/, 'says what is wrong');
    like($err, qr/HINT:  Add shared_preload_libraries = 'flint_keys' to postgresql.conf and restart the server/, 'and how to fix it');
}
done_testing();
