# Operations: key events reach a LISTENing session at commit (never on
# rollback, never a secret), and every setting's default in the README's
# table is what the server reports.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FlintNode;

my $src = $ENV{FLINT_SRC} or die 'FLINT_SRC must point at the source tree';
my $node = flint_node('operations');
my ($key, $secret) = make_key($node, '{payments:read}');

# NOTIFY flint_key_events: a wake-up at commit whose payload is the event's
# id and nothing else; the listener reads the event from flint.key_events.
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN flint_key_events');
$node->safe_psql('postgres', "BEGIN; SELECT flint_disable_key('$key'); ROLLBACK;");
$node->safe_psql('postgres', "SELECT flint_revoke_key('$key', 'ops test')");
my $got = $listener->query_safe('SELECT 1');
my @payloads = $got =~ /Asynchronous notification "flint_key_events" with payload "([^"]*)" received/g;
is(scalar @payloads, 1, 'one notification: the rolled-back disable sent none');
like($payloads[0] // '', qr/^\d+$/, 'the payload is an event id, nothing else');
unlike($got, qr/\Q$key\E|aaaaaaaa-0000/, 'no key id or merchant id in the notification');
is($node->safe_psql('postgres', "SELECT key_id || ' ' || event FROM flint.key_events WHERE id = " . ($payloads[0] // 0)),
    "$key revoked", 'the id names the revoke in flint.key_events');
unlike($got, qr/\Q${\ substr($secret, 16, 20)}\E/, 'no secret in any notification');
$listener->quit;

# The key cache lives in its own memory context, bounded by flint.key_cache_size,
# and evicts one key at a time: every key still verifies, the memory stays put.
my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my @many = map { (make_key($node))[1] } 1 .. 300;
my $checks = join(' UNION ALL ', map { "SELECT (flint_check_key('$_', 'payments:read', '$acme')).ok" } @many);
my $context = q{SELECT coalesce(sum(total_bytes), 0) FROM pg_backend_memory_contexts WHERE name = 'flint_keys key cache'};
my @out = split /\n/, $node->safe_psql('postgres', qq{
    SET flint.key_cache_size = 64;
    SELECT count(*) FILTER (WHERE ok) FROM ($checks) c(ok);
    SELECT count(*) FILTER (WHERE ok) FROM ($checks) c(ok);
    $context;
    SELECT cache_hits_total FROM flint.metrics;
    SELECT count(*) FROM generate_series(1, 10) g, LATERAL flint_check_key('$many[0]' || repeat('', g), 'payments:read', '$acme') c WHERE c.ok;
    SELECT cache_hits_total FROM flint.metrics;});
is($out[0], 300, '300 keys verify through a cache of 64');
is($out[1], 300, 'and again, with keys evicted and reloaded one by one');
cmp_ok($out[2], '>', 0, 'the cache is in the memory context "flint_keys key cache"');
# 64 slots (<= 200 bytes each), the scope (8 KiB) and allowlist (9 KiB) dictionaries, the context's own blocks
cmp_ok($out[2], '<', 64 * 200 + 8192 + 9248 + 16384, "bounded by the setting ($out[2] bytes for 64 keys)");
is($out[4], 10, 'a hot key verifies ten times');
cmp_ok($out[5] - $out[3], '>=', 9, 'from the cache: the shared hit counter moved (a scan larger than the cache hits nothing)');
# All backends' caches together stay within flint.key_cache_total: with 1 MB,
# 8,000 keys (about 1.5 MB of cache) fill one backend's cache to the bound;
# a second backend, while the first holds its cache, gets next to nothing;
# every key still verifies (the rest are read from the table each time).
$node->append_conf('postgresql.conf', "flint.key_cache_total = 1MB\n");
$node->reload;
$node->safe_psql('postgres', qq{CREATE TABLE cache_secrets AS
    SELECT secret FROM generate_series(1, 8000) g, LATERAL flint_create_key('$acme', 'cached ' || g, '{payments:read}')});
my $fill = qq{SELECT count(*) FROM cache_secrets, LATERAL flint_check_key(secret, 'payments:read', '$acme') c WHERE c.ok};
my $first = $node->background_psql('postgres');
my $first_pid = $first->query_safe('SELECT pg_backend_pid()');
is($first->query_safe($fill), 8000, 'one backend verifies 8,000 keys under a 1 MB server-wide bound');
my $first_bytes = $first->query_safe($context);
cmp_ok($first_bytes, '<=', 1024 * 1024 + 65536, "its cache stops at the bound ($first_bytes bytes)");
cmp_ok($first_bytes, '>', 256 * 1024, 'having grown to near it');
my @second = split /\n/, $node->safe_psql('postgres', "$fill; $context");
is($second[0], 8000, 'a second backend verifies them all too');
cmp_ok($second[1] + $first_bytes, '<=', 1024 * 1024 + 2 * 65536,
    "while the first holds its cache, the two together stay within the bound ($second[1] more bytes)");
$first->quit;
$node->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $first_pid") or die;
my $after = $node->safe_psql('postgres', "$fill; $context");
cmp_ok((split /\n/, $after)[1], '>', 256 * 1024, 'a backend that exits gives its share back');

# The README's settings table against the server (a node with no flint settings).
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->append_conf('postgresql.conf', "shared_preload_libraries = 'flint_keys'\n");
$plain->start;
my %server = map { split /\|/, $_, 2 } split /\n/,
    $plain->safe_psql('postgres', q{SELECT name || '|' || current_setting(name) FROM pg_settings WHERE name LIKE 'flint.%'});
my %readme;
for (split /\n/, slurp_file("$src/README.md")) {
    $readme{$1} = $2 if /^\| `(flint\.[a-z_]+)` \| `?([^|`]*?)`? \|/;
}
ok(keys %server >= 9, 'the server reports the flint settings');
is_deeply([sort keys %readme], [sort keys %server], 'the README lists exactly the settings the server has');
for my $name (sort keys %server) {
    my $doc = $readme{$name} // 'missing';
    $doc = '' if $doc eq "''";
    is($doc, $server{$name}, "README default of $name matches the server");
}
$plain->stop;
done_testing();
