-- The example application's schema and role (run as a superuser / the owner).
CREATE TABLE IF NOT EXISTS payments (
    id           bigserial PRIMARY KEY,
    merchant_id  uuid NOT NULL REFERENCES flint.merchants (id),
    amount_cents integer NOT NULL CHECK (amount_cents > 0),
    currency     text NOT NULL DEFAULT 'EUR',
    created_at   timestamptz NOT NULL DEFAULT now()
);
SELECT flint_protect_table('payments', 'merchant_id', read_scope => 'payments:read', write_scope => 'payments:write');

CREATE ROLE checkout_app LOGIN;  -- no BYPASSRLS: RLS applies
GRANT EXECUTE ON FUNCTION flint_authenticate(text) TO checkout_app;
GRANT SELECT, INSERT ON payments TO checkout_app;
GRANT USAGE ON SEQUENCE payments_id_seq TO checkout_app;
GRANT USAGE ON SCHEMA flint TO checkout_app;
GRANT SELECT ON flint.request_log TO checkout_app;
