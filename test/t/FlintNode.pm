# A PostgreSQL::Test::Cluster node with flint_keys preloaded and installed,
# plus helpers shared by the TAP tests.
package FlintNode;
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Exporter 'import';
our @EXPORT = qw(flint_node wait_for_worker make_key verify_until_spool_full forwarding_primary forwarding_standby);

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

# A primary that streams to standbys and takes their forwarded rows: flint_keys
# preloaded, the Acme merchant, and the forwarder's role with the README's
# two GRANTs and nothing else. @conf: more postgresql.conf lines.
sub forwarding_primary {
    my ($name, @conf) = @_;
    my $node = PostgreSQL::Test::Cluster->new($name);
    $node->init(allows_streaming => 1);
    $node->append_conf('postgresql.conf', join("\n",
        "shared_preload_libraries = 'flint_keys'", "flint.database = 'postgres'",
        "flint.log_flush_interval = 20ms", "restart_after_crash = on", @conf, ''));
    $node->start;
    $node->safe_psql('postgres', q{
        CREATE EXTENSION flint_keys;
        INSERT INTO flint.merchants (id, name) VALUES ('aaaaaaaa-0000-0000-0000-000000000001', 'Acme');
        CREATE ROLE flint_forwarder LOGIN;
        GRANT USAGE ON SCHEMA flint TO flint_forwarder;
        GRANT EXECUTE ON FUNCTION flint._receive_log_batch(uuid, bigint, text, bytea),
                                  flint._receive_last_used(uuid[], bigint[]) TO flint_forwarder;});
    return $node;
}

# A hot standby of $primary (from a fresh base backup) that forwards its rows
# as flint_forwarder; started and caught up. @conf: more postgresql.conf lines.
sub forwarding_standby {
    my ($primary, $name, @conf) = @_;
    $primary->backup('base');
    my $node = PostgreSQL::Test::Cluster->new($name);
    $node->init_from_backup($primary, 'base', has_streaming => 1);
    $node->append_conf('postgresql.conf', join("\n", @conf,
        "flint.primary_conninfo = '" . ($primary->connstr('postgres') . ' user=flint_forwarder') =~ s/'/''/gr . "'", ''));
    $node->start;
    $primary->wait_for_catchup($node);
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

# Calls $call (e.g. "flint_verify_key(...)") until a refusal's DETAIL says
# the spool is full, at most $max_calls accepted: a refusal of the queue wait
# (the worker held up, a busy machine) is not the bound, so such refusals are
# counted and the calls go on, for up to 90 s of them.
# Returns (accepted, refusals, the last refusal's SQLSTATE, message, DETAIL,
# what the log worker was waiting on at the other refusals).
sub verify_until_spool_full {
    my ($node, $call, $max_calls, $setup) = @_;
    $setup //= '';
    my ($ret, $stdout, $stderr) = $node->psql('postgres', qq{$setup
        DO \$\$
        DECLARE
            accepted int := 0;
            refused int := 0;
            state text;
            message text;
            detail text;
            waits text[] := '{}';
            wait text;
            give_up timestamptz := clock_timestamp() + interval '90 s';
        BEGIN
            WHILE accepted < $max_calls AND clock_timestamp() < give_up LOOP
                BEGIN
                    PERFORM $call;
                    accepted := accepted + 1;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                                            detail = PG_EXCEPTION_DETAIL;
                    refused := refused + 1;
                    EXIT WHEN detail LIKE '%spool holds%';
                    SELECT coalesce(a.wait_event_type || ':' || a.wait_event, a.state, 'running') INTO wait
                      FROM pg_stat_activity a WHERE a.backend_type = 'flint_keys log worker';
                    wait := coalesce(wait, 'no log worker');
                    IF NOT wait = ANY (waits) THEN waits := waits || wait; END IF;
                    PERFORM pg_sleep(0.01);
                END;
            END LOOP;
            RAISE NOTICE 'accepted % refused % | % | % | % | %', accepted, refused, state, message, detail,
                array_to_string(waits, ', ');
        END \$\$});
    my @fields = $stderr =~ /accepted (\d+) refused (\d+) \| (.*?) \| (.*?) \| (.*?) \| (.*)/;
    return @fields ? @fields : ($max_calls, 0, '', '', '', '');
}

1;
