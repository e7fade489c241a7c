# 1.2 -> 1.3: every secret, GRANT and limit keeps working, the request log's
# rows read the same through the same columns and views, and the new roles
# and rollups work on keys made under 1.2.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $node = PostgreSQL::Test::Cluster->new('upgrade12');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'flint_keys'\nflint.database = 'postgres'\n");
$node->start;
$node->safe_psql('postgres', qq{
    CREATE EXTENSION flint_keys VERSION '1.2';
    INSERT INTO flint.merchants (id, name) VALUES ('$acme', 'Acme')});
my ($key, $secret) = make_key($node, '{payments:write,keys:read}');
my ($limited, $limited_secret) = make_key($node, '{payments:read}');
$node->safe_psql('postgres', qq{
    SELECT flint_set_key_limits('$limited', rate_limit => 1000, rate_window => '1 minute',
                                remaining => 50, refill_amount => 50, refill_interval => 'day',
                                allowed_ips => '{127.0.0.0/8,::1/128}');
    SELECT flint_set_merchant_limits('$acme', 5000, '1 minute');});
# The 1.2 README's application role.
$node->safe_psql('postgres', q{
    CREATE ROLE app12 LOGIN;
    GRANT EXECUTE ON FUNCTION flint_verify_key(text, text, uuid), flint_check_key(text, text, uuid),
        flint_authenticate(text), flint_require_scope(text) TO app12;
    GRANT EXECUTE ON FUNCTION flint_verify_key(text, text, uuid, inet, integer),
        flint_check_key(text, text, uuid, inet, integer), flint_authenticate(text, inet, integer) TO app12;
    GRANT EXECUTE ON FUNCTION flint_create_key(uuid, text, text[], timestamptz, text, jsonb),
        flint_list_keys(uuid, boolean), flint_get_key(uuid), flint_update_key(uuid, text, text[], timestamptz, jsonb),
        flint_revoke_key(uuid, text), flint_rotate_key(uuid, interval) TO app12;
    GRANT USAGE ON SCHEMA flint TO app12;
    GRANT SELECT ON flint.key_info, flint.request_log, flint.key_events, flint.recent_requests, flint.request_summary TO app12;
    GRANT SELECT (id, merchant_id, name, mode, display_prefix, scopes, metadata, created_at, created_by, expires_at,
                  revoked_at, revoked_reason, last_used_at, previous_secret_expires_at, disabled_at, disabled_reason,
                  rate_limit, rate_window, remaining, refill_amount, refill_interval, allowed_ips)
        ON flint.api_keys TO app12;});
# Traffic of every kind under 1.2.
$node->safe_psql('postgres', qq{
    SET flint.request_id = 'before-upgrade';
    SELECT flint_check_key('$secret', 'payments:read', '$acme');
    SELECT flint_check_key('$secret', 'refunds:read', '$acme');
    SELECT flint_check_key('not a key', 'payments:read', '$acme');
    SELECT flint_check_key('$limited_secret', 'payments:read', '$acme', '127.0.0.1', 3);
    SELECT flint_check_key('$limited_secret', 'payments:read', '$acme', '10.1.1.1', 1);});
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
my $log_rows = q{SELECT string_agg(l::text, E'\n' ORDER BY l::text) FROM flint.request_log AS l};
my $view_rows = q{SELECT (SELECT string_agg(r::text, E'\n' ORDER BY r::text) FROM flint.recent_requests AS r) || E'\n--\n' ||
                         (SELECT string_agg(s::text, E'\n' ORDER BY s::text) FROM flint.request_summary AS s)};
my $limits = qq{SELECT rate_limit || ' ' || rate_window || ' ' || refill_amount || ' ' ||
                       refill_interval || ' ' || allowed_ips::text FROM flint.key_info WHERE key_id = '$limited'};
my %before = (log => $node->safe_psql('postgres', $log_rows), views => $node->safe_psql('postgres', $view_rows),
              limits => $node->safe_psql('postgres', $limits));
like($before{log}, qr/before-upgrade/, 'the 1.2 log has its rows');

$node->safe_psql('postgres', "ALTER EXTENSION flint_keys UPDATE TO '1.3'");
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'flint_keys'"), '1.3', 'updated to 1.3');
is($node->safe_psql('postgres', $log_rows), $before{log}, "every request-log row reads the same, column for column");
is($node->safe_psql('postgres', q{SELECT sum(requests) || ' ' || sum(cost) FROM flint.usage}),
    $node->safe_psql('postgres', q{SELECT count(*) || ' ' || sum(cost) FROM flint.request_log}),
    'the update summed the rows logged under 1.2 into flint.usage (every merchant, unknown keys too)');
is($node->safe_psql('postgres', $view_rows), $before{views}, 'and through the views users query');
is($node->safe_psql('postgres', $limits), $before{limits}, 'the key limits are unchanged');
is($node->safe_psql('postgres', "SELECT remaining FROM flint.key_info WHERE key_id = '$limited'"), '47',
    'key_info.remaining now shows what is left of the quota (50 less one call of cost 3), leased units included');
is($node->safe_psql('postgres', "SELECT flint_verify_key('$secret', 'payments:read', '$acme') = '$key'"), 't',
    'a 1.2 secret verifies');
is($node->safe_psql('postgres', "SELECT code FROM flint_check_key('$limited_secret', 'payments:read', '$acme', '10.1.1.1', 1)"),
    'ip_not_allowed', 'its allowlist still holds');
my $as_app = qq{SET ROLE app12; BEGIN; SELECT count(*) FROM flint_authenticate('$secret');
                SELECT count(*) || ' ' || min(status) FROM flint.key_info;
                SELECT count(*) FROM flint_list_keys('$acme');
                SELECT roles::text || ' ' || effective_scopes::text FROM flint_get_key('$key'); COMMIT;};
is($node->safe_psql('postgres', $as_app), "1\n2 active\n2\n{} {keys:read,payments:write}",
    'the 1.2 application role reads key_info, its new columns too, and lists keys');
# The new features on keys made under 1.2.
$node->safe_psql('postgres', qq{
    SELECT flint_create_role('$acme', 'refunds', '{refunds:read}');
    SELECT flint_grant_role('$key', 'refunds');});
is($node->safe_psql('postgres', "SELECT code FROM flint_check_key('$secret', 'refunds:read', '$acme')"), '',
    'a 1.2 key takes a role');
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
is($node->safe_psql('postgres', qq{SELECT sum(requests) FROM flint_usage('$acme', now() - interval '1 hour', now() + interval '1 minute')}),
    $node->safe_psql('postgres', qq{SELECT count(*) FROM flint.request_log WHERE merchant_id = '$acme'}),
    'the usage counts every row of the window, those logged under 1.2 too');
done_testing();
