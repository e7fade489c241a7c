# Rate-limit state stays correct at 100,000 limited keys: each of 100,000
# keys with a limit of one call per hour succeeds once and is refused the
# second time, with no bucket lost or shared, in a table of the default size.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
# One merchant's 100,000 keys: the whole table is its share here.
my $node = flint_node('many_limits', 'flint.log_queue_size = 262144', 'flint.merchant_share = 100');
my $keys = 100000;
# Keys made in bulk (as test/bench/bench.sql does): tokens from flint._mint_token,
# only their digest stored, each with a limit of 1 per hour.
$node->safe_psql('postgres', qq{
    ALTER TABLE flint.api_keys DISABLE TRIGGER key_events;
    CREATE TABLE tokens AS SELECT id, (flint._mint_token('live', id)).secret AS tok
      FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, $keys)) s;
    INSERT INTO flint.api_keys (id, merchant_id, name, mode, scopes, display_prefix, secret_hash, created_by,
                                rate_limit, rate_window)
    SELECT id, '$acme', 'many', 'live', '{payments:read}', left(tok, 16), sha256(convert_to(tok, 'UTF8')), 'tap',
           1, '1 hour'
      FROM tokens;
    ALTER TABLE flint.api_keys ENABLE TRIGGER key_events;});
is($node->safe_psql('postgres', "SELECT current_setting('flint.rate_limit_slots')::int >= $keys"), 't',
    'the default table holds 100,000 buckets');
my $round = "SELECT coalesce(c.code, 'ok'), count(*) FROM tokens t, LATERAL flint_check_key(t.tok, 'payments:read', '$acme') c "
          . "GROUP BY 1 ORDER BY 1";
is($node->safe_psql('postgres', $round), "ok|$keys", 'first call of every key: all 100,000 succeed');
is($node->safe_psql('postgres', $round), "rate_limited|$keys", 'second call of every key: all 100,000 refused');
$node->safe_psql('postgres', "UPDATE flint.api_keys SET rate_limit = 2 WHERE id = (SELECT id FROM tokens LIMIT 1)");
is($node->safe_psql('postgres', "SELECT coalesce(c.code, 'ok') FROM tokens t, LATERAL flint_check_key(t.tok, 'payments:read', '$acme') c "
                               . "WHERE t.id = (SELECT id FROM tokens LIMIT 1)"), 'ok', 'a changed limit starts a fresh bucket');
done_testing();
