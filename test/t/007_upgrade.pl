# The upgrade path: install 1.0, make keys and traffic, ALTER EXTENSION
# UPDATE to the current version, and the same secrets still verify.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'flint_keys'\nflint.database = 'postgres'\n");
$node->start;
$node->safe_psql('postgres', qq{
    CREATE EXTENSION flint_keys VERSION '1.0';
    INSERT INTO flint.merchants (id, name) VALUES ('$acme', 'Acme')});
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'flint_keys'"), '1.0', 'version 1.0 installed');
my ($key, $secret) = make_key($node, '{payments:write}');
my $rotated = $node->safe_psql('postgres', "SELECT secret FROM flint_rotate_key('$key', '1 hour')");
$node->psql('postgres', "SELECT flint_verify_key('$secret', 'refunds:read', '$acme')");
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
my ($ret) = $node->psql('postgres', 'SELECT flint_recent_failures(NULL)');
isnt($ret, 0, 'the 1.1 function does not exist in 1.0');

$node->safe_psql('postgres', 'ALTER EXTENSION flint_keys UPDATE');
my $default = $node->safe_psql('postgres', "SELECT default_version FROM pg_available_extensions WHERE name = 'flint_keys'");
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'flint_keys'"), $default,
    "updated to the default version $default");
isnt($default, '1.0', 'the default version is newer than 1.0');
is($node->safe_psql('postgres', "SELECT flint_verify_key('$rotated', 'payments:read', '$acme') = '$key'"), 't', 'the new secret verifies after the update');
is($node->safe_psql('postgres', "SELECT flint_verify_key('$secret', 'payments:read', '$acme') = '$key'"), 't', 'the old secret is still in its grace');
is($node->safe_psql('postgres', "SELECT outcome || ':' || requests FROM flint_recent_failures('$acme')"), 'missing_scope:1',
    'the 1.1 function sees the failure logged under 1.0');
is($node->safe_psql('postgres', q{SELECT has_function_privilege('public', 'flint_recent_failures(uuid, interval)', 'EXECUTE')}),
    'f', 'the new function is not executable by PUBLIC');
# A fresh install of the default version matches an upgraded one.
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION flint_keys');
my $objects = q{SELECT string_agg(pg_describe_object(classid, objid, 0), E'\n' ORDER BY 1)
                  FROM pg_depend WHERE refobjid = (SELECT oid FROM pg_extension WHERE extname = 'flint_keys') AND deptype = 'e'};
is($node->safe_psql('fresh', $objects), $node->safe_psql('postgres', $objects), 'upgraded and fresh installs have the same objects');
done_testing();
