# The README's demo (scripts/demo.sql) runs as its first screen promises:
# on a server preloading flint_keys, every error code FK001-FK012 shows up,
# the request log and the key events have rows, and RLS hides the other
# merchant's payment.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $src = $ENV{FLINT_SRC} or die 'FLINT_SRC: the source tree (the Makefile sets it)';
my $node = PostgreSQL::Test::Cluster->new('demo');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'flint_keys'\nflint.database = 'postgres'\n");
$node->start;

my ($ret, $out, $err) = $node->psql('postgres', undef, extra_params => [ '-P', 'tuples_only=off', '-v', 'ON_ERROR_STOP=0', '-f', "$src/scripts/demo.sql" ]);
is($ret, 0, 'the demo runs to its end');
my %codes = (FK001 => 'malformed_key', FK002 => 'invalid_key', FK003 => 'key_revoked', FK004 => 'key_expired',
    FK005 => 'missing_scope', FK006 => 'wrong_merchant', FK007 => 'merchant_suspended', FK008 => 'unknown_scope',
    FK009 => 'rate_limited', FK010 => 'usage_exceeded', FK011 => 'ip_not_allowed', FK012 => 'key_disabled');
for my $code (sort keys %codes) {
    like($err, qr/ERROR:  $codes{$code}:/, "the demo shows $code $codes{$code}");
}
unlike($err, qr/ERROR:  (?!(?:@{[join '|', values %codes]}):)/, 'and no other error (nothing in the demo is broken)');
like($out, qr/\nfk_live_\w+\|[0-9a-f-]{36}\|revoked\n/, 'the leak report revoked the key');
like($out, qr/\nvisible_without_a_key\n0\n/, 'RLS: no rows without a key');
like($out, qr/\nrefunds_through_the_role\nt\n/, 'a key verifies a scope through its role');
like($out, qr/\d{4}-\d\d-\d\d\|checkout server 2\|ok\|1\|1\n/, 'and its usage is counted per key and day');
is($node->safe_psql('postgres', 'SELECT count(*) > 20 FROM flint.request_log'), 't', 'the demo left request-log rows');
$node->stop;
done_testing();
