# The full install script of each release (flint_keys--1.2.sql,
# flint_keys--1.3.sql) and the upgrade chain leave the same schema: pg_dump
# --schema-only of a fresh install and of 1.0 -> ... -> that release are
# identical. (--binary-upgrade: a plain dump of an extension is one CREATE
# EXTENSION line; this mode dumps every member.) Also: every function, table
# and view of the current release has a COMMENT, no leftover function
# without a caller ships, CREATE EXTENSION warns where verification cannot
# work, and errors do not name internal helpers.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('scripts');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'flint_keys'\nflint.database = 'postgres'\n");
$node->start;

my $default = $node->safe_psql('postgres', "SELECT default_version FROM pg_available_extensions WHERE name = 'flint_keys'");
my @chain = ('1.0', '1.1', '1.2', '1.3');
is($chain[-1], $default, "the chain tested ends at default_version $default");

# What may differ between two installs of the same schema: object ids, and
# storage details that are not schema (a column added with a default by an
# upgrade keeps it as the "missing value" of old rows; a table's
# relfrozenxid; pg_dump's \restrict key is random per run).
sub schema_dump {
    my ($db) = @_;
    my ($dump, $err);
    IPC::Run::run([ 'pg_dump', '--schema-only', '--binary-upgrade', '-d', $node->connstr($db) ],
        '>', \$dump, '2>', \$err)
      or die "pg_dump $db failed: $err";
    my @lines = grep {
        !/binary_upgrade_set_next_|binary_upgrade_set_missing_value|^-- set missing value|^\\(un)?restrict |^SET relfrozenxid/
    } split /\n/, $dump;
    s/'\{\d+(,\d+)*\}'/'{oids}'/g, s/oid = '\d+'/oid = 'N'/g for @lines;
    my $text = join("\n", @lines) . "\n";
    $text =~ s/\n{3,}/\n\n/g;    # the blank lines around what was left out
    return $text;
}

for my $release (grep { $_ ge '1.2' } @chain) {
    my ($fresh, $upgraded) = ("fresh_" . ($release =~ tr/./_/r), "chain_" . ($release =~ tr/./_/r));
    $node->safe_psql('postgres', "CREATE DATABASE $fresh");
    $node->safe_psql('postgres', "CREATE DATABASE $upgraded");
    $node->safe_psql($fresh, "SET client_min_messages = error; CREATE EXTENSION flint_keys VERSION '$release'");
    my @steps = grep { $_ le $release } @chain;
    $node->safe_psql($upgraded, "SET client_min_messages = error; CREATE EXTENSION flint_keys VERSION '1.0'");
    $node->safe_psql($upgraded, "SET client_min_messages = error; ALTER EXTENSION flint_keys UPDATE TO '$_'")
      for @steps[ 1 .. $#steps ];
    is($node->safe_psql($upgraded, "SELECT extversion FROM pg_extension WHERE extname = 'flint_keys'"),
        $release, "chain " . join(' -> ', @steps));
    my ($a, $b) = (schema_dump($fresh), schema_dump($upgraded));
    ok(length($a) > 50000 && $a =~ /CREATE TABLE flint\.api_keys/, "$release: the dump holds the schema");
    if (!ok($a eq $b, "$release: pg_dump of flint_keys--$release.sql equals pg_dump of the chain")) {
        my $dir = PostgreSQL::Test::Utils::tempdir();
        open(my $fa, '>', "$dir/fresh.sql") or die; print $fa $a; close $fa;
        open(my $fb, '>', "$dir/chain.sql") or die; print $fb $b; close $fb;
        diag(scalar `diff -u $dir/fresh.sql $dir/chain.sql | head -60`);
    }
}

# The current release, fresh: every member explained to psql users.
my $uncommented = $node->safe_psql('fresh_' . ($default =~ tr/./_/r), q{
    SELECT string_agg(pg_describe_object(d.classid, d.objid, 0), ', ' ORDER BY 1)
      FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'flint_keys'
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
       AND obj_description(d.objid, d.classid::regclass::name) IS NULL});
is($uncommented, '', 'every function, table, view, sequence and the schema has a COMMENT');
is($node->safe_psql('fresh_' . ($default =~ tr/./_/r), "SELECT to_regprocedure('flint._new_token(text, uuid)')"),
    '', 'the leftover flint._new_token is gone');

# CREATE EXTENSION where the log worker is not: a warning that says what to do.
$node->safe_psql('postgres', 'CREATE DATABASE elsewhere');
my ($ret, $out, $err) = $node->psql('elsewhere', 'CREATE EXTENSION flint_keys');
is($ret, 0, 'CREATE EXTENSION outside flint.database succeeds');
like($err, qr/WARNING:.*installed in database "elsewhere".*flint\.database.*verification here fails/,
    'and warns that verification there fails');
like($err, qr/HINT:.*flint\.database = 'elsewhere'/, 'with the setting that would fix it');
($ret, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION flint_keys');
unlike($err, qr/WARNING/, 'no warning in flint.database itself');
# The day partitions (the worker makes a week ahead) explain themselves in \dt+ too.
$node->poll_query_until('postgres', q{
    SELECT count(*) >= 8 FROM pg_inherits WHERE inhparent = 'flint.request_log'::regclass})
  or die 'no day partitions';
is($node->safe_psql('postgres', q{
    SELECT string_agg(c.relname, ', ') FROM pg_class AS c
     WHERE c.relnamespace = 'flint'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
       AND obj_description(c.oid, 'pg_class') IS NULL}), '', 'every table, partition and view in schema flint has a COMMENT');

# An error reads as if the public function raised it: its CONTEXT names
# what the user called, never an internal flint._ helper (here
# flint._refuse_revoked, called by flint_update_key). The server-log hook
# does it, so a server that logs no errors (log_min_messages = fatal or
# panic, superuser only) shows the whole stack, as the README says.
my $revoked = $node->safe_psql('postgres', q{
    INSERT INTO flint.merchants (id, name) VALUES ('aaaaaaaa-0000-0000-0000-000000000001', 'Acme');
    SELECT key_id FROM flint_create_key('aaaaaaaa-0000-0000-0000-000000000001', 'k', '{payments:read}');});
$node->safe_psql('postgres', "SELECT flint_revoke_key('$revoked')");
($ret, $out, $err) = $node->psql('postgres', "\\set SHOW_CONTEXT always\nSELECT flint_update_key('$revoked', name => 'y')");
like($err, qr/ERROR:.*revoked and cannot be changed/, 'a revoked key cannot be changed');
like($err, qr/CONTEXT:.*function public\.flint_update_key\(/, 'the CONTEXT names flint_update_key');
unlike($err, qr/flint\._/, 'and no internal helper');

# A flint.database that does not exist: the worker's FATAL says how to fix it.
$node->append_conf('postgresql.conf', "flint.database = 'no_such_database'\n");
my $offset = -s $node->logfile;
$node->restart;
ok($node->wait_for_log(qr/FATAL:.*database "no_such_database" does not exist/, $offset),
   'a log worker whose flint.database does not exist fails to connect');
like(slurp_file($node->logfile, $offset),
     qr/HINT:\s+Create database "no_such_database" \(and CREATE EXTENSION flint_keys in it\), or set flint\.database/,
     'with a HINT that says what to do');

$node->stop;
done_testing();
