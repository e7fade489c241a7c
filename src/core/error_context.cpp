#include "error_context.hpp"

#include <cstring>

namespace flint {

void drop_internal_frames(char *context) {
    if (!context || !std::strstr(context, "flint._"))
        return; // the usual case: nothing to copy
    char *out = context;
    const char *line = context;
    bool first = true;
    while (*line) {
        const char *end = std::strchr(line, '\n');
        const std::size_t len = end ? static_cast<std::size_t>(end - line) : std::strlen(line);
        const char *hit = std::strstr(line, "flint._");
        const bool internal = hit && hit < line + len;
        if (!internal) {
            if (!first)
                *out++ = '\n';
            std::memmove(out, line, len);
            out += len;
            first = false;
        }
        line += len + (end ? 1 : 0);
    }
    *out = '\0';
}

} // namespace flint
