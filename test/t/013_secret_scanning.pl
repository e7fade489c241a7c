# The example API's secret scanning receiver (POST /secret-scanning in
# examples/payments_api/server.py) over real HTTP on loopback: GitHub's
# partner payload signed with a throwaway ECDSA P-256 key, reported through
# flint_report_leaked as the leak_receiver role. Checks the answer (one entry
# per token, in order, sha256 token hashes, labels), the revocations, events,
# request-log rows, the refusals (bad or missing signature, unknown key,
# malformed JSON, too many tokens) and that no token ever reaches the
# server's output or an HTTP response.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use IPC::Run;
use Digest::SHA qw(sha256_hex);
use MIME::Base64 qw(encode_base64);
use FlintNode;

my $src = $ENV{FLINT_SRC} or die 'FLINT_SRC must point at the source tree';
my $python = '/usr/bin/python3';
plan skip_all => 'python3-psycopg is not installed' if system($python, '-c', 'import psycopg') != 0;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $node = flint_node('scan');
$node->safe_psql('postgres', slurp_file("$src/examples/payments_api/schema.sql"));

sub key {
    my ($name) = @_;
    return split /\|/, $node->safe_psql('postgres',
        "SELECT key_id || '|' || secret FROM flint_create_key('$acme', '$name', '{payments:read}')");
}
my ($cur_id, $cur) = key('current');
my ($rot_id, $rot_old) = key('rotated');
my $rot_new = $node->safe_psql('postgres', "SELECT secret FROM flint_rotate_key('$rot_id', grace => '1 hour')");
my ($gone_id, $gone) = key('already gone');
$node->safe_psql('postgres', "SELECT flint_revoke_key('$gone_id', 'rotated out')");
my ($spare_id, $spare) = key('spare');    # reported only by refused requests, until the insecure demo
my ($wrong_id, undef) = key('wrong secret');
my $forged = $node->safe_psql('postgres', "SELECT (flint._mint_token('live', gen_random_uuid())).secret");
my $wrong = $node->safe_psql('postgres', "SELECT (flint._mint_token('live', '$wrong_id')).secret");    # real id, other secret
my $garbage = 'fk_live_this-is-not-a-token';
my @secrets = ($cur, $rot_old, $rot_new, $gone, $spare, $forged, $wrong, $garbage);
like($_, qr/^fk_live_[0-9A-Za-z]{61}$/, 'a well-formed token') for ($cur, $rot_old, $forged, $wrong);

# Throwaway scanner keys: k1 trusted from the start, k2 added later by
# rewriting the key file (the server re-reads it), k3 never trusted.
my $dir = PostgreSQL::Test::Utils::tempdir();
sub run_cmd {
    my @cmd = @_;
    my ($out, $err);
    IPC::Run::run(\@cmd, '>', \$out, '2>', \$err) or die "@cmd failed: $err";
    return $out;
}
my (%pem, %kid);
for my $k (qw(k1 k2 k3)) {
    run_cmd('openssl', 'ecparam', '-genkey', '-name', 'prime256v1', '-noout', '-out', "$dir/$k.key");
    run_cmd('openssl', 'ec', '-in', "$dir/$k.key", '-pubout', '-out', "$dir/$k.pub");
    $pem{$k} = slurp_file("$dir/$k.pub");
    $kid{$k} = sha256_hex($pem{$k});    # GitHub's identifiers are hex digests too
}
sub write_keys {
    my ($json) = @_;
    open my $fh, '>', "$dir/keys.json.tmp" or die;
    print $fh encode_json($json);
    close $fh;
    rename "$dir/keys.json.tmp", "$dir/keys.json" or die;
}
# GitHub's own format (GET /meta/public_keys/secret_scanning).
write_keys({ public_keys => [{ key_identifier => $kid{k1}, key => $pem{k1}, is_current => JSON::PP::true }] });

sub sign {
    my ($k, $body) = @_;
    open my $fh, '>:raw', "$dir/body" or die;
    print $fh $body;
    close $fh;
    run_cmd('openssl', 'dgst', '-sha256', '-sign', "$dir/$k.key", '-out', "$dir/sig", "$dir/body");
    open $fh, '<:raw', "$dir/sig" or die;
    local $/;
    my $der = <$fh>;
    close $fh;
    return encode_base64($der, '');
}

my $http = HTTP::Tiny->new(timeout => 30);
my ($server, $port, $out, $err);
my ($all_out, $all_responses) = ('', '');
# Never leave the service running, even when a test dies early.
END { eval { $server->kill_kill if $server && $server->pumpable } }

