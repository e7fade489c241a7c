// The CONTEXT of an error a user sees: the call stack of PL/pgSQL and SQL
// functions it passed through. Internal helpers (schema flint, names that
// start with an underscore) are implementation; an error should read as if
// the public function the user called raised it.
#pragma once

namespace flint {

// Removes, in place, every line of a CONTEXT text that names an internal
// helper ("flint._"): its own frame and the "SQL statement" that called it.
// Lines are separated by '\n'; the others keep their order.
void drop_internal_frames(char *context);

} // namespace flint
