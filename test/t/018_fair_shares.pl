# No merchant, routine or load can refuse another merchant. Each case of the
# 1.2 review is reproduced by merchant Acme (an application role with the
# README's GRANTs, or the DBA for the purge and session_replication_role)
# while merchant Bolt verifies at full speed from two sessions: every one of
# Bolt's verifications succeeds, and the log drains in bounded time.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time sleep);
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $bolt = 'bbbbbbbb-0000-0000-0000-000000000002';
my $node = flint_node('fair_shares', 'flint.refusal_summary_interval = 1s');
$node->safe_psql('postgres', qq{
    INSERT INTO flint.merchants (id, name) VALUES ('$bolt', 'Bolt');
    CREATE ROLE app LOGIN;
    GRANT EXECUTE ON FUNCTION flint_verify_key(text, text, uuid), flint_check_key(text, text, uuid),
        flint_authenticate(text), flint_require_scope(text) TO app;
    GRANT EXECUTE ON FUNCTION flint_verify_key(text, text, uuid, inet, integer),
        flint_check_key(text, text, uuid, inet, integer), flint_authenticate(text, inet, integer) TO app;
    GRANT EXECUTE ON FUNCTION flint_create_key(uuid, text, text[], timestamptz, text, jsonb),
        flint_list_keys(uuid, boolean), flint_get_key(uuid), flint_update_key(uuid, text, text[], timestamptz, jsonb),
        flint_revoke_key(uuid, text), flint_rotate_key(uuid, interval) TO app;
    GRANT USAGE ON SCHEMA flint TO app;
    GRANT SELECT ON flint.key_info, flint.request_log, flint.key_events, flint.recent_requests,
        flint.request_summary TO app;});

# What flint_verify_key answers: 'ok', or its SQLSTATE and DETAIL.
$node->safe_psql('postgres', q{
    CREATE FUNCTION try_verify(secret text, merchant uuid) RETURNS text LANGUAGE plpgsql AS $$
    DECLARE detail text;
    BEGIN
        PERFORM flint_verify_key(secret, 'payments:read', merchant);
        RETURN 'ok';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
        RETURN SQLSTATE || '|' || detail;
    END $$;});

sub bolt_key {
    my ($name, $limits) = @_;
    my ($id, $secret) = split /\|/, $node->safe_psql('postgres',
        "SELECT key_id || '|' || secret FROM flint_create_key('$bolt', '$name', '{payments:read}')");
    $node->safe_psql('postgres', "SELECT flint_set_key_limits('$id', $limits)") if $limits;
    return ($id, $secret);
}
my (undef, $bolt_plain) = bolt_key('plain');
my (undef, $bolt_quota) = bolt_key('quota', 'remaining => 100000000');
my (undef, $bolt_rated) = bolt_key('rated', "rate_limit => 1000000, rate_window => '1 second'");
$node->safe_psql('postgres', "SELECT flint_set_merchant_limits('$bolt', 1000000, '1 second')");
my (undef, $acme_admin) = make_key($node, '{keys:write,payments:read}');

