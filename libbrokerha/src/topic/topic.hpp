// SPDX-License-Identifier: Apache-2.0
#pragma once
// Topic names and topic filters (MQTT 5.0 section 4.7, 3.1.1 section 4.7).
//
// Strings reaching these functions are already well-formed UTF-8 (the codec checks that);
// these functions check only the topic rules. No allocation, no exceptions.
//
//  - A topic name is non-empty and has no wildcard characters.
//  - A topic filter is non-empty; '+' occupies a whole level; '#' occupies a whole level and
//    is the last one.
//  - "$share/{group}/{filter}" is a shared subscription: the group is non-empty and has none
//    of '/', '+', '#'; the filter is a valid, non-empty, non-shared filter.
//  - Topics beginning with '$' are not matched by a filter whose first level is a wildcard.

#include <string_view>

namespace brokerha::topic {

/// True when `name` is a valid topic name for a PUBLISH (non-empty, no '+' or '#').
bool is_valid_name(std::string_view name) noexcept;

/// True when `filter` is a valid topic filter, including the "$share/{group}/{filter}" form.
bool is_valid_filter(std::string_view filter) noexcept;

/// True when `filter` contains a '+' or '#' level.
bool has_wildcard(std::string_view filter) noexcept;

/// A "$share/{group}/{filter}" subscription split into its parts (views into the input).
struct SharedFilter {
  std::string_view group;
  std::string_view filter;
};

/// True when `filter` starts with "$share/"; fills `out` when the group and filter parts are
/// present (is_valid_filter() decides whether they are valid).
bool parse_shared(std::string_view filter, SharedFilter& out) noexcept;

/// True when the (non-shared) `filter` matches the topic name `topic`. Both must be valid.
bool matches(std::string_view filter, std::string_view topic) noexcept;

/// True for a shared subscription's full filter ("$share/{group}/{filter}"), valid or not.
inline bool is_shared(std::string_view filter) noexcept {
  return filter.size() >= 7 && filter.compare(0, 7, "$share/") == 0;
}

/// True for topics that stay on the node that published them: `$SYS/...` (each node's own
/// statistics) is never forwarded to or replicated on other nodes.
inline bool is_node_local(std::string_view topic) noexcept {
  return topic.size() >= 4 && topic.compare(0, 4, "$SYS") == 0 &&
         (topic.size() == 4 || topic[4] == '/');
}

}  // namespace brokerha::topic
