#include "scopes.hpp"

#include <algorithm>

namespace flint {

namespace {
bool valid_part(std::string_view part) {
    if (part.empty() || !(part[0] >= 'a' && part[0] <= 'z'))
        return false;
    return std::all_of(part.begin(), part.end(),
                       [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; });
}
} // namespace

bool parse_scope(std::string_view text, ScopeName &out) {
    if (text.empty() || text.size() > 63)
        return false;
    size_t colon = text.find(':');
    if (colon == std::string_view::npos)
        return false;
    std::string_view resource = text.substr(0, colon);
    std::string_view action = text.substr(colon + 1);
    if (!valid_part(resource) || !(action == "*" || valid_part(action)))
        return false;
    out = {resource, action};
    return true;
}

bool scope_grants(const std::vector<std::string> &held, std::string_view wanted) {
    ScopeName want;
    if (!parse_scope(wanted, want) || want.action == "*")
        return false;
    for (const std::string &h : held) {
        ScopeName have;
        if (!parse_scope(h, have) || have.resource != want.resource)
            continue;
        if (have.action == "*" || have.action == want.action || (have.action == "write" && want.action == "read"))
            return true;
    }
    return false;
}

bool scopes_cover(const std::vector<std::string> &held, std::string_view wanted) {
    ScopeName want;
    if (!parse_scope(wanted, want))
        return false;
    if (want.action != "*")
        return scope_grants(held, wanted);
    for (const std::string &h : held) {
        ScopeName have;
        if (parse_scope(h, have) && have.resource == want.resource && have.action == "*")
            return true;
    }
    return false;
}

bool scope_in_catalog(const std::vector<std::string> &catalog, std::string_view scope) {
    ScopeName want;
    if (!parse_scope(scope, want))
        return false;
    for (const std::string &entry : catalog) {
        if (entry == scope)
            return true;
        ScopeName have;
        if (want.action == "*" && parse_scope(entry, have) && have.resource == want.resource)
            return true;
    }
    return false;
}

bool requestable_scope(const std::vector<std::string> &catalog, std::string_view scope) {
    // A concrete scope is in the catalog only as itself: one parse, then a lookup.
    ScopeName shape;
    return parse_scope(scope, shape) && shape.action != "*" &&
           std::find(catalog.begin(), catalog.end(), scope) != catalog.end();
}

size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j)
        row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t above = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diagonal = above;
        }
    }
    return row[b.size()];
}

std::string closest_scope(const std::vector<std::string> &catalog, std::string_view typo) {
    if (typo.size() > 200)
        return {};
    std::string best;
    size_t best_distance = 4;
    for (const std::string &entry : catalog) {
        size_t d = edit_distance(typo, entry);
        if (d < best_distance || (d == best_distance && !best.empty() && entry < best)) {
            best = entry;
            best_distance = d;
        }
    }
    return best;
}

std::string scope_suggestion(const std::vector<std::string> &catalog, std::string_view typo) {
    std::string near = closest_scope(catalog, typo);
    return near.empty() ? std::string() : "Did you mean \"" + near + "\"?";
}

} // namespace flint