# Bolt at full speed: two sessions, each verifying `n` times with each of
# Bolt's keys (flint_verify_key raises on any refusal, and one error fails
# the whole statement). Returns (verifications that succeeded, seconds).
sub bolt_full_speed {
    my ($n) = @_;
    my $start = time;
    my @runs;
    for (1 .. 2) {
        my ($out, $err) = ('', '');
        my $sql = join(' + ', map {
            "(SELECT count(*) FROM generate_series(1, $n) AS i, "
              . "LATERAL flint_verify_key('$_' || left(i::text, 0), 'payments:read', '$bolt') AS v WHERE v IS NOT NULL)"
        } $bolt_plain, $bolt_quota, $bolt_rated);
        push @runs, [IPC::Run::start(['psql', '-X', '-At', '-d', $node->connstr('postgres'), '-c', "SELECT $sql"],
            '>', \$out, '2>', \$err), \$out, \$err];
    }
    my $ok = 0;
    for my $r (@runs) {
        $r->[0]->finish;
        $ok += ${ $r->[1] } =~ /^(\d+)/ ? $1 : 0;
        diag 'Bolt: ' . ${ $r->[2] } if ${ $r->[2] };
    }
    return ($ok, time - $start);
}
my $refused = sub { $node->safe_psql('postgres', 'SELECT refused FROM flint_log_status()') };
sub flushed_in_bounded_time {
    my ($what) = @_;
    my $start = time;
    my ($rc, undef, $err) = $node->psql('postgres', 'SELECT flint_flush_log()');
    is($rc, 0, "$what: flint_flush_log returns") or diag $err;
    cmp_ok(time - $start, '<', 30, "$what: the log drained in bounded time");
}
# Bolt's verifications while `attack` runs (a code ref started before, stopped after).
sub bolt_survives {
    my ($what, $n) = @_;
    my $before = $refused->();
    my ($ok, $secs) = bolt_full_speed($n);
    is($ok, 6 * $n, sprintf('%s: all %d of Bolt\'s verifications succeeded (%.1f s)', $what, 6 * $n, $secs));
    is($refused->() - $before, 0, "$what: none refused for a full queue");
}

# Acme's keys with a quota, made by the DBA (limits are an admin's).
sub acme_quota_keys {
    my ($count, $remaining) = @_;
    return split /\n/, $node->safe_psql('postgres', qq{
        SELECT k.key_id || '|' || k.secret
          FROM generate_series(1, $count) g,
               LATERAL flint_create_key('$acme', 'q' || g, '{payments:read}') k,
               LATERAL flint_set_key_limits(k.key_id, remaining => $remaining) l});
}

# Acme's calls in the background, as the tenant makes them (SQL from a
# file: IPC::Run would feed a scalar only when the harness is pumped).
my $sql_files = 0;
sub acme_background {
    my ($sql) = @_;
    my $file = PostgreSQL::Test::Utils::tempdir() . '/acme' . ++$sql_files . '.sql';
    PostgreSQL::Test::Utils::append_to_file($file, $sql);
    my ($out, $err) = ('', '');
    my $h = IPC::Run::start(['psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-f', $file],
        '>', \$out, '2>', \$err);
    return [$h, \$out, \$err];
}
sub finish_all {
    my $sum = 0;
    for (@_) {
        $_->[0]->finish;
        $sum += ${ $_->[1] } =~ /(\d+)\s*$/ ? $1 : 0;
        diag 'Acme: ' . substr(${ $_->[2] }, 0, 300) if ${ $_->[2] };
    }
    return $sum;
}

# 1. Quota leases and row locks: Acme's application holds row locks on 150
# of its own quota keys (flint_update_key in an idle context), then uses
# each once. The worker skips locked keys (SKIP LOCKED) instead of waiting
# 100 ms for each before every batch.
{
    my @keys = acme_quota_keys(150, 1000000);
    my $locker = $node->background_psql('postgres');
    $locker->query_safe("SET ROLE app; BEGIN; SELECT count(*) FROM flint_authenticate('$acme_admin');");
    $locker->query_safe(join(';', map { my ($id) = split /\|/; "SELECT count(*) FROM flint_update_key('$id', name => 'locked')" } @keys));
    # Each call waits flint.log_queue_wait (1 s) for units that never come:
    # six sessions of 25 keys, while Bolt verifies. In 1.2 each outstanding
    # request cost the worker 100 ms before every batch, for good.
    my @acme_calls;
    for my $part (0 .. 5) {
        my @mine = @keys[$part * 25 .. $part * 25 + 24];
        my $secrets = join(',', map { my (undef, $s) = split /\|/; "'$s'" } @mine);
        push @acme_calls, acme_background("SELECT count(*) FILTER (WHERE c.code = 'usage_exceeded') FROM unnest(ARRAY[$secrets]) s, "
            . "LATERAL flint_check_key(s, 'payments:read', '$acme') c;");
    }
    sleep 2;
    bolt_survives('quota keys locked by their merchant', 20000);
    is(finish_all(@acme_calls), 150, 'Acme\'s own calls on its locked keys got no units (its own usage_exceeded)');
    flushed_in_bounded_time('quota keys locked');
    $locker->query_safe('COMMIT');
    $locker->quit;
    my (undef, $one) = split /\|/, $keys[0];
    is($node->safe_psql('postgres', "SELECT (flint_check_key('$one', 'payments:read', '$acme')).ok"), 't',
        'once the locks are gone, the key is leased units again');
}

