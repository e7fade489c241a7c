# A secret never reaches pg_stat_statements, the jsonlog file or the
# client through the statements PostgreSQL keeps as typed: COPY (SELECT ...)
# TO STDOUT, EXPLAIN ANALYZE, DECLARE and PREPARE; nor through
# application_name (its jsonlog field, log_line_prefix's %a,
# pg_stat_activity); nor as the tail of a long input that a parser's CONTEXT
# line quotes without the token's prefix and checksum.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $node = flint_node('scrub',
    "shared_preload_libraries = 'pg_stat_statements,flint_keys'", "pg_stat_statements.track = all",
    "pg_stat_statements.track_utility = on", "logging_collector = on", "log_destination = 'stderr,jsonlog'",
    "log_directory = 'scrub_logs'", "log_line_prefix = '%m [%p] %a '", "log_statement = 'all'",
    "log_min_error_statement = error", "log_error_verbosity = verbose");
$node->safe_psql('postgres', 'CREATE EXTENSION pg_stat_statements');
my ($key, $secret) = make_key($node, '{payments:read}');
my $body = substr($secret, 16); # what must never be seen: all past the display prefix
my $tail = substr($secret, 36); # the secret's last 33 characters and the checksum
my $call = "flint_check_key('$secret', 'payments:read', '$acme')";

# No piece of the secret in TEXT: neither the body past the display prefix
# nor any 12 characters of it.
sub leaks {
    my ($text) = @_;
    return 1 if index($text, $body) >= 0;
    for (my $i = 0; $i + 12 <= length $body; ++$i) {
        return 1 if index($text, substr($body, $i, 12)) >= 0;
    }
    return 0;
}

# 1. Utility statements keep their text as typed: each is masked once parsed.
my %statements = (
    'COPY (SELECT ...) TO STDOUT' => "COPY (SELECT ok FROM $call) TO STDOUT",
    'EXPLAIN ANALYZE' => "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM $call",
    'DECLARE' => "BEGIN; DECLARE c CURSOR FOR SELECT ok FROM $call; FETCH c; COMMIT",
    'PREPARE' => "PREPARE p AS SELECT ok FROM $call; EXECUTE p; SELECT statement FROM pg_prepared_statements",
);
for my $name (sort keys %statements) {
    my ($ret, $out, $err) = $node->psql('postgres', $statements{$name});
    is($ret, 0, "$name runs");
    ok(!leaks($out . $err), "$name: nothing of the secret in its output") or diag $out;
}
like($node->safe_psql('postgres', "COPY (SELECT ok FROM $call) TO STDOUT"), qr/^t$/,
    'the masked COPY still verified the real secret (the parse tree runs, not the text)');
my $pgss = $node->safe_psql('postgres', 'SELECT string_agg(query, E\'\n\') FROM pg_stat_statements');
like($pgss, qr/COPY \(SELECT ok FROM flint_check_key/, 'pg_stat_statements recorded the COPY');
like($pgss, qr/DECLARE c CURSOR/, '... and the DECLARE');
like($pgss, qr/EXPLAIN/, '... and the EXPLAIN');
ok(!leaks($pgss), 'no piece of the secret in pg_stat_statements') or diag $pgss;
like($pgss, qr/\Q${\ substr($secret, 0, 16)}\E\*+/, 'the masked literals keep the display prefix');

# 2. application_name: a token there (with a doubled prefix) is masked in the
# setting, so the jsonlog field, %a and pg_stat_activity never carry it.
my $shown = $node->safe_psql('postgres', "SET application_name = 'fk_live_$secret';
    SELECT 'a statement to log';
    SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()");
$shown = (split /\n/, $shown)[-1];
like($shown, qr/^fk_live_fk_live_\w{8}\*+$/, 'pg_stat_activity shows the name masked after the display prefix');
ok(!leaks($shown), "... no piece of the secret there ($shown)");

# 3. Malformed JSON holding a token: the CONTEXT line quotes the tail of the
# line, without prefix or checksum. The client and the log get it masked.
my $json = '{"note": "' . ('x' x 40) . "\", \"token\": $secret}";
my ($ret, $out, $err) = $node->psql('postgres', "SELECT '$json'::jsonb");
isnt($ret, 0, 'malformed JSON is refused');
like($err, qr/invalid input syntax for type json/, 'as malformed JSON');
like($err, qr/CONTEXT:  JSON data, line 1: \.\.\./, 'with the CONTEXT line quoting the tail');
ok(!leaks($err), 'the client sees no piece of the secret') or diag $err;

# The server log, both files: the stderr lines and the jsonlog records.
$node->safe_psql('postgres', 'SELECT pg_rotate_logfile()');
my $dir = $node->data_dir . '/scrub_logs';
my $logs = '';
my ($json_records, $json_with_app) = (0, 0);
for my $file (glob "$dir/*") {
    my $text = slurp_file($file);
    $logs .= $text;
    next unless $file =~ /\.json$/;
    for my $line (split /\n/, $text) {
        ++$json_records;
        ++$json_with_app if $line =~ /"application_name":"fk_live_fk_live_\w{8}\*+"/;
    }
}
cmp_ok($json_records, '>', 10, "the jsonlog file has records ($json_records)");
cmp_ok($json_with_app, '>', 0, "its application_name field carries the masked name ($json_with_app records)");
like($logs, qr/JSON data, line 1: \.\.\.\*+/, 'the log has the CONTEXT line, masked');
like($logs, qr/\] fk_live_fk_live_\w{8}\*+ /, "log_line_prefix's %a is masked");
ok(!leaks($logs), 'no piece of the secret anywhere in the server log');
unlike($logs, qr/\Q$tail\E/, "nor the secret's tail");

done_testing();
