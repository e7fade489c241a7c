# No secret reaches the server log, whatever the logging settings: create,
# rotate, and every failing verification, with literals and with bind
# parameters (pgbench -M extended sends them as such).
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $node = flint_node('secrets',
    "log_statement = 'all'", "log_min_error_statement = error", "log_min_duration_statement = 0",
    "log_parameter_max_length = -1", "log_parameter_max_length_on_error = -1", "log_error_verbosity = verbose",
    # one server-log line per refused verification (off by default): they are scrubbed too
    "flint.log_refusals = on");
$node->safe_psql('postgres', "INSERT INTO flint.merchants (id, name) VALUES ('bbbbbbbb-0000-0000-0000-000000000002', 'Bolt')");

my @secrets;
my ($key, $secret) = make_key($node, '{payments:read}');
push @secrets, $secret;
my $rotated = $node->safe_psql('postgres', "SELECT secret FROM flint_rotate_key('$key', '1 hour')");
push @secrets, $rotated;
my ($revoked_key, $revoked) = make_key($node, '{payments:read}');
push @secrets, $revoked;
$node->safe_psql('postgres', "SELECT flint_revoke_key('$revoked_key')");
my $typo = substr($secret, 0, 40) . (substr($secret, 40, 1) eq 'a' ? 'b' : 'a') . substr($secret, 41);
push @secrets, $typo;

# Every failing verification, as literals in the SQL text.
my @calls = (
    [$secret, 'refunds:read', $acme],                                  # missing_scope
    [$secret, 'payments:read', 'bbbbbbbb-0000-0000-0000-000000000002'], # wrong_merchant
    [$secret, 'payments:wirte', $acme],                                # unknown_scope
    [$revoked, 'payments:read', $acme],                                # key_revoked
    [$typo, 'payments:read', $acme],                                   # malformed_key
    [substr($secret, 0, 68), 'payments:read', $acme],                  # truncated
);
for my $c (@calls) {
    my ($ret, $out, $err) = $node->psql('postgres', "SELECT flint_verify_key('$c->[0]', '$c->[1]', '$c->[2]')");
    isnt($ret, 0, "literal verification fails: $c->[1]");
}
my ($ret, $out, $err) = $node->psql('postgres', "SELECT flint_authenticate('$revoked')");
# A syntax error right next to a secret: the STATEMENT line and the message must not carry it.
($ret, $out, $err) = $node->psql('postgres', "SELEC flint_verify_key('$secret', 'payments:read', '$acme')");
like($err, qr/syntax error/, 'a syntax error next to a secret');

# The same, as bind parameters.
my $script = $node->basedir . '/verify.sql';
open my $fh, '>', $script or die;
print $fh "SELECT flint_check_key(:tok, :scope, :merchant);\nSELECT flint_verify_key(:tok, :scope, :merchant);\n";
close $fh;
for my $c (@calls) {
    $node->command_checks_all(
        ['pgbench', '-n', '-t', '1', '-M', 'extended', '-D', "tok=$c->[0]", '-D', "scope=$c->[1]", '-D', "merchant=$c->[2]",
         '-f', $script, '-h', $node->host, '-p', $node->port, 'postgres'],
        2, [qr/^/], [qr/^/], "bind-parameter verification fails: $c->[1]");
}
# and a successful one, with log_statement showing the parameters
$node->command_ok(['pgbench', '-n', '-t', '1', '-M', 'extended', '-D', "tok=$rotated", '-D', 'scope=payments:read',
    '-D', "merchant=$acme", '-f', $script, '-h', $node->host, '-p', $node->port, 'postgres'], 'a good verification by bind parameters');

$node->safe_psql('postgres', 'SELECT flint_flush_log()');
my $log = slurp_file($node->logfile);
like($log, qr/statement: SELECT flint_verify_key\('fk_live_\w{8}\*{53}'/, 'statements are logged, the secret masked after the display prefix');
like($log, qr/parameters: .*fk_live_\w{8}\*{53}/, 'bind parameters are logged masked');
like($log, qr/ERROR:  FK005: missing_scope/, 'the verification errors themselves are logged');
unlike($log, qr/STATEMENT:  SELECT flint_verify_key/, 'no STATEMENT line for verification errors');
for my $s (@secrets) {
    my $body = substr($s, 16);    # everything after the display prefix
    ok(index($log, $body) < 0, 'secret ' . substr($s, 0, 16) . '... is nowhere in the server log');
    ok(index($log, substr($body, 10, 20)) < 0, '...not even a 20-character piece of it');
}
like($log, qr/statement: SELECT flint_flush_log\(\)/, 'statements without tokens are logged untouched');
done_testing();
