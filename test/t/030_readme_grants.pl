# The README's "Roles and GRANTs" block, as written, is all an application
# needs: run it on a fresh server, then use every form the README tells the
# application to call (the traffic-control forms with client_ip and cost, a
# context, key_info, the request log, a key's rate-limit state), and nothing
# beyond it (#22 item 7: the 3-argument GRANTs alone gave "permission denied").
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FlintNode;

my $acme = 'aaaaaaaa-0000-0000-0000-000000000001';
my $node = flint_node('readme_grants');
my $readme = slurp_file("$ENV{FLINT_SRC}/README.md");
my ($block) = $readme =~ /## Roles and GRANTs\n.*?```sql\n(.*?)```/s;
ok(defined $block, "the README has the Roles and GRANTs block");
# The block's protected table and database are the README's "payments".
$node->safe_psql('postgres', q{
    CREATE TABLE payments (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), merchant_id uuid NOT NULL, amount_cents int NOT NULL);
    SELECT flint_protect_table('payments', 'merchant_id', 'payments:read', 'payments:write');});
$block =~ s/ON DATABASE payments/ON DATABASE postgres/g;
my ($rc, $out, $err) = $node->psql('postgres', $block, extra_params => ['-v', 'ON_ERROR_STOP=1']);
is($rc, 0, 'the block runs as written') or diag($err);

my ($key, $secret) = make_key($node, '{payments:write}');
$node->safe_psql('postgres', qq{SELECT flint_set_key_limits('$key', rate_limit => 100, rate_window => '1 minute',
                                                         allowed_ips => '{203.0.113.0/24}')});
my $as_app = sub { $node->psql('postgres', "SET ROLE checkout_app;\n$_[0]", extra_params => ['-v', 'ON_ERROR_STOP=1']) };
($rc, $out, $err) = $as_app->(qq{
    SELECT code FROM flint_check_key('$secret', 'payments:read', '$acme', '203.0.113.5', 2);
    SELECT flint_verify_key('$secret', 'payments:read', '$acme', '203.0.113.5', 1) = '$key';
    SELECT code FROM flint_check_key('$secret', 'payments:read', '$acme', '198.51.100.1', 1);
    BEGIN;
    SELECT count(*) FROM flint_authenticate('$secret', '203.0.113.5', 1);
    INSERT INTO payments (merchant_id, amount_cents) VALUES ('$acme', 500);
    SELECT count(*) || ' ' || min(status) FROM flint.key_info;
    SELECT applies_to || ' ' || tokens FROM flint_rate_limit_state('$key');
    COMMIT;});
is($rc, 0, 'the application calls the client_ip and cost forms, a context, key_info and the rate-limit state') or diag($err);
is($out, "\nt\nip_not_allowed\n1\n1 active\nkey 97",
   'with the answers those calls give (3 of 100 tokens spent: one a call, the refused one none)');
$node->safe_psql('postgres', 'SELECT flint_flush_log()');
($rc, $out, $err) = $as_app->(qq{BEGIN; SELECT count(*) FROM flint_authenticate('$secret', '203.0.113.5', 0);
    SELECT count(*) FROM flint.request_log WHERE backend_pid <> pg_backend_pid(); COMMIT;});
is($out, "1\n5", 'and reads its merchant\'s request log in a context (the four calls and the guarded write of the session before; the row of this call may land meanwhile)');
($rc, $out, $err) = $as_app->(qq{SELECT flint_set_key_limits('$key', rate_limit => 1000)});
like($err, qr/permission denied for function flint_set_key_limits/, 'nothing beyond the block: limits stay with admins');
($rc, $out, $err) = $as_app->(q{SELECT secret_hash FROM flint.api_keys});
like($err, qr/permission denied/, 'and no secret hashes');
done_testing();
