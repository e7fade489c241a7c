// The one statement that moves api_keys.last_used_at, for the log worker's
// own verifications and for a standby's forwarded ones
// (flint._receive_last_used): never earlier than what is stored, never
// ahead of this server's clock plus skew (a use in the future would pin
// last_used_at and hide every later one), and keys locked by someone else
// are skipped (their ids are not returned; the next round brings them).
// $1 uuid[], $2 timestamptz[] of the same length; returns the locked ids.
#pragma once

namespace flint::pg {

constexpr const char *kRecordLastUsedSql =
    "WITH u AS MATERIALIZED (SELECT u.id, least(u.at, now() + interval '5 minutes') AS at "
    "                          FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)), "
    "locked AS MATERIALIZED (SELECT k.id FROM flint.api_keys k WHERE k.id = ANY ($1::uuid[]) "
    "                        FOR UPDATE SKIP LOCKED), "
    "moved AS (UPDATE flint.api_keys k SET last_used_at = u.at FROM locked l JOIN u ON u.id = l.id "
    "          WHERE k.id = l.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)) "
    "SELECT id FROM locked";

} // namespace flint::pg