my $dsn = "host=" . $node->host . " port=" . $node->port . " dbname=postgres";
sub start_api {
    my ($receiver_dsn, @flags) = @_;
    $port = PostgreSQL::Test::Cluster::get_free_port();
    ($out, $err) = ('', '');
    local $ENV{FLINT_DSN} = "$dsn user=checkout_app";
    local $ENV{FLINT_RECEIVER_DSN} = $receiver_dsn;
    delete $ENV{FLINT_RECEIVER_DSN} unless defined $receiver_dsn;
    $server = IPC::Run::start([$python, "$src/examples/payments_api/server.py", '--port', $port, @flags],
        '>', \$out, '2>', \$err);
    for (1 .. 100) {
        last if $http->get("http://127.0.0.1:$port/ping")->{status} == 404;
        select(undef, undef, undef, 0.1);
    }
}
# The server's stderr once it matches $re (IPC::Run collects output when pumped).
sub server_err {
    my ($re) = @_;
    for (1 .. 50) {
        $server->pump_nb;
        last if $err =~ $re;
        select(undef, undef, undef, 0.1);
    }
    return $err;
}
sub stderr_like {
    my ($re, $name) = @_;
    like(server_err($re), $re, $name);
}
sub stop_api {
    $server->kill_kill;
    $server->finish;
    $all_out .= $out . $err;
}

