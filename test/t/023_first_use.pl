# A key's first use is visible at once: with flint.last_used_interval at its
# default (1 minute), last_used_at of a key never used is written within the
# worker's next pass, not at the end of the interval. A second use within
# the interval waits for the round (at most one UPDATE per key per
# interval), and flint_flush_log() still writes it at once.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $node = flint_node('first_use');
is($node->safe_psql('postgres', 'SHOW flint.last_used_interval'), '1min', 'the default interval');
my ($key, $secret) = make_key($node);
is($node->safe_psql('postgres', "SELECT last_used_at IS NULL FROM flint.api_keys WHERE id = '$key'"), 't',
    'a new key: never used');

my $start = time;
$node->safe_psql('postgres', "SELECT flint_verify_key('$secret', 'payments:read', '$acme')");
ok($node->poll_query_until('postgres', "SELECT last_used_at IS NOT NULL FROM flint.api_keys WHERE id = '$key'"),
    'its first use shows in last_used_at without a flush');
cmp_ok(time - $start, '<', 20, sprintf('well within the 1-minute interval (%.1f s)', time - $start));
my $first = $node->safe_psql('postgres', "SELECT last_used_at FROM flint.api_keys WHERE id = '$key'");
is($node->safe_psql('postgres', "SELECT count(*) FROM flint.unused_keys WHERE key_id = '$key'"), 0,
    'and it is not listed as unused');

# A second use within the interval: the round writes it, not this pass.
sleep 0.5;
$node->safe_psql('postgres', "SELECT flint_verify_key('$secret', 'payments:read', '$acme')");
sleep 2;
is($node->safe_psql('postgres', "SELECT last_used_at FROM flint.api_keys WHERE id = '$key'"), $first,
    'a second use within the interval does not write again at once');
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
is($node->safe_psql('postgres', "SELECT last_used_at > '$first' FROM flint.api_keys WHERE id = '$key'"), 't',
    'flint_flush_log() writes it');

$node->stop;
done_testing();