# 2. The same stall with no lock: 1,400 keys (within Acme's share of the
# quota table) with a quota of 1,000 (below half of flint.quota_lease), used
# round-robin, so that every call asks for a top-up. One lease transaction a
# pass serves them all, and a key whose table is empty asks no more.
{
    my @keys = acme_quota_keys(1400, 1000);
    my $secrets = join(',', map { my (undef, $s) = split /\|/; "'$s'" } @keys);
    my $acme_calls = acme_background(qq{
        SELECT coalesce(string_agg(code || ' ' || n, ', '), '') || ';' || coalesce(sum(n) FILTER (WHERE code = 'ok'), 0)
          FROM (SELECT coalesce(c.code, 'ok') AS code, count(*) AS n
                  FROM generate_series(1, 3) r, unnest(ARRAY[$secrets]) s,
                       LATERAL flint_check_key(s || left(r::text, 0), 'payments:read', '$acme') c GROUP BY 1) x;});
    sleep 0.5;
    bolt_survives('1,400 quota keys asking for top-ups', 20000);
    $acme_calls->[0]->finish;
    is(${ $acme_calls->[1] } =~ /;(\d+)$/m ? $1 : 0, 4200, 'every one of Acme\'s round-robin calls succeeded too')
        or diag 'Acme got: ' . ${ $acme_calls->[1] };
    flushed_in_bounded_time('top-ups');
}

# Small tables from here, so that one merchant fills its share in seconds:
# a share is 10% (flint.merchant_share's default) of 1,024 entries.
$node->append_conf('postgresql.conf', "flint.rate_limit_slots = 1024\nflint.quota_slots = 1024\n");
$node->restart;
wait_for_worker($node);

# 3. One merchant fills the quota table: Acme's keys with a quota, each used
# once, hold leased units. Past its share (10% of 1,024 entries) Acme gets
# its own error; Bolt's new quota key still works.
{
    my @keys = acme_quota_keys(200, 1000000);
    my $secrets = join(',', map { my (undef, $s) = split /\|/; "'$s'" } @keys);
    my @codes = split /\n/, $node->safe_psql('postgres', "SELECT try_verify(s, '$acme') FROM unnest(ARRAY[$secrets]) s");
    my @over = grep { /^FK010\|This merchant's keys hold their whole share of this server's quota table/ } @codes;
    cmp_ok(scalar @over, '>', 0, sprintf('Acme past its share of the quota table: %d of its calls got its own usage_exceeded', scalar @over));
    is(scalar(grep { /^ok$/ } @codes) + scalar @over, 200, 'every other call of Acme succeeded');
    my (undef, $new_quota) = bolt_key('new quota', 'remaining => 10');
    is($node->safe_psql('postgres', "SELECT coalesce(code, 'ok') FROM flint_check_key('$new_quota', 'payments:read', '$bolt')"),
        'ok', 'a new quota key of Bolt gets an entry');
    bolt_survives('quota table share', 5000);
}

# 4. One merchant fills the rate-limit table: 200 keys limited to one call a
# day, each used once (its bucket stays spent for a day).
{
    my @keys = split /\n/, $node->safe_psql('postgres', qq{
        SELECT k.secret FROM generate_series(1, 200) g,
               LATERAL flint_create_key('$acme', 'r' || g, '{payments:read}') k,
               LATERAL flint_set_key_limits(k.key_id, rate_limit => 1, rate_window => '1 day') l});
    my $secrets = join(',', map { "'$_'" } @keys);
    my @codes = split /\n/, $node->safe_psql('postgres', "SELECT try_verify(s, '$acme') FROM unnest(ARRAY[$secrets]) s");
    my @over = grep { /^FK009\|This merchant's keys hold their whole share of this server's rate-limit table/ } @codes;
    cmp_ok(scalar @over, '>', 0, sprintf('Acme past its share of the rate-limit table: %d calls got its own rate_limited', scalar @over));
    my (undef, $new_rated) = bolt_key('new rated', "rate_limit => 5, rate_window => '1 minute'");
    is($node->safe_psql('postgres', "SELECT coalesce(code, 'ok') FROM flint_check_key('$new_rated', 'payments:read', '$bolt')"),
        'ok', 'a new rate-limited key of Bolt gets a bucket');
    bolt_survives('rate-limit table share (and Bolt\'s merchant limit)', 5000);
}

