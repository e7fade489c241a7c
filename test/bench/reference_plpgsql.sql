-- The baseline to beat: API-key verification written the way a team would
-- write it by hand, in PL/pgSQL with pgcrypto. Same semantics as
-- flint_verify_key (shape, lookup, digest compare, revoked, expired,
-- suspended, merchant, scope with write-implies-read and wildcards) and a
-- request-log INSERT in the caller's transaction. A benchmark baseline only:
-- not part of the extension (its log rows vanish on rollback; the error it
-- raises aborts its own log insert).
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE SCHEMA IF NOT EXISTS ref;

CREATE TABLE ref.merchants (id uuid PRIMARY KEY, status text NOT NULL DEFAULT 'active');
CREATE TABLE ref.keys (
    id          uuid PRIMARY KEY,
    merchant_id uuid NOT NULL REFERENCES ref.merchants (id),
    secret_hash bytea NOT NULL UNIQUE,
    scopes      text[] NOT NULL,
    expires_at  timestamptz,
    revoked_at  timestamptz,
    last_used_at timestamptz
);
CREATE TABLE ref.request_log (
    id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), key_id uuid,
    merchant_id uuid, requested_merchant uuid, scope text, outcome text NOT NULL
);

CREATE FUNCTION ref.verify_key(secret text, wanted_scope text, merchant uuid) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    k ref.keys;
    m_status text;
    outcome text := 'ok';
    resource text := split_part(wanted_scope, ':', 1);
    action text := split_part(wanted_scope, ':', 2);
BEGIN
    IF secret IS NULL OR secret !~ '^fk_(live|test)_[0-9A-Za-z]{61}$' THEN
        outcome := 'malformed_key';
    ELSE
        SELECT * INTO k FROM ref.keys WHERE secret_hash = digest(secret, 'sha256');
        IF NOT FOUND THEN
            outcome := 'invalid_key';
        ELSIF k.revoked_at IS NOT NULL THEN
            outcome := 'key_revoked';
        ELSIF k.expires_at <= now() THEN
            outcome := 'key_expired';
        ELSE
            SELECT status INTO m_status FROM ref.merchants WHERE id = k.merchant_id;
            IF m_status <> 'active' THEN
                outcome := 'merchant_suspended';
            ELSIF k.merchant_id IS DISTINCT FROM merchant THEN
                outcome := 'wrong_merchant';
            ELSIF NOT (wanted_scope = ANY (k.scopes) OR (resource || ':*') = ANY (k.scopes)
                       OR (action = 'read' AND (resource || ':write') = ANY (k.scopes))) THEN
                outcome := 'missing_scope';
            END IF;
        END IF;
    END IF;
    INSERT INTO ref.request_log (key_id, merchant_id, requested_merchant, scope, outcome)
    VALUES (k.id, k.merchant_id, merchant, wanted_scope, outcome);
    IF outcome <> 'ok' THEN
        RAISE EXCEPTION '%', outcome USING ERRCODE = 'P0001';
    END IF;
    UPDATE ref.keys SET last_used_at = now() WHERE id = k.id;
    RETURN k.id;
END
$$;
