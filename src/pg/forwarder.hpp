// The standby's log forwarder (forwarder.cpp).
#pragma once
#include "pg_includes.hpp"

namespace flint::pg {

// _PG_init (while preloading): registers the forwarder with the postmaster.
void forwarder_register();

} // namespace flint::pg