# 5. A DBA's purge while a reader has the log open. The purge waits at most
# 100 ms per try for its lock, keeps the busy partition (a WARNING), and the
# worker's inserts are never queued behind it.
{
    $node->safe_psql('postgres', q{CREATE TABLE flint.request_log_20200101 PARTITION OF flint.request_log
                                   FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-01-02 00:00+00')});
    my $reader = $node->background_psql('postgres');
    $reader->query_safe("SET ROLE app; BEGIN; SELECT count(*) FROM flint_authenticate('$acme_admin'); SELECT count(*) FROM flint.request_log;");
    my $start = time;
    my ($rc, $dropped, $err) = $node->psql('postgres', "SELECT flint_purge_request_log('7 days')");
    is($rc, 0, 'the purge returns while a reader holds the log');
    cmp_ok(time - $start, '<', 5, 'promptly');
    is($dropped, 0, 'having dropped nothing');
    like($err, qr/request_log_20200101 of the request log is in use by other sessions and was kept/, 'a WARNING names the kept partition');
    bolt_survives('purge during a reader', 10000);
    $reader->query_safe('COMMIT');
    $reader->quit;
    is($node->safe_psql('postgres', "SELECT flint_purge_request_log('7 days')"), 1, 'with the reader gone, the purge drops it');

    # The purge in a DBA's transaction that stays open: its lock on the log
    # holds up every insert. The worker spools the rows instead of refusing.
    $node->safe_psql('postgres', q{CREATE TABLE flint.request_log_20200102 PARTITION OF flint.request_log
                                   FOR VALUES FROM ('2020-01-02 00:00+00') TO ('2020-01-03 00:00+00')});
    $node->safe_psql('postgres', 'SELECT flint_flush_log()');
    my $rows_before = $node->safe_psql('postgres', "SELECT count(*) FROM flint.request_log WHERE merchant_id = '$bolt'");
    my $dba = $node->background_psql('postgres');
    $dba->query_safe("BEGIN; SELECT flint_purge_request_log('7 days');");
    bolt_survives('a purge left open in a transaction', 10000);
    cmp_ok($node->safe_psql('postgres', 'SELECT spooled FROM flint_log_status() LIMIT 1'), '>', 0,
        'meanwhile the rows wait in the durable spool');
    $dba->query_safe('COMMIT');
    $dba->quit;
    flushed_in_bounded_time('purge left open');
    is($node->safe_psql('postgres', "SELECT count(*) FROM flint.request_log WHERE merchant_id = '$bolt'") - $rows_before,
        60000, 'every one of those verifications is a row, once');
    is($node->safe_psql('postgres', 'SELECT spooled FROM flint_log_status() LIMIT 1'), 0, 'and the spool is empty again');
}

# The crash-loss bound with the spool in use: a lock on the log holds up
# every insert, Bolt verifies, the rows go to the spool; then a crash
# (kill -9 of the lock holder's backend). The spooled rows survive it and are
# inserted once; at most the ring and two batches are lost.
{
    $node->safe_psql('postgres', 'SELECT flint_flush_log()');
    my $rows_before = $node->safe_psql('postgres', "SELECT count(*) FROM flint.request_log WHERE merchant_id = '$bolt'");
    my $dba = $node->background_psql('postgres', on_error_stop => 0);
    my $dba_pid = $dba->query_safe('SELECT pg_backend_pid()');
    $dba->query_safe('BEGIN; LOCK TABLE flint.request_log IN ACCESS EXCLUSIVE MODE;');
    bolt_survives('the log locked by a DBA', 10000);
    my $spooled = $node->safe_psql('postgres', 'SELECT spooled FROM flint_log_status() LIMIT 1');
    cmp_ok($spooled, '>', 0, "$spooled rows wait in the spool");
    kill 'KILL', $dba_pid;
    $node->poll_query_until('postgres', 'SELECT true') or die 'server did not come back';
    wait_for_worker($node);
    flushed_in_bounded_time('after the crash');
    my $rows = $node->safe_psql('postgres', "SELECT count(*) FROM flint.request_log WHERE merchant_id = '$bolt'") - $rows_before;
    cmp_ok($rows, '>=', $spooled, "the spooled rows survived the crash ($rows of 60000 verifications are rows)");
    cmp_ok(60000 - $rows, '<=', 16384 + 2 * 10000, 'at most the ring and two batches were lost');
    is($node->safe_psql('postgres', q{SELECT count(*) FROM (SELECT backend_pid, at, key_id FROM flint.request_log
                                       GROUP BY 1, 2, 3 HAVING count(*) > 1) d}), 0, 'no row was inserted twice');
    eval { $dba->quit };
}

# 6. session_replication_role = replica (a data-fix session, pg_restore
# --disable-triggers): a revoke still reaches every backend's key cache,
# and is an event.
{
    my ($key, $secret) = make_key($node, '{payments:read}');
    my $pooled = $node->background_psql('postgres', on_error_stop => 0);
    is($pooled->query_safe("SELECT flint_verify_key('$secret', 'payments:read', '$acme') = '$key'"), 't',
        'a pooled backend has the key in its cache');
    $node->safe_psql('postgres', "SET session_replication_role = replica; SELECT flint_revoke_key('$key', 'data fix')");
    $pooled->query("SELECT flint_verify_key('$secret', 'payments:read', '$acme')");
    like($pooled->{stderr}, qr/revoked/, 'the revoke made under replica role refuses the key in the pooled backend');
    is($node->safe_psql('postgres', "SELECT event FROM flint.key_events WHERE key_id = '$key' ORDER BY id DESC LIMIT 1"),
        'revoked', 'and it is a key event');
    # A merchant suspended the same way: the pooled backend refuses its keys too.
    $pooled->quit;
    $pooled = $node->background_psql('postgres', on_error_stop => 0);
    my ($bolt_id, $bolt_secret) = bolt_key('to suspend');
    is($pooled->query_safe("SELECT flint_verify_key('$bolt_secret', 'payments:read', '$bolt') = '$bolt_id'"), 't',
        'a Bolt key is cached in the pooled backend');
    $node->safe_psql('postgres', "SET session_replication_role = replica; UPDATE flint.merchants SET status = 'suspended' WHERE id = '$bolt'");
    $pooled->query("SELECT flint_verify_key('$bolt_secret', 'payments:read', '$bolt')");
    like($pooled->{stderr}, qr/suspended/, 'a suspension made under replica role refuses the merchant\'s keys at once');
    $node->safe_psql('postgres', "UPDATE flint.merchants SET status = 'active' WHERE id = '$bolt'");
    $pooled->quit;
}

# 8. The key-events channel is a wake-up: the payload is an event id. A
# listening tenant learns no key or merchant id, and reading the event
# shows it only its own merchant's events.
{
    my $listener = $node->background_psql('postgres');
    $listener->query_safe("SET ROLE app; LISTEN flint_key_events");
    my ($victim) = bolt_key('victim');
    $node->safe_psql('postgres', "SELECT flint_disable_key('$victim', 'fraud')");
    my $got = $listener->query_safe('SELECT 1');
    my @payloads = $got =~ /Asynchronous notification "flint_key_events" with payload "([^"]*)" received/g;
    cmp_ok(scalar @payloads, '>=', 2, 'the listener is woken for Bolt\'s events');
    is(scalar(grep { !/^\d+$/ } @payloads), 0, 'every payload is a bare event id');
    unlike($got, qr/\Q$victim\E|\Q$bolt\E/, 'no key id or merchant id of Bolt reaches Acme');
    my $seen = $listener->query_safe("BEGIN; SELECT count(*) FROM flint_authenticate('$acme_admin'); "
        . "SELECT count(*) FROM flint.key_events WHERE id IN (" . join(',', @payloads) . "); COMMIT;");
    like($seen, qr/^1\n0$/m, 'reading those events in Acme\'s context shows none of them');
    # A forged notification in the old shape misleads nobody: it names no event.
    $node->safe_psql('postgres', qq{SELECT pg_notify('flint_key_events', '{"key_id":"$victim","event":"revoked"}')});
    is($node->safe_psql('postgres', "SELECT status FROM flint.key_info WHERE key_id = '$victim'"), 'disabled',
        'a forged notification changes nothing');
    $listener->quit;
}

