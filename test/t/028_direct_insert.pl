# The log worker's direct insert (flint.log_direct_insert, 1.3): heap
# multi-insert into the day's partition, then each index in its own key
# order. Its rows are the rows COPY writes, column for column; every index
# holds every row (amcheck, heapallindexed), partial and expression indexes
# a DBA adds included; rows route to the default partition when their day
# has none; and a table it does not know (a column with a default, a
# trigger, a unique index) is written by COPY, so that nothing a DBA adds is
# skipped.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $node = flint_node('direct');
$node->safe_psql('postgres', 'CREATE EXTENSION amcheck');
my ($key, $secret) = make_key($node, '{payments:read}');
my $today = $node->safe_psql('postgres', "SELECT 'request_log_' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')");

sub set_direct {
    my ($on) = @_;
    $node->safe_psql('postgres', "ALTER SYSTEM SET flint.log_direct_insert = $on; SELECT pg_reload_conf()");
    $node->poll_query_until('postgres', "SELECT current_setting('flint.log_direct_insert') = '$on'", 't')
      or die 'the setting did not change';
    sleep 1; # the worker reloads at its next wake-up
}

# Calls of every shape (ok, refusals, given client_ip and cost, request id,
# application_name), tagged by request id.
sub calls {
    my ($tag) = @_;
    $node->safe_psql('postgres', qq{
        SET application_name = 'direct test';
        SET flint.request_id = '$tag';
        SELECT flint_check_key('$secret', 'payments:read', '$acme');
        SELECT flint_check_key('$secret', 'payments:read', '$acme', '192.0.2.7', 3);
        SELECT flint_check_key('$secret', 'payments:read', '$acme', '2001:db8::1', 1);
        SELECT flint_check_key('$secret', 'refunds:write', '$acme');
        SELECT flint_check_key('fk_live_nonsense', 'payments:read', '$acme');
        SELECT flint_check_key('$secret', 'payments:read', 'bbbbbbbb-0000-0000-0000-000000000002');
        SELECT flint_flush_log();});
}
my $columns = q{key_id, display_prefix, merchant_id, requested_merchant, scope, outcome, sqlstate, client_addr,
                application_name, backend_pid IS NOT NULL, source, cost, server};
sub rows_of {
    my ($tag) = @_;
    return $node->safe_psql('postgres',
        "SELECT $columns FROM flint.request_log WHERE request_id = '$tag' ORDER BY at, outcome, client_addr");
}

set_direct('off');
calls('by-copy');
set_direct('on');
calls('direct');
my ($copy_rows, $direct_rows) = (rows_of('by-copy'), rows_of('direct'));
is(scalar(split /\n/, $direct_rows), 6, 'the direct insert wrote the six rows');
is($direct_rows, $copy_rows, 'column for column the rows COPY writes');

# Every index holds every row: amcheck's heapallindexed, on every btree of
# today's partition, after many keys' rows in one batch.
$node->safe_psql('postgres', qq{
    CREATE TABLE many AS SELECT (flint_create_key('$acme', 'k' || g, '{payments:read}')).secret FROM generate_series(1, 300) g;
    SELECT count(*) FROM many, generate_series(1, 20) g, LATERAL flint_check_key(secret || left(g::text, 0), 'payments:read', '$acme');
    SELECT flint_flush_log();});
# A partial and an expression index a DBA adds are kept up too.
$node->safe_psql('postgres', qq{
    CREATE INDEX dba_refusals ON flint.$today (key_id) WHERE outcome <> 'ok';
    CREATE INDEX dba_scope ON flint.$today (lower(scope));
    SELECT count(*)
      FROM many, generate_series(1, 5) g, LATERAL flint_check_key(secret || left(g::text, 0), CASE WHEN random() < 0.3 THEN 'refunds:write' ELSE 'payments:read' END, '$acme');
    SELECT flint_flush_log();});
my $checked = $node->safe_psql('postgres', qq{
    SELECT count(bt_index_check(i.indexrelid, true))
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
     WHERE i.indrelid = 'flint.$today'::regclass AND a.amname = 'btree'});
is($checked, 4, 'amcheck (heapallindexed) finds every row in each of the 4 btree indexes, partial and expression ones too');
is($node->safe_psql('postgres', qq{SET enable_seqscan = off; SET enable_bitmapscan = off;
        SELECT count(*) FROM flint.$today WHERE outcome <> 'ok' AND key_id IS NOT NULL}),
    $node->safe_psql('postgres', qq{SET enable_indexscan = off; SET enable_bitmapscan = off;
        SELECT count(*) FROM flint.$today WHERE outcome <> 'ok' AND key_id IS NOT NULL}),
    'the partial index has exactly the refusals');
is($node->safe_psql('postgres', qq{SELECT count(*) FROM flint.request_log WHERE source = 'check'}), 12 + 6000 + 1500,
    'every call is a row');

# A day without its partition: the rows go to the default partition.
$node->safe_psql('postgres', "ALTER TABLE flint.request_log DETACH PARTITION flint.$today");
calls('default');
is(scalar(split /\n/, rows_of('default')), 6, 'with today detached the rows arrive');
is($node->safe_psql('postgres', "SELECT count(*) FROM flint.request_log_default WHERE request_id = 'default'"), 6,
    '... in the default partition');
$node->safe_psql('postgres', "DELETE FROM flint.request_log_default; ALTER TABLE flint.request_log ATTACH PARTITION flint.$today FOR VALUES FROM ((now() AT TIME ZONE 'UTC')::date::timestamp AT TIME ZONE 'UTC') TO (((now() AT TIME ZONE 'UTC')::date + 1)::timestamp AT TIME ZONE 'UTC')");

# What a DBA adds that the direct insert does not know: COPY writes the rows,
# so a trigger fires and a column's default is applied.
$node->safe_psql('postgres', qq{
    CREATE TABLE seen (n int);
    CREATE FUNCTION count_row() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN INSERT INTO seen VALUES (1); RETURN NEW; END \$\$;
    CREATE TRIGGER count_row AFTER INSERT ON flint.$today FOR EACH ROW EXECUTE FUNCTION count_row();});
calls('with-trigger');
is($node->safe_psql('postgres', 'SELECT count(*) FROM seen'), 6, 'a trigger on the partition fires for every row');
is(rows_of('with-trigger'), $copy_rows, 'and the rows are the same');
$node->safe_psql('postgres', qq{
    DROP TRIGGER count_row ON flint.$today;
    ALTER TABLE flint.request_log ADD COLUMN region text DEFAULT 'eu-west'});
calls('with-column');
is($node->safe_psql('postgres', "SELECT count(*) FROM flint.request_log WHERE request_id = 'with-column' AND region = 'eu-west'"),
    6, 'a column a DBA added gets its default');
my $log = slurp_file($node->logfile);
unlike($log, qr/flint_keys: .*(could not|failed).*request-log|PANIC|server process .* was terminated/,
    'no insert failed and no process crashed');

done_testing();
