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
# An application role set up with the 1.0/1.1 README's GRANTs.
$node->safe_psql('postgres', q{
    CREATE ROLE old_app LOGIN;
    GRANT EXECUTE ON FUNCTION flint_verify_key(text, text, uuid), flint_check_key(text, text, uuid),
        flint_authenticate(text), flint_require_scope(text), flint_list_keys(uuid, boolean) TO old_app;
    GRANT USAGE ON SCHEMA flint TO old_app;
    GRANT SELECT ON flint.key_info, flint.request_log TO old_app;
    GRANT SELECT (id, merchant_id, name, mode, display_prefix, scopes, metadata, created_at, created_by, expires_at,
                  revoked_at, revoked_reason, last_used_at, previous_secret_expires_at) ON flint.api_keys TO old_app;
});
my ($reader, $reader_secret) = make_key($node, '{keys:read,payments:read}');

$node->safe_psql('postgres', "ALTER EXTENSION flint_keys UPDATE TO '1.1'");
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'flint_keys'"), '1.1', 'one step: 1.0 -> 1.1');
# A schema where others may CREATE is where a token-capturing overload would go: the update warns.
$node->safe_psql('postgres', 'GRANT CREATE ON SCHEMA public TO PUBLIC');
my ($rc, $out, $err) = $node->psql('postgres', 'ALTER EXTENSION flint_keys UPDATE');
is($rc, 0, 'updated to the default version');
like($err, qr/WARNING:  roles other than its owner may CREATE in schema public, where flint_keys lives: PUBLIC/,
    'the update warns that PUBLIC may CREATE in the extension schema');
$node->safe_psql('postgres', 'REVOKE CREATE ON SCHEMA public FROM PUBLIC');
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
# The old GRANTs keep working on 1.2: the application reads its keys through key_info.
my $as_app = qq{SET ROLE old_app; BEGIN; SELECT count(*) FROM flint_authenticate('$reader_secret');
                SELECT count(*) || ' ' || min(status) FROM flint.key_info; SELECT count(*) FROM flint_list_keys('$acme'); COMMIT;};
is($node->safe_psql('postgres', $as_app), "1\n2 active\n2", 'an application role granted for 1.1 still reads key_info and lists keys');
is($node->safe_psql('postgres', "SELECT code FROM flint_check_key('$reader_secret', 'keys:read', '$acme')"), '', 'and its key verifies');
# 1.2's features work on upgraded keys.
$node->safe_psql('postgres', "SELECT flint_disable_key('$key', 'upgrade test')");
is($node->safe_psql('postgres', "SELECT code FROM flint_check_key('$rotated', 'payments:read', '$acme')"), 'key_disabled',
    'a key made under 1.0 can be disabled');
$node->safe_psql('postgres', "SELECT flint_enable_key('$key')");
is($node->safe_psql('postgres', "SELECT outcome FROM flint_report_leaked(ARRAY['$rotated'], 'upgrade test')"), 'revoked',
    'and reported leaked');
is($node->safe_psql('postgres', "SELECT string_agg(event, ',' ORDER BY id) FROM flint.key_events WHERE key_id = '$key' AND event IN ('disabled', 'enabled', 'leaked')"),
    'disabled,enabled,leaked', 'with the 1.2 events');
# A fresh install of the default version matches an upgraded one.
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION flint_keys');
my $objects = q{SELECT string_agg(pg_describe_object(classid, objid, 0), E'\n' ORDER BY pg_describe_object(classid, objid, 0))
                  FROM pg_depend WHERE refobjid = (SELECT oid FROM pg_extension WHERE extname = 'flint_keys') AND deptype = 'e'};
is($node->safe_psql('fresh', $objects), $node->safe_psql('postgres', $objects), 'upgraded and fresh installs have the same objects');
done_testing();
