# The spool's fair shares. While a DBA's lock holds up the request-log
# insert, rows go to the spool (flint.log_spool_size, here 1 MB: about 3,500
# rows). Merchant Acme floods verifications: once the spool is past half
# full, Acme, past its share (flint.merchant_share, 10% of the spool), is
# refused with its own log_queue_full message, and merchant Bolt's
# verifications all succeed. After the lock goes every row that was
# answered is in the log, and Acme verifies again.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $bolt = 'bbbbbbbb-0000-0000-0000-000000000002';
my $node = flint_node('spool_shares', 'flint.log_spool_size = 1MB', 'flint.log_queue_size = 1024',
    'flint.log_batch_size = 200');
$node->safe_psql('postgres', qq{
    INSERT INTO flint.merchants (id, name) VALUES ('$bolt', 'Bolt');
    CREATE FUNCTION try_verify(secret text, merchant uuid) RETURNS text LANGUAGE plpgsql AS \$\$
    DECLARE detail text;
    BEGIN
        PERFORM flint_verify_key(secret, 'payments:read', merchant);
        RETURN 'ok';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
        RETURN SQLSTATE || ' ' || SQLERRM || ' | ' || detail;
    END \$\$;});
my (undef, $acme_secret) = make_key($node);
my $bolt_secret = $node->safe_psql('postgres', "SELECT secret FROM flint_create_key('$bolt', 'b', '{payments:read}')");
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
my $spool_rows = sub { $node->safe_psql('postgres', 'SELECT spooled FROM flint_log_status() LIMIT 1') };

# The DBA's lock: the worker's insert gives up after 100 ms and spools.
my $dba = $node->background_psql('postgres');
$dba->query_safe('BEGIN; LOCK TABLE flint.request_log IN ACCESS EXCLUSIVE MODE');

# Acme: 6,000 verifications, one answer each.
my $acme_answers = $node->safe_psql('postgres', qq{
    SET statement_timeout = '120s';  -- without shares each refusal waits flint.log_queue_wait
    SELECT r FROM generate_series(1, 6000) g, LATERAL try_verify('$acme_secret' || left(g::text, 0), '$acme') r});
my @answers = split /\n/, $acme_answers;
my $acme_ok = grep { $_ eq 'ok' } @answers;
my @refused = grep { /^53000 / } @answers;
is(scalar(@answers), 6000, 'Acme got an answer for each of its 6,000 calls');
cmp_ok($acme_ok, '>', 354, "Acme verified beyond its share while the spool had room ($acme_ok)");
cmp_ok(scalar(@refused), '>', 0, 'then Acme was refused (' . scalar(@refused) . ')');
is(scalar(@answers) - $acme_ok - scalar(@refused), 0, 'and nothing else');
like($refused[0] // '', qr/log_queue_full: this merchant's share of the request-log spool is spent/,
    "Acme's refusal says it is its own share");
like($refused[0] // '', qr/flint\.merchant_share \(10%\)/, 'and names the setting');
cmp_ok($spool_rows->(), '>', 1700, 'the spool is past half full (' . $spool_rows->() . ' rows)');

# Bolt, meanwhile: every verification succeeds.
my $bolt_answers = $node->safe_psql('postgres', qq{
    SELECT string_agg(DISTINCT r, ', ') || ' ' || count(*)
      FROM generate_series(1, 300) g, LATERAL try_verify('$bolt_secret' || left(g::text, 0), '$bolt') r});
is($bolt_answers, 'ok 300', "all 300 of Bolt's verifications succeed while Acme is refused");
like($node->safe_psql('postgres', "SELECT try_verify('$acme_secret', '$acme')"), qr/^53000 .*share/,
    'Acme is still refused');

# The lock goes: the spool is inserted, every answered call is a row, and
# Acme's share comes back.
$dba->query_safe('COMMIT');
$dba->quit;
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
is($spool_rows->(), 0, 'the spool is empty again');
is($node->safe_psql('postgres', "SELECT count(*) FROM flint.request_log WHERE merchant_id = '$bolt'"), 300,
    "every one of Bolt's verifications is a row");
is($node->safe_psql('postgres', "SELECT count(*) FROM flint.request_log WHERE merchant_id = '$acme' AND outcome = 'ok'"),
    $acme_ok, "every one of Acme's answered verifications is a row");
is($node->safe_psql('postgres', "SELECT try_verify('$acme_secret', '$acme')"), 'ok', 'Acme verifies again');

$node->stop;
done_testing();
