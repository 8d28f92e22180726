// SPDX-License-Identifier: Apache-2.0
#include "topic/topic.hpp"

#include "util/chars.hpp"

namespace brokerha::topic {

namespace {

constexpr std::string_view kSharePrefix = "$share/";

bool is_valid_plain_filter(std::string_view filter) noexcept {
  if (filter.empty()) return false;
  std::size_t start = 0;
  for (;;) {
    std::size_t end = filter.find('/', start);
    const bool last = end == std::string_view::npos;
    if (last) end = filter.size();
    const std::string_view level = filter.substr(start, end - start);
    if (level.size() != 1 || (level[0] != '+' && level[0] != '#')) {
      if (util::contains_any(level, "+#")) return false;
    } else if (level[0] == '#' && !last) {
      return false;
    }
    if (last) return true;
    start = end + 1;
  }
}

}  // namespace

bool is_valid_name(std::string_view name) noexcept {
  return !name.empty() && !util::contains_any(name, "+#");
}

bool parse_shared(std::string_view filter, SharedFilter& out) noexcept {
  if (filter.substr(0, kSharePrefix.size()) != kSharePrefix) return false;
  const std::string_view rest = filter.substr(kSharePrefix.size());
  const std::size_t slash = rest.find('/');
  if (slash == std::string_view::npos) {
    out = {rest, {}};
  } else {
    out = {rest.substr(0, slash), rest.substr(slash + 1)};
  }
  return true;
}

bool is_valid_filter(std::string_view filter) noexcept {
  SharedFilter shared;
  if (!parse_shared(filter, shared)) return is_valid_plain_filter(filter);
  if (shared.group.empty() || util::contains_any(shared.group, "/+#")) {
    return false;
  }
  return filter.size() > kSharePrefix.size() + shared.group.size() &&
         is_valid_plain_filter(shared.filter);
}

bool has_wildcard(std::string_view filter) noexcept { return util::contains_any(filter, "+#"); }

bool matches(std::string_view filter, std::string_view topic) noexcept {
  if (!topic.empty() && topic[0] == '$' && !filter.empty() &&
      (filter[0] == '+' || filter[0] == '#')) {
    return false;
  }
  constexpr auto npos = std::string_view::npos;
  const std::size_t topic_end = topic.size();
  std::size_t fi = 0;
  std::size_t ti = 0;  // topic_end + 1 once the topic has no more levels
  for (;;) {
    std::size_t fe = filter.find('/', fi);
    const bool filter_last = fe == npos;
    if (filter_last) fe = filter.size();
    const std::string_view level = filter.substr(fi, fe - fi);
    if (level == "#") return true;  // also matches the parent level ("a/#" matches "a")
    if (ti > topic_end) return false;
    std::size_t te = topic.find('/', ti);
    const bool topic_last = te == npos;
    if (topic_last) te = topic_end;
    if (level != "+" && level != topic.substr(ti, te - ti)) return false;
    if (filter_last) return topic_last;
    fi = fe + 1;
    ti = topic_last ? topic_end + 1 : te + 1;
  }
}

}  // namespace brokerha::topic