# POST /secret-scanning; $sign_with: a key name, or undef for no signature
# headers; $opt: kid (header value), sign_body (sign these bytes instead),
# sig (header value), request_id.
sub scan {
    my ($body, $sign_with, %opt) = @_;
    my %headers = ('Content-Type' => 'application/json');
    $headers{'X-Request-Id'} = $opt{request_id} if $opt{request_id};
    if (defined $sign_with) {
        $headers{'Github-Public-Key-Identifier'} = $opt{kid} // $kid{$sign_with};
        $headers{'Github-Public-Key-Signature'} = $opt{sig} // sign($sign_with, $opt{sign_body} // $body);
    }
    my $res = $http->request('POST', "http://127.0.0.1:$port/secret-scanning", { headers => \%headers, content => $body });
    $all_responses .= join("\n", $res->{content} // '', map { "$_: $res->{headers}{$_}" } keys %{ $res->{headers} }) . "\n";
    my $json = eval { decode_json($res->{content}) };
    return ($res->{status}, $json, $res);
}
sub match {
    my ($token, $source, $type) = @_;
    return { token => $token, type => $type // 'flint_live_api_key', url => 'https://github.com/acme/app/blob/main/.env',
             source => $source };
}
sub count_of { $node->safe_psql('postgres', "SELECT flint_flush_log(); SELECT $_[0]") =~ s/.*\n//sr }
sub state_of {
    my ($id) = @_;
    return $node->safe_psql('postgres', "SELECT coalesce(revoked_reason, 'active') FROM flint.api_keys WHERE id = '$id'");
}

# 1. A signed report: the answer, the revocations, the log.
start_api("$dsn user=leak_receiver", '--scanner-public-keys', "$dir/keys.json");
my @matches = (
    match($cur, 'content'),
    match($rot_old, 'commit'),
    match($gone, 'content'),
    match($forged, 'content'),
    { token => $garbage, type => 'flint_test_api_key', source => 'issue_comment' },    # no url: optional
    match($wrong, 'commit'),
    match($cur, 'commit'),    # the same token again, found elsewhere
);
my $body = encode_json(\@matches);
my ($status, $json, $res) = scan($body, 'k1', request_id => 'scan-test-1');
is($status, 200, 'a signed report -> 200');
like($res->{headers}{'content-type'}, qr{^application/json}, 'as JSON');
is($res->{headers}{'x-request-id'}, 'scan-test-1', 'the request id is echoed');
is(ref $json, 'ARRAY', 'the answer is an array');
is(scalar @{ $json // [] }, scalar @matches, 'one entry per token');
my @want = qw(true_positive true_positive true_positive false_positive false_positive false_positive true_positive);
for my $i (0 .. $#matches) {
    my $e = $json->[$i] // {};
    is($e->{token_hash}, sha256_hex($matches[$i]{token}), "entry $i: token_hash is the token's sha256, in input order");
    is($e->{token_type}, $matches[$i]{type}, "entry $i: token_type");
    is($e->{label}, $want[$i], "entry $i: $want[$i]");
    is_deeply([sort keys %$e], [qw(label token_hash token_type)], "entry $i: nothing else");
}

is(state_of($cur_id), 'leaked via github:content', 'the current key is revoked, reason names the first source');
is(state_of($rot_id), 'leaked via github:commit', 'the rotated key is revoked through its old (grace) secret');
is(state_of($gone_id), 'rotated out', 'the already revoked key keeps its reason');
is(state_of($wrong_id), 'active', 'a forged token with a real key id revokes nothing');
is(state_of($spare_id), 'active', 'an unreported key stays active');
is($node->safe_psql('postgres', "SELECT string_agg(k.name, ',' ORDER BY k.name) FROM flint.key_events e "
        . "JOIN flint.api_keys k ON k.id = e.key_id WHERE e.event = 'leaked'"),
    'current,rotated', "event 'leaked' for exactly the two keys");
is(count_of(q{string_agg(outcome, ',' ORDER BY outcome) FROM flint.request_log WHERE source = 'report_leaked' AND request_id = 'scan-test-1'}),
    'invalid_key,invalid_key,key_revoked,key_revoked,leak_reported,leak_reported,malformed_key',
    "one request-log row per token, source 'report_leaked', with the request id");
is($node->safe_psql('postgres', "SELECT code FROM flint_check_key('$rot_new', 'payments:read', '$acme')"),
    'key_revoked', "the rotated key's new secret now fails with key_revoked");
is($node->safe_psql('postgres', "SELECT code FROM flint_check_key('$cur', 'payments:read', '$acme')"),
    'key_revoked', 'the current key fails with key_revoked');
is($node->safe_psql('postgres', "SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity "
        . "WHERE application_name <> 'psql' AND usename IN ('leak_receiver', 'checkout_app')"),
    'leak_receiver', 'the receiver connects as leak_receiver');
is($node->safe_psql('postgres', q{SELECT has_function_privilege('leak_receiver', 'flint_report_leaked(text[], text)', 'EXECUTE')
        || ',' || has_function_privilege('leak_receiver', 'flint_authenticate(text)', 'EXECUTE')
        || ',' || has_function_privilege('leak_receiver', 'flint_revoke_key(uuid, text)', 'EXECUTE')
        || ',' || has_table_privilege('leak_receiver', 'flint.api_keys', 'SELECT')
        || ',' || has_table_privilege('leak_receiver', 'payments', 'SELECT')}),
    'true,false,false,false,false', 'leak_receiver may report leaks and nothing else');
stderr_like(
    qr/secret-scanning scan-test-1: 7 token\(s\): 2 revoked now, 2 already revoked, 3 false positive\(s\); revoked keys /,
    'stderr: one summary line for the batch');
stderr_like(qr/\Q$cur_id\E/, 'naming the revoked keys by id');

my ($empty_status, $empty) = scan('[]', 'k1');
is($empty_status, 200, 'an empty report -> 200');
is_deeply($empty, [], 'with an empty answer');

# 2. Refused: nothing is reported, nothing logged.
my $log_rows = count_of(q{count(*) FROM flint.request_log WHERE source = 'report_leaked'});
my $events = $node->safe_psql('postgres', 'SELECT count(*) FROM flint.key_events');
my $spare_body = encode_json([match($spare, 'content')]);
my @refused = (
    ['a body changed after signing', $spare_body, 'k1', 401, 'bad_signature', sign_body => $spare_body . ' '],
    ['a signature by an untrusted key under a trusted id', $spare_body, 'k3', 401, 'bad_signature', kid => $kid{k1}],
    ['a signature that is not DER', $spare_body, 'k1', 401, 'bad_signature', sig => encode_base64('not a signature', '')],
    ['a signature that is not base64', $spare_body, 'k1', 401, 'bad_signature', sig => '%%%not base64%%%'],
    ['an unknown key identifier', $spare_body, 'k3', 401, 'unknown_key_identifier'],
    ['an empty key identifier', $spare_body, 'k1', 401, 'signature_required', kid => ''],
    ['no signature headers', $spare_body, undef, 401, 'signature_required'],
    ['malformed JSON', '[{"token": "' . $spare . '", "type": "x", ', 'k1', 400, 'bad_request'],
    ['not UTF-8', "[\xff]", 'k1', 400, 'bad_request'],
    ['an object instead of an array', encode_json(match($spare, 'content')), 'k1', 400, 'bad_request'],
    ['an entry that is not an object', encode_json([match($spare, 'content'), $spare]), 'k1', 400, 'bad_request'],
    ['an entry without a token', encode_json([match($spare, 'content'), { type => 'x', source => 'content' }]), 'k1', 400, 'bad_request'],
    ['a token that is not a string', encode_json([match($spare, 'content'), { %{ match($spare, 'content') }, token => [$spare] }]), 'k1', 400, 'bad_request'],
    ['an entry without a source', encode_json([{ token => $spare, type => 'x' }]), 'k1', 400, 'bad_request'],
    ['a source with a newline', encode_json([match($spare, "content\nforged: yes")]), 'k1', 400, 'bad_request'],
    ['1001 tokens', encode_json([map { match($_ == 500 ? $spare : "$garbage$_", 'content') } 1 .. 1001]), 'k1', 413, 'too_many_tokens'],
);
for my $c (@refused) {
    my ($name, $b, $k, $want_status, $want_code, %opt) = @$c;
    my ($s, $j) = scan($b, $k, %opt);
    is($s, $want_status, "$name -> $want_status");
    is(ref $j eq 'HASH' ? $j->{error}{code} : undef, $want_code, "$name -> $want_code (JSON error body)");
}
is(state_of($spare_id), 'active', 'no refused request revoked anything');
is(count_of(q{count(*) FROM flint.request_log WHERE source = 'report_leaked'}), $log_rows, 'nor left a request-log row');
is($node->safe_psql('postgres', 'SELECT count(*) FROM flint.key_events'), $events, 'nor an event');
stderr_like(qr/secret-scanning scan-\w+: refused, bad_signature/, 'refusals are noted on stderr');

# 3. GitHub rotates its keys: the rewritten file (plain map form) is picked up.
write_keys({ $kid{k2} => $pem{k2} });
($status, $json) = scan(encode_json([match($forged, 'content')]), 'k2');
is($status, 200, 'a report signed by the new key is accepted without a restart');
is($json->[0]{label}, 'false_positive', 'and answered');
($status, $json) = scan($spare_body, 'k1');
is($status, 401, 'the dropped key is no longer trusted');
is($json->{error}{code}, 'unknown_key_identifier', '-> unknown_key_identifier');
open my $broken, '>', "$dir/keys.json.tmp" or die;
print $broken '{"not": "a key"}';
close $broken;
rename "$dir/keys.json.tmp", "$dir/keys.json" or die;
($status) = scan(encode_json([match($forged, 'content')]), 'k2');
is($status, 200, 'a broken key file keeps the keys already loaded');
stderr_like(qr/keeping the loaded scanner keys/, 'and says so on stderr');
is(state_of($spare_id), 'active', 'the spare key is still active');
stop_api();

# 4. A receiver without the grant (FLINT_RECEIVER_DSN unset: FLINT_DSN's
# checkout_app) reports nothing; unsigned demo mode warns.
start_api(undef, '--scanner-insecure-no-signature');
stderr_like(qr/warning: --scanner-insecure-no-signature/, 'insecure mode warns on stderr');
($status, $json) = scan($spare_body, undef);
is($status, 500, 'without EXECUTE on flint_report_leaked: 500');
is($json->{error}{code}, 'internal_error', '-> internal_error');
is(state_of($spare_id), 'active', 'and nothing is revoked');
stderr_like(qr/InsufficientPrivilege 42501, nothing reported/, 'stderr names the missing privilege');
stop_api();

start_api("$dsn user=leak_receiver", '--scanner-insecure-no-signature');
($status, $json) = scan(encode_json([match($spare, 'demo')]), undef);
is($status, 200, 'insecure mode accepts an unsigned report');
is($json->[0]{label}, 'true_positive', 'true_positive');
is(state_of($spare_id), 'leaked via github:demo', 'and revokes');
stop_api();

# 5. Not configured: the endpoint does not exist.
start_api("$dsn user=leak_receiver");
($status, $json) = scan(encode_json([match($forged, 'content')]), 'k2');
is($status, 404, 'without --scanner-public-keys or --scanner-insecure-no-signature: 404');
is($json->{error}{code}, 'not_found', '-> not_found');
stop_api();

# 6. No token, nor its secret part, in any output or response.
ok(length($all_out) > 0 && length($all_responses) > 0, 'server output and responses were captured');
for my $t (@secrets) {
    my $secret_part = substr($t, 16);
    ok(index($all_out, $secret_part) < 0, 'no token in the server output (' . substr($t, 0, 16) . '...)');
    ok(index($all_responses, $secret_part) < 0, 'no token in any HTTP response (' . substr($t, 0, 16) . '...)');
}

$node->stop;
done_testing();
