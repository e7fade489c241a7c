// Scope names and the grant rules in README.md, "Keys and tokens". Postgres-free.
//
//   resource:action     e.g. payments:read
//   resource:write      also grants resource:read
//   resource:*          grants every action on resource
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace flint {

struct ScopeName {
    std::string_view resource;
    std::string_view action; // "*" for a wildcard
};

// Lower-case letters, digits and '_' on each side of one ':', each side
// starting with a letter, at most 63 characters; action may be "*".
bool parse_scope(std::string_view text, ScopeName &out);

// Does a key holding `held` pass a check for `wanted` (a concrete scope)?
bool scope_grants(const std::vector<std::string> &held, std::string_view wanted);

// Does holding `held` cover everything `wanted` would grant? Used so that a key
// can never mint or widen a key beyond its own scopes.
bool scopes_cover(const std::vector<std::string> &held, std::string_view wanted);

// Is `scope` valid against the catalog: listed there, or `resource:*` for a
// resource the catalog lists?
bool scope_in_catalog(const std::vector<std::string> &catalog, std::string_view scope);

// Can a check ask for `scope`: a concrete resource:action the catalog lists?
// (Keys may hold resource:*, checks never ask for it.)
bool requestable_scope(const std::vector<std::string> &catalog, std::string_view scope);

// The catalog entry closest to `typo` (Levenshtein), or "" when nothing is
// within a distance of 3 edits.
std::string closest_scope(const std::vector<std::string> &catalog, std::string_view typo);

// `Did you mean "payments:write"?`, or "" when nothing is close.
std::string scope_suggestion(const std::vector<std::string> &catalog, std::string_view typo);

size_t edit_distance(std::string_view a, std::string_view b);

} // namespace flint