# Refused verifications: no server-log ERROR line per call, one summary.
{
    my $offset = -s $node->logfile;
    $node->psql('postgres', "SELECT flint_verify_key('fk_live_' || repeat('x', 33), 'payments:read', '$acme')") for 1 .. 20;
    ok($node->wait_for_log(qr/flint_keys: \d+ verifications refused in the last 1 s \(.*malformed_key \d+/, $offset),
        'the worker sums up the refusals in one line');
    my $log = slurp_file($node->logfile, $offset);
    my $lines = () = $log =~ /ERROR:  malformed_key/g;
    cmp_ok($lines, '<', 20, "not one ERROR line per refused call ($lines)");
    $node->safe_psql('postgres', 'ALTER SYSTEM SET flint.log_refusals = on; SELECT pg_reload_conf()');
}

# 9. A standby's forwarding connection string with a typo: flint_log_status()
# (readable by pg_monitor) never quotes it. The same pair shows case 6 on a
# standby: a revoke made under session_replication_role = replica on the
# primary refuses the key in a standby session that had it cached.
{
    my $primary = PostgreSQL::Test::Cluster->new('fair_primary');
    $primary->init(allows_streaming => 1);
    $primary->append_conf('postgresql.conf', "shared_preload_libraries = 'flint_keys'\nflint.database = 'postgres'\n");
    $primary->start;
    $primary->safe_psql('postgres', "CREATE EXTENSION flint_keys; INSERT INTO flint.merchants (id, name) VALUES ('$acme', 'Acme')");
    my ($key, $secret) = make_key($primary, '{payments:read}');
    $primary->backup('base');
    my $standby = PostgreSQL::Test::Cluster->new('fair_standby');
    $standby->init_from_backup($primary, 'base', has_streaming => 1);
    $standby->append_conf('postgresql.conf', q{flint.primary_conninfo = 'postgresql://forwarder:Sup3r%zzS3cret@localhost/postgres'});
    $standby->start;
    $primary->wait_for_catchup($standby);

    my $pooled = $standby->background_psql('postgres', on_error_stop => 0);
    is($pooled->query_safe("SELECT flint_verify_key('$secret', 'payments:read', '$acme') = '$key'"), 't',
        'a standby session has the key cached');
    $primary->safe_psql('postgres', "SET session_replication_role = replica; SELECT flint_revoke_key('$key', 'data fix')");
    $primary->wait_for_catchup($standby);
    $pooled->query("SELECT flint_verify_key('$secret', 'payments:read', '$acme')");
    like($pooled->{stderr}, qr/revoked/, 'the standby session refuses it once the revoke is replayed');
    $pooled->quit;

    $standby->poll_query_until('postgres',
        q{SELECT primary_connection LIKE 'unreachable%' FROM flint_log_status() WHERE role = 'standby'})
      or diag 'the forwarder did not report its connection';
    my $status = $standby->safe_psql('postgres', q{SELECT primary_connection FROM flint_log_status() WHERE role = 'standby'});
    unlike($status, qr/Sup3r|zzS3|S3cret/, "no part of the password in the status: $status");
    like($status, qr/could not be parsed/, 'the status says what is wrong');
    $standby->stop;
    $primary->stop;
}

done_testing();
