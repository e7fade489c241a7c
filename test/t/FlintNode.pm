# A PostgreSQL::Test::Cluster node with flint_keys preloaded and installed,
# plus helpers shared by the TAP tests.
package FlintNode;
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Exporter 'import';
our @EXPORT = qw(flint_node wait_for_worker make_key);

sub flint_node {
    my ($name, @conf) = @_;
    my $node = PostgreSQL::Test::Cluster->new($name);
    $node->init;
    $node->append_conf('postgresql.conf', join("\n",
        "shared_preload_libraries = 'flint_keys'",
        "flint.database = 'postgres'",
        "flint.log_flush_interval = 20ms",
        "restart_after_crash = on",
        @conf) . "\n");
    $node->start;
    $node->safe_psql('postgres', q{
        CREATE EXTENSION flint_keys;
        INSERT INTO flint.merchants (id, name) VALUES ('aaaaaaaa-0000-0000-0000-000000000001', 'Acme');
    });
    wait_for_worker($node);
    return $node;
}

# Waits until the log worker is connected; returns its pid.
sub wait_for_worker {
    my ($node) = @_;
    $node->poll_query_until('postgres',
        "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'flint_keys log worker'")
      or die "log worker did not start";
    return $node->safe_psql('postgres',
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'flint_keys log worker'");
}

# Creates a key for the test merchant; returns (key_id, secret).
sub make_key {
    my ($node, $scopes) = @_;
    $scopes //= '{payments:read}';
    my $row = $node->safe_psql('postgres',
        "SELECT key_id || '|' || secret FROM flint_create_key('aaaaaaaa-0000-0000-0000-000000000001', 'tap', '$scopes')");
    return split /\|/, $row;
}

1;
