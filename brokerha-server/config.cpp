// SPDX-License-Identifier: Apache-2.0
// The loader is driven by one table of keys (kKeys below): each entry knows its path, how to
// parse a YAML node into its ServerConfig field and how to render it back. The same table
// gives the env variable names, the unknown-key suggestions and the --check-config output,
// so a key added to the table is automatically loadable from file and env and printed.
//
// Where a value came from is kept per key (file:line:column or the env variable) so that
// errors found after merging (cross-field checks) still point at the right place.

#include "config.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <type_traits>

extern char** environ;

namespace brokerha::server {

namespace {

using YAML::Node;

constexpr const char* kRedacted = "<redacted>";

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string last_part(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

std::string parent_of(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? std::string() : path.substr(0, dot);
}

// The nearest candidate to `unknown`: a sibling with a similar name, else a key elsewhere
// with the same last name (a key put in the wrong section), else the nearest full path.
std::string nearest(const std::string& unknown, const std::vector<std::string>& candidates) {
  const std::string parent = parent_of(unknown);
  const std::string name = last_part(unknown);
  std::string best;
  std::size_t best_d = std::numeric_limits<std::size_t>::max();
  for (const std::string& c : candidates) {
    if (parent_of(c) != parent) continue;
    const std::size_t d = edit_distance(name, last_part(c));
    if (d < best_d) best_d = d, best = c;
  }
  if (!best.empty() && best_d <= std::max<std::size_t>(2, name.size() / 3)) return best;
  for (const std::string& c : candidates) {
    if (last_part(c) == name) return c;
  }
  best_d = std::numeric_limits<std::size_t>::max();
  for (const std::string& c : candidates) {
    if (starts_with(unknown, c + ".")) continue;  // its own section is no suggestion
    const std::size_t d = edit_distance(unknown, c);
    if (d < best_d) best_d = d, best = c;
  }
  return best;
}

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

std::string describe(const Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Null:
      return "nothing (null)";
    case YAML::NodeType::Scalar:
      return quoted(n.Scalar());
    default:
      return "an undefined value";
  }
}

bool is_ip(const std::string& s) {
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, s.c_str(), buf) == 1 || ::inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char ch) {
    return std::isdigit(static_cast<unsigned char>(ch)) != 0;
  });
}

// "host", "host:port", "[v6]:port"; with `ip_only` the host must be an IP address.
bool valid_host_port(const std::string& s, bool ip_only) {
  if (s.empty() || s.find_first_of(" \t") != std::string::npos) return false;
  std::string host = s;
  std::string port;
  if (s.front() == '[') {
    const auto close = s.find(']');
    if (close == std::string::npos) return false;
    host = s.substr(1, close - 1);
    if (close + 1 < s.size()) {
      if (s[close + 1] != ':') return false;
      port = s.substr(close + 2);
      if (port.empty()) return false;
    }
  } else if (std::count(s.begin(), s.end(), ':') == 1) {
    host = s.substr(0, s.find(':'));
    port = s.substr(s.find(':') + 1);
    if (port.empty()) return false;
  }
  if (!port.empty() &&
      (!all_digits(port) || port.size() > 5 || std::stoul(port) == 0 || std::stoul(port) > 65535)) {
    return false;
  }
  if (host.empty()) return false;
  return !ip_only || is_ip(host);
}

// MQTT topic filter syntax: `#` only as the whole last level, `+` only as a whole level.
bool valid_filter(const std::string& f) {
  if (f.empty()) return false;
  std::size_t start = 0;
  while (true) {
    const auto slash = f.find('/', start);
    const std::string level =
        f.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (level.find('#') != std::string::npos && (level != "#" || slash != std::string::npos)) {
      return false;
    }
    if (level.find('+') != std::string::npos && level != "+") return false;
    if (slash == std::string::npos) return true;
    start = slash + 1;
  }
}

bool readable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), R_OK) == 0;
}

struct Loader;

// One key of the table.
struct Key {
  std::string path;
  bool structured = false;  // a list or map: given as JSON in the environment
  std::function<void(Loader&, const Node&, const std::string& path)> parse;
  std::function<Node(const ServerConfig&)> render;
};

// Parsing state: the config being built and where each key's value came from.
struct Loader {
  ServerConfig cfg;
  std::string file;     // the file being merged, "" when applying the environment
  std::string env_var;  // the variable being applied, "" when reading the file
  std::string env_value;
  std::map<std::string, std::string> where;  // key path -> "file:line:col" or "BROKER_X"

  std::string location(const Node& n) const {
    if (!env_var.empty()) return env_var;  // the value may be a secret: never echoed here
    const YAML::Mark m = n.Mark();
    if (m.line < 0) return file;
    return file + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
  }

  [[noreturn]] void fail(const Node& n, const std::string& path, const std::string& what) const {
    std::string msg = location(n) + ": " + path + ": " + what;
    if (!env_var.empty() && env_value.find("://") != std::string::npos) {
      msg +=
          " (Kubernetes service links? a Service whose name makes this variable injects "
          "\"tcp://ip:port\": set enableServiceLinks: false in the pod spec)";
    }
    throw ConfigError(msg);
  }

  void note(const Node& n, const std::string& path) { where[path] = location(n); }

  std::string scalar(const Node& n, const std::string& path, const char* expected) const {
    if (!n.IsScalar()) fail(n, path, std::string("expected ") + expected + ", got " + describe(n));
    return n.Scalar();
  }

  std::uint64_t uint(const Node& n, const std::string& path, std::uint64_t min,
                     std::uint64_t max) const {
    const std::string expected =
        "an integer from " + std::to_string(min) + " to " + std::to_string(max);
    const std::string text = trim(scalar(n, path, expected.c_str()));
    std::string digits = text;
    if (!digits.empty() && digits[0] == '+') digits.erase(0, 1);
    const bool negative = !digits.empty() && digits[0] == '-' && all_digits(digits.substr(1));
    if (!all_digits(digits) && !negative) {
      fail(n, path, "expected " + expected + ", got " + quoted(text));
    }
    errno = 0;
    const unsigned long long v = negative ? 0 : std::strtoull(digits.c_str(), nullptr, 10);
    if (negative || errno == ERANGE || v < min || v > max) {
      fail(n, path, "out of range: " + text + " (expected " + expected + ")");
    }
    return v;
  }

  bool boolean(const Node& n, const std::string& path) const {
    const char* expected = "a boolean (true or false)";
    const std::string v = lower(trim(scalar(n, path, expected)));
    if (v == "true" || v == "yes" || v == "on" || v == "1") return true;
    if (v == "false" || v == "no" || v == "off" || v == "0") return false;
    fail(n, path, std::string("expected ") + expected + ", got " + quoted(n.Scalar()));
  }

  std::string string(const Node& n, const std::string& path) const {
    if (n.IsNull()) return {};
    return scalar(n, path, "a string");
  }

  // Each (name, value) of a map node; names as written.
  template <class F>
  void each_entry(const Node& n, const std::string& path, F f) const {
    if (n.IsNull()) return;
    if (!n.IsMap()) fail(n, path, "expected a map, got " + describe(n));
    for (const auto& kv : n) {
      f(scalar(kv.first, path, "a string key"), kv.first, kv.second);
    }
  }

  template <class F>
  void each_item(const Node& n, const std::string& path, F f) const {
    if (n.IsNull()) return;
    if (!n.IsSequence()) fail(n, path, "expected a list, got " + describe(n));
    std::size_t i = 0;
    for (const auto& item : n) {
      f(item, path + "[" + std::to_string(i) + "]");
      ++i;
    }
  }

  // Fields of one object in a list (auth/acl rule, listener): names case-insensitive,
  // unknown names are errors with a suggestion.
  template <class F>
  void each_field(const Node& item, const std::string& path, const std::vector<std::string>& fields,
                  F f) const {
    if (!item.IsMap()) fail(item, path, "expected a map, got " + describe(item));
    for (const auto& kv : item) {
      const std::string name = lower(scalar(kv.first, path, "a string key"));
      if (std::find(fields.begin(), fields.end(), name) == fields.end()) {
        fail(kv.first, path,
             "unknown field " + quoted(kv.first.Scalar()) + " (did you mean " +
                 quoted(nearest(name, fields)) + "?)");
      }
      f(name, kv.second, path + "." + name);
    }
  }
};

// Why `key` (not 16, 24 or 32 bytes) is no secret key; the key itself is never echoed.
std::string secret_key_size_error(const std::string& key) {
  std::string why =
      "must be 16, 24 or 32 bytes (AES-128/192/256), got " + std::to_string(key.size()) + " bytes";
  const bool base64_like = key.size() % 4 == 0 && key.size() >= 24 && key.back() == '=' &&
                           std::all_of(key.begin(), key.end(), [](char ch) {
                             return std::isalnum(static_cast<unsigned char>(ch)) != 0 ||
                                    ch == '+' || ch == '/' || ch == '=';
                           });
  if (base64_like) {
    why +=
        ": this looks like a base64-encoded key (as `serf keygen` or `consul keygen` print); "
        "brokerha, as broker-ha, uses the string's bytes as the key and does not decode it";
  }
  return why +
         "; a valid key is 16, 24 or 32 characters, e.g. the 32 hex characters of "
         "`openssl rand -hex 16`";
}

// ---- key builders ------------------------------------------------------------------------

Key new_key(std::string path, bool structured) {
  Key k;
  k.path = std::move(path);
  k.structured = structured;
  return k;
}

template <class Get>
Key uint_key(std::string path, Get get, std::uint64_t min, std::uint64_t max) {
  Key k = new_key(std::move(path), false);
  k.parse = [get, min, max](Loader& l, const Node& n, const std::string& p) {
    auto& field = get(l.cfg);
    field = static_cast<std::remove_reference_t<decltype(field)>>(l.uint(n, p, min, max));
  };
  k.render = [get](const ServerConfig& c) { return Node(static_cast<std::uint64_t>(get(c))); };
  return k;
}

template <class Get>
Key bool_key(std::string path, Get get) {
  Key k = new_key(std::move(path), false);
  k.parse = [get](Loader& l, const Node& n, const std::string& p) { get(l.cfg) = l.boolean(n, p); };
  k.render = [get](const ServerConfig& c) { return Node(get(c)); };
  return k;
}

using StringCheck = std::function<std::string(const std::string&)>;  // "" = fine, else why

template <class Get>
Key string_key(std::string path, Get get, StringCheck check = {}) {
  Key k = new_key(std::move(path), false);
  k.parse = [get, check](Loader& l, const Node& n, const std::string& p) {
    const std::string v = l.string(n, p);
    if (check) {
      const std::string why = check(v);
      if (!why.empty()) l.fail(n, p, why);
    }
    get(l.cfg) = v;
  };
  k.render = [get](const ServerConfig& c) { return Node(get(c)); };
  return k;
}

StringCheck one_of(std::vector<std::string> choices) {
  return [choices](const std::string& v) -> std::string {
    if (std::find(choices.begin(), choices.end(), v) != choices.end()) return {};
    std::string list;
    for (const std::string& c : choices) list += (list.empty() ? "" : ", ") + c;
    return "expected one of " + list + ", got " + quoted(v);
  };
}

StringCheck ip_address(bool allow_empty) {
  return [allow_empty](const std::string& v) -> std::string {
    if ((allow_empty && v.empty()) || is_ip(v)) return {};
    return "expected an IP address, got " + quoted(v);
  };
}

template <class Get>
Key string_list_key(std::string path, Get get, bool ip_only) {
  Key k = new_key(std::move(path), true);
  k.parse = [get, ip_only](Loader& l, const Node& n, const std::string& p) {
    std::vector<std::string> out;
    l.each_item(n, p, [&](const Node& item, const std::string& ip) {
      const std::string v = trim(l.scalar(item, ip, "a string"));
      if (!valid_host_port(v, ip_only)) {
        l.fail(item, ip,
               std::string("expected ") + (ip_only ? "\"ip:port\"" : "\"host:port\"") + ", got " +
                   quoted(v));
      }
      out.push_back(v);
    });
    get(l.cfg) = std::move(out);
  };
  k.render = [get](const ServerConfig& c) {
    Node n(YAML::NodeType::Sequence);
    for (const std::string& v : get(c)) n.push_back(v);
    n.SetStyle(YAML::EmitterStyle::Flow);
    return n;
  };
  return k;
}

// `*.subscription_size`: bus channel -> buffer size; merged per channel over the defaults.
template <class Get>
Key channel_sizes_key(std::string path, Get get) {
  Key k = new_key(std::move(path), true);
  k.parse = [get](Loader& l, const Node& n, const std::string& p) {
    static const std::vector<std::string> kChannels{"cluster:message_to", "cluster:message_from",
                                                    "cluster:new_member"};
    l.each_entry(n, p, [&](const std::string& name, const Node& key, const Node& value) {
      if (std::find(kChannels.begin(), kChannels.end(), name) == kChannels.end()) {
        l.fail(key, p,
               "unknown bus channel " + quoted(name) + " (did you mean " +
                   quoted(nearest(name, kChannels)) + "?)");
      }
      get(l.cfg)[name] = static_cast<std::int64_t>(l.uint(value, p + "." + name, 1, 1'000'000));
    });
  };
  k.render = [get](const ServerConfig& c) {
    Node n(YAML::NodeType::Map);
    for (const auto& [name, size] : get(c)) n[name] = size;
    n.SetStyle(YAML::EmitterStyle::Flow);
    return n;
  };
  return k;
}

Key api_user_key() {
  Key k = new_key("api.user", true);
  k.parse = [](Loader& l, const Node& n, const std::string& p) {
    std::map<std::string, std::string> users;
    l.each_entry(n, p, [&](const std::string& name, const Node&, const Node& value) {
      users[name] = l.scalar(value, p + "." + name, "a password string");
    });
    l.cfg.api.user = std::move(users);
  };
  k.render = [](const ServerConfig& c) {
    Node n(YAML::NodeType::Map);
    for (const auto& entry : c.api.user) n[entry.first] = kRedacted;
    n.SetStyle(YAML::EmitterStyle::Flow);
    return n;
  };
  return k;
}

// A list of objects (rules, listeners): each item's fields go to `field(item, name, node,
// path)` (names lower-cased; unknown ones refused with a suggestion).
template <class T, class Field>
std::vector<T> parse_objects(Loader& l, const Node& n, const std::string& p,
                             const std::vector<std::string>& fields, Field field) {
  std::vector<T> out;
  l.each_item(n, p, [&](const Node& item, const std::string& ip) {
    T t;
    l.each_field(item, ip, fields, [&](const std::string& f, const Node& v, const std::string& fp) {
      field(t, f, v, fp);
    });
    out.push_back(std::move(t));
  });
  return out;
}

// Renders each item with `to_map(item, map)` as one flow-style list.
template <class T, class ToMap>
Node render_objects(const std::vector<T>& items, ToMap to_map) {
  Node list(YAML::NodeType::Sequence);
  for (const T& item : items) {
    Node m(YAML::NodeType::Map);
    to_map(item, m);
    list.push_back(m);
  }
  list.SetStyle(YAML::EmitterStyle::Flow);
  return list;
}

// The identity fields auth and ACL rules share; false when `f` is not one of them.
template <class Rule>
bool parse_identity(const Loader& l, Rule& r, const std::string& f, const Node& v,
                    const std::string& fp) {
  std::optional<std::string>* field = f == "username" ? &r.username
                                      : f == "client" ? &r.client
                                      : f == "remote" ? &r.remote
                                                      : nullptr;
  if (field == nullptr) return false;
  *field = l.scalar(v, fp, "a string");
  return true;
}

template <class Rule>
void render_identity(const Rule& r, Node& m) {
  if (r.username) m["username"] = *r.username;
  if (r.client) m["client"] = *r.client;
  if (r.remote) m["remote"] = *r.remote;
}

Key auth_key() {
  Key k = new_key("mqtt.auth", true);
  k.parse = [](Loader& l, const Node& n, const std::string& p) {
    l.cfg.mqtt.auth = parse_objects<AuthRule>(
        l, n, p, {"username", "password", "client", "remote", "allow"},
        [&](AuthRule& r, const std::string& f, const Node& v, const std::string& fp) {
          if (parse_identity(l, r, f, v, fp)) return;
          if (f == "password") r.password = l.scalar(v, fp, "a string");
          if (f == "allow") r.allow = l.boolean(v, fp);
        });
  };
  k.render = [](const ServerConfig& c) {
    return render_objects(c.mqtt.auth, [](const AuthRule& r, Node& m) {
      render_identity(r, m);
      if (r.password) m["password"] = kRedacted;
      m["allow"] = r.allow;
    });
  };
  return k;
}

Key acl_key() {
  Key k = new_key("mqtt.acl", true);
  k.parse = [](Loader& l, const Node& n, const std::string& p) {
    l.cfg.mqtt.acl = parse_objects<AclRule>(
        l, n, p, {"username", "client", "remote", "filters"},
        [&](AclRule& r, const std::string& f, const Node& v, const std::string& fp) {
          if (parse_identity(l, r, f, v, fp)) return;
          l.each_entry(v, fp, [&](const std::string& filter, const Node& key, const Node& access) {
            if (!valid_filter(filter)) {
              l.fail(key, fp, "not a valid MQTT topic filter: " + quoted(filter));
            }
            const auto a = static_cast<int>(l.uint(access, fp + "." + filter, 0, 3));
            r.filters.emplace_back(filter, a);
          });
        });
  };
  k.render = [](const ServerConfig& c) {
    return render_objects(c.mqtt.acl, [](const AclRule& r, Node& m) {
      render_identity(r, m);
      Node filters(YAML::NodeType::Map);
      for (const auto& [filter, access] : r.filters) filters[filter] = access;
      m["filters"] = filters;
    });
  };
  return k;
}

Key listeners_key() {
  Key k = new_key("mqtt.listeners", true);
  k.parse = [](Loader& l, const Node& n, const std::string& p) {
    // port 0 marks "not given": a listener needs a real port.
    auto listeners = parse_objects<ListenerConfig>(
        l, n, p, {"type", "bind", "port", "path", "proxy_protocol"},
        [&](ListenerConfig& lc, const std::string& f, const Node& v, const std::string& fp) {
          if (f == "port") {
            lc.port = static_cast<std::uint16_t>(l.uint(v, fp, 1, 65535));
            return;
          }
          if (f == "proxy_protocol") {
            lc.proxy_protocol = l.boolean(v, fp);
            return;
          }
          const std::string s = l.scalar(v, fp, "a string");
          std::string why;
          if (f == "type") why = one_of({"tcp", "tls", "ws", "wss"})(lower(s));
          if (f == "bind") why = ip_address(false)(s);
          if (f == "path" && (s.empty() || s[0] != '/')) why = "expected a path starting with /";
          if (!why.empty()) l.fail(v, fp, why);
          if (f == "type") lc.type = lower(s);
          if (f == "bind") lc.bind = s;
          if (f == "path") lc.path = s;
        });
    for (std::size_t i = 0; i < listeners.size(); ++i) {
      if (listeners[i].port == 0) {
        l.fail(n[i], p + "[" + std::to_string(i) + "]", "missing field \"port\"");
      }
    }
    l.cfg.mqtt.listeners = std::move(listeners);
  };
  k.render = [](const ServerConfig& c) {
    return render_objects(c.mqtt.listeners, [&c](const ListenerConfig& lc, Node& m) {
      m["type"] = lc.type;
      m["bind"] = lc.bind.empty() ? c.mqtt.bind : lc.bind;
      m["port"] = lc.port;
      m["path"] = lc.path;
      m["proxy_protocol"] = lc.proxy_protocol;
    });
  };
  return k;
}

// The key path and its field: the ServerConfig members are named like the keys, so
// BROKERHA_KEY(mqtt.tls.port) gives "mqtt.tls.port" and an accessor of config.mqtt.tls.port.
#define BROKERHA_KEY(field) \
#field, [](auto& c) -> auto& { return c.field; }

constexpr std::uint64_t kU16 = 65535;
constexpr std::uint64_t kU32 = 4'294'967'295u;
constexpr std::uint64_t kMaxMs = 2'147'483'647;  // about 24 days
constexpr std::uint64_t kMaxBytes = 1ull << 40;  // 1 TiB

// Every key, grouped by section (render_config relies on the grouping).
const std::vector<Key>& keys() {
  static const std::vector<Key> kKeys = [] {
    std::vector<Key> v;
    // mqtt
    v.push_back(uint_key(BROKERHA_KEY(mqtt.port), 0, kU16));
    v.push_back(string_key(BROKERHA_KEY(mqtt.bind), ip_address(false)));
    v.push_back(channel_sizes_key(BROKERHA_KEY(mqtt.subscription_size)));
    v.push_back(auth_key());
    v.push_back(acl_key());
    v.push_back(string_key(BROKERHA_KEY(mqtt.acl_default), one_of({"allow", "deny"})));
    v.push_back(string_key(BROKERHA_KEY(mqtt.password_file)));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.tls.port), 0, kU16));
    v.push_back(string_key(BROKERHA_KEY(mqtt.tls.cert)));
    v.push_back(string_key(BROKERHA_KEY(mqtt.tls.key)));
    v.push_back(string_key(BROKERHA_KEY(mqtt.tls.ca)));
    v.push_back(bool_key(BROKERHA_KEY(mqtt.tls.require_client_cert)));
    v.push_back(bool_key(BROKERHA_KEY(mqtt.tls.use_identity_as_username)));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.websocket.port), 0, kU16));
    v.push_back(
        string_key(BROKERHA_KEY(mqtt.websocket.path), [](const std::string& s) -> std::string {
          if (!s.empty() && s[0] == '/') return {};
          return "expected a path starting with /, got " + quoted(s);
        }));
    v.push_back(bool_key(BROKERHA_KEY(mqtt.websocket.tls)));
    v.push_back(listeners_key());
    v.push_back(uint_key(BROKERHA_KEY(mqtt.max_packet_size), 64, 268'435'460));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.receive_maximum), 1, kU16));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.max_inflight), 1, kU16));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.topic_alias_maximum), 0, kU16));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.max_queued_messages), 0, kU32));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.max_connections), 0, kU32));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.max_connection_rate), 0, 1'000'000));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.max_subscriptions), 0, kU32));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.max_publish_rate), 0, 1'000'000));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.max_session_queued_bytes), 0, kMaxBytes));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.max_keepalive), 1, kU16));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.max_session_expiry), 0, kU32));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.max_message_expiry), 0, kU32));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.connect_timeout), 1, kMaxMs));
    v.push_back(uint_key(BROKERHA_KEY(mqtt.io_threads), 0, 1024));
    // cluster
    v.push_back(uint_key(BROKERHA_KEY(cluster.expected_members), 1, 10'000));
    v.push_back(string_key(BROKERHA_KEY(cluster.bind), ip_address(false)));
    v.push_back(uint_key(BROKERHA_KEY(cluster.port), 1, kU16));
    v.push_back(string_key(BROKERHA_KEY(cluster.advertise)));
    v.push_back(string_key(BROKERHA_KEY(cluster.node_name)));
    v.push_back(uint_key(BROKERHA_KEY(cluster.link_retain), 0, kMaxMs));
    v.push_back(uint_key(BROKERHA_KEY(cluster.max_clock_skew), 1000, kMaxMs));
    v.push_back(uint_key(BROKERHA_KEY(cluster.max_inbound_links), 1, 1'000'000));
    v.push_back(bool_key(BROKERHA_KEY(cluster.insecure)));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.tcp_timeout), 1, kMaxMs));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.indirect_checks), 0, 64));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.retransmit_mult), 1, 64));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.suspicion_mult), 1, 64));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.suspicion_max_timeout_mult), 1, 64));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.push_pull_interval), 0, kMaxMs));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.probe_interval), 1, kMaxMs));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.probe_timeout), 1, kMaxMs));
    v.push_back(bool_key(BROKERHA_KEY(cluster.config.disable_tcp_pings)));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.awareness_max_multiplier), 1, 64));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.gossip_interval), 0, kMaxMs));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.gossip_nodes), 0, 64));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.gossip_to_the_dead_time), 0, kMaxMs));
    v.push_back(bool_key(BROKERHA_KEY(cluster.config.gossip_verify_incoming)));
    v.push_back(bool_key(BROKERHA_KEY(cluster.config.gossip_verify_outgoing)));
    v.push_back(bool_key(BROKERHA_KEY(cluster.config.enable_compression)));
    Key secret = string_key(BROKERHA_KEY(cluster.config.secret_key));
    secret.parse = [](Loader& l, const Node& n, const std::string& p) {
      // The value is never echoed in messages.
      const std::string s = l.string(n, p);
      if (!s.empty() && s.size() != 16 && s.size() != 24 && s.size() != 32) {
        l.fail(n, p, secret_key_size_error(s));
      }
      l.cfg.cluster.config.secret_key = s;
    };
    secret.render = [](const ServerConfig& c) {
      return Node(c.cluster.config.secret_key.empty() ? "" : kRedacted);
    };
    v.push_back(std::move(secret));
    Key secrets = new_key("cluster.config.secret_keys", true);
    secrets.parse = [](Loader& l, const Node& n, const std::string& p) {
      std::vector<std::string> keys;
      l.each_item(n, p, [&](const Node& item, const std::string& ip) {
        const std::string s = trim(l.scalar(item, ip, "a key string"));
        if (s.size() != 16 && s.size() != 24 && s.size() != 32) {
          l.fail(item, ip, secret_key_size_error(s));
        }
        keys.push_back(s);
      });
      l.cfg.cluster.config.secret_keys = std::move(keys);
    };
    secrets.render = [](const ServerConfig& c) {
      Node n(YAML::NodeType::Sequence);
      for (std::size_t i = 0; i < c.cluster.config.secret_keys.size(); ++i) n.push_back(kRedacted);
      n.SetStyle(YAML::EmitterStyle::Flow);
      return n;
    };
    v.push_back(std::move(secrets));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.delegate_protocol_min), 0, 255));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.delegate_protocol_max), 0, 255));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.delegate_protocol_version), 0, 255));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.dead_node_reclaim_time), 0, kMaxMs));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.udp_buffer_size), 512, 65'507));
    v.push_back(
        string_key(BROKERHA_KEY(cluster.config.label), [](const std::string& s) -> std::string {
          if (s.size() <= 255) return {};
          return "must be at most 255 bytes, got " + std::to_string(s.size());
        }));
    v.push_back(uint_key(BROKERHA_KEY(cluster.config.handoff_queue_depth), 1, 1'000'000));
    // discovery
    v.push_back(string_key(BROKERHA_KEY(discovery.domain)));
    v.push_back(channel_sizes_key(BROKERHA_KEY(discovery.subscription_size)));
    v.push_back(string_list_key(BROKERHA_KEY(discovery.members), false));
    v.push_back(uint_key(BROKERHA_KEY(discovery.refresh_interval), 1, kMaxMs));
    v.push_back(string_list_key(BROKERHA_KEY(discovery.nameservers), true));
    // api
    v.push_back(uint_key(BROKERHA_KEY(api.port), 0, kU16));
    v.push_back(string_key(BROKERHA_KEY(api.bind), ip_address(false)));
    v.push_back(api_user_key());
    // log
    v.push_back(string_key(BROKERHA_KEY(log.level), one_of({"debug", "info", "warn", "error"})));
    v.push_back(string_key(BROKERHA_KEY(log.format), one_of({"text", "json"})));
    // shutdown
    v.push_back(uint_key(BROKERHA_KEY(shutdown.grace_period), 0, kMaxMs));
    v.push_back(uint_key(BROKERHA_KEY(shutdown.session_wait), 0, kMaxMs));
    return v;
  }();
  return kKeys;
}

#undef BROKERHA_KEY

const Key* find_key(const std::string& path) {
  for (const Key& k : keys()) {
    if (k.path == path) return &k;
  }
  return nullptr;
}

// Key paths and the sections above them ("mqtt", "mqtt.tls", ...).
const std::vector<std::string>& all_paths() {
  static const std::vector<std::string> kPaths = [] {
    std::vector<std::string> out;
    std::set<std::string> seen;
    for (const Key& k : keys()) {
      for (std::string p = parent_of(k.path); !p.empty(); p = parent_of(p)) {
        if (seen.insert(p).second) out.push_back(p);
      }
      out.push_back(k.path);
    }
    return out;
  }();
  return kPaths;
}

bool is_section(const std::string& path) {
  for (const Key& k : keys()) {
    if (starts_with(k.path, path + ".")) return true;
  }
  return false;
}

// Merges a map node of the file at `prefix` ("" = top level) into l.cfg.
void merge_section(Loader& l, const Node& n, const std::string& prefix) {
  if (n.IsNull()) return;  // "mqtt:" with nothing under it keeps the defaults
  if (!n.IsMap()) {
    l.fail(n, prefix.empty() ? "(top level)" : prefix,
           "expected a map of keys, got " + describe(n));
  }
  for (const auto& kv : n) {
    const std::string name = lower(l.scalar(kv.first, prefix, "a key name"));
    const std::string path = prefix.empty() ? name : prefix + "." + name;
    if (const Key* k = find_key(path)) {
      k->parse(l, kv.second, path);
      l.note(kv.second, path);
    } else if (is_section(path)) {
      merge_section(l, kv.second, path);
    } else if (starts_with(path, "cluster.config.")) {
      // broker-ha passed cluster.config through to memberlist and ignored what it did not know.
      l.cfg.warnings.push_back(l.location(kv.first) + ": unknown key " + quoted(path) +
                               " ignored (did you mean " + quoted(nearest(path, all_paths())) +
                               "?)");
    } else {
      l.fail(kv.first, path,
             "unknown key (did you mean " + quoted(nearest(path, all_paths())) + "?)");
    }
  }
}

void apply_environment(Loader& l, const Environment& env) {
  std::map<std::string, std::string> vars;
  for (const auto& [name, value] : env) {
    if (starts_with(name, "BROKER_")) vars[name] = value;
  }
  for (const Key& k : keys()) {
    const std::string name = env_name(k.path);
    const auto it = vars.find(name);
    // Viper ignores empty variables; so do we (an empty value cannot mean "default" otherwise).
    if (it == vars.end() || trim(it->second).empty()) continue;
    l.env_var = name;
    l.env_value = it->second;
    const std::string value = trim(it->second);
    Node n;
    if (!k.structured) {
      n = Node(it->second);
    } else if (value[0] != '[' && value[0] != '{' &&
               ((parent_of(k.path) == "discovery" && k.path != "discovery.subscription_size") ||
                k.path == "cluster.config.secret_keys")) {
      // A convenience for the string lists: "a:7946,b:7946" as well as JSON.
      n = Node(YAML::NodeType::Sequence);
      std::stringstream ss(value);
      for (std::string part; std::getline(ss, part, ',');) n.push_back(trim(part));
    } else {
      try {
        n = YAML::Load(value);
      } catch (const YAML::Exception& e) {
        l.fail(Node(), k.path, "expected JSON, got a syntax error: " + e.msg);
      }
    }
    k.parse(l, n, k.path);
    l.where[k.path] = name;
  }
  l.env_var.clear();
  l.env_value.clear();
}

// Checks that involve several keys, after file and environment are merged.
void validate(const Loader& l) {
  const ServerConfig& c = l.cfg;
  auto fail = [&](const std::string& path, const std::string& what) {
    const auto it = l.where.find(path);
    throw ConfigError((it != l.where.end() ? it->second + ": " : std::string()) + path + ": " +
                      what);
  };
  const MemberlistConfig& m = c.cluster.config;
  if (m.probe_timeout >= m.probe_interval) {
    fail("cluster.config.probe_timeout", "must be less than cluster.config.probe_interval (" +
                                             std::to_string(m.probe_interval) + " ms), got " +
                                             std::to_string(m.probe_timeout));
  }
  if (m.delegate_protocol_min > m.delegate_protocol_max) {
    fail("cluster.config.delegate_protocol_min", "must not exceed delegate_protocol_max");
  }
  if (m.delegate_protocol_version < m.delegate_protocol_min ||
      m.delegate_protocol_version > m.delegate_protocol_max) {
    fail("cluster.config.delegate_protocol_version",
         "must lie within delegate_protocol_min..delegate_protocol_max");
  }
  // Cluster mode authenticates its members unless cluster.insecure says otherwise.
  const DiscoveryConfig& d = c.discovery;
  if ((!d.domain.empty() || !d.members.empty()) && !c.cluster.insecure) {
    const std::string hint =
        " (a valid key is 16, 24 or 32 characters shared by every member, e.g. the 32 hex "
        "characters of `openssl rand -hex 16`; or set cluster.insecure: true, env "
        "BROKER_CLUSTER_INSECURE=true, to run a cluster that anyone reaching its port can join)";
    if (m.secret_key.empty() && m.secret_keys.empty()) {
      fail("cluster.config.secret_key", "required in cluster mode" + hint);
    }
    for (const auto& [path, on] :
         {std::pair<const char*, bool>{"cluster.config.gossip_verify_incoming",
                                       m.gossip_verify_incoming},
          {"cluster.config.gossip_verify_outgoing", m.gossip_verify_outgoing}}) {
      if (!on) {
        const auto it = l.where.find(path);
        throw ConfigError((it != l.where.end() ? it->second + ": " : std::string()) +
                          "cluster.config.secret_key: not enforced: " + path +
                          " is false, so members are not authenticated" + hint);
      }
    }
  }
  const MqttConfig& q = c.mqtt;
  if (q.port == 0 && q.tls.port == 0 && q.websocket.port == 0 && q.listeners.empty()) {
    fail("mqtt.port",
         "no MQTT listener left: mqtt.port, mqtt.tls.port and mqtt.websocket.port are 0 and "
         "mqtt.listeners is empty");
  }
  bool tls_used = q.tls.port != 0 || (q.websocket.port != 0 && q.websocket.tls);
  for (const ListenerConfig& lc : q.listeners) tls_used |= lc.type == "tls" || lc.type == "wss";
  if (tls_used) {
    if (q.tls.cert.empty()) fail("mqtt.tls.cert", "required by the TLS listener(s)");
    if (q.tls.key.empty()) fail("mqtt.tls.key", "required by the TLS listener(s)");
    for (const auto& [path, file] :
         {std::pair<const char*, std::string>{"mqtt.tls.cert", q.tls.cert},
          {"mqtt.tls.key", q.tls.key},
          {"mqtt.tls.ca", q.tls.ca}}) {
      if (!file.empty() && !readable_file(file)) fail(path, "cannot read file " + quoted(file));
    }
  }
  if (q.tls.require_client_cert && q.tls.ca.empty()) {
    fail("mqtt.tls.require_client_cert",
         "needs mqtt.tls.ca (the CA that signs client certificates)");
  }
  if (q.tls.use_identity_as_username && !q.tls.require_client_cert) {
    fail("mqtt.tls.use_identity_as_username", "needs mqtt.tls.require_client_cert: true");
  }
  if (!q.password_file.empty() && !readable_file(q.password_file)) {
    fail("mqtt.password_file", "cannot read file " + quoted(q.password_file));
  }
}

std::string read_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw ConfigError(path + ": cannot read config file: " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) throw ConfigError(path + ": cannot read config file: not a file");
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in) throw ConfigError(path + ": cannot read config file: " + std::strerror(errno));
  return ss.str();
}

// The first IPv4 address of an interface that is up and not loopback ("" if none): what
// cluster.advertise defaults to when cluster.bind is 0.0.0.0.
std::string first_non_loopback_address() {
  struct ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return {};
  std::string found;
  for (struct ifaddrs* i = list; i != nullptr && found.empty(); i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    if ((i->ifa_flags & IFF_UP) == 0 || (i->ifa_flags & IFF_LOOPBACK) != 0) continue;
    char text[INET_ADDRSTRLEN] = {};
    const auto* a = reinterpret_cast<const struct sockaddr_in*>(i->ifa_addr);
    if (::inet_ntop(AF_INET, &a->sin_addr, text, sizeof text) != nullptr) found = text;
  }
  ::freeifaddrs(list);
  return found;
}

std::string hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

}  // namespace

const char* listener_type_name(ListenerType type) {
  switch (type) {
    case ListenerType::tcp:
      return "tcp";
    case ListenerType::tls:
      return "tls";
    case ListenerType::ws:
      return "ws";
    case ListenerType::wss:
      return "wss";
  }
  return "tcp";
}

std::uint32_t default_max_connections() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return 0;
  constexpr std::uint64_t kReserve = 256;
  const std::uint64_t fds = r.rlim_cur;
  const std::uint64_t n = fds >= 2 * kReserve ? fds - kReserve : fds / 2;
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(n, 0xFFFFFFFFu));
}

std::string env_name(const std::string& key_path) {
  std::string out = "BROKER_";
  for (char ch : key_path) {
    out += ch == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  }
  return out;
}

Environment process_environment() {
  Environment env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq == nullptr) continue;
    env.emplace_back(std::string(*e, static_cast<std::size_t>(eq - *e)), std::string(eq + 1));
  }
  return env;
}

ServerConfig load_config(const LoadOptions& options, const Environment& env) {
  Loader l;
  std::string path = options.config_path;
  if (path.empty()) {
    for (const std::string& candidate : options.search_path) {
      struct stat st {};
      if (::stat(candidate.c_str(), &st) == 0) {
        path = candidate;
        break;
      }
    }
  }
  if (!path.empty()) {
    const std::string text = read_file(path);
    l.file = path;
    l.cfg.source = path;
    Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      throw ConfigError(path + ":" + std::to_string(e.mark.line + 1) + ":" +
                        std::to_string(e.mark.column + 1) + ": YAML syntax error: " + e.msg);
    }
    merge_section(l, root, "");
    l.file.clear();
  }
  apply_environment(l, env);
  if (l.cfg.cluster.node_name.empty()) l.cfg.cluster.node_name = hostname();
  validate(l);
  return std::move(l.cfg);
}

std::string render_config(const ServerConfig& config) {
  YAML::Emitter out;
  out.SetIndent(2);
  out << YAML::BeginMap;
  std::vector<std::string> open;  // the sections currently open
  for (const Key& k : keys()) {
    std::vector<std::string> parts;
    std::stringstream ss(k.path);
    for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
    const std::vector<std::string> sections(parts.begin(), parts.end() - 1);
    std::size_t common = 0;
    while (common < open.size() && common < sections.size() && open[common] == sections[common]) {
      ++common;
    }
    while (open.size() > common) {
      out << YAML::EndMap;
      open.pop_back();
    }
    while (open.size() < sections.size()) {
      out << YAML::Key << sections[open.size()] << YAML::Value << YAML::BeginMap;
      open.push_back(sections[open.size()]);
    }
    out << YAML::Key << parts.back() << YAML::Value << k.render(config);
  }
  while (!open.empty()) {
    out << YAML::EndMap;
    open.pop_back();
  }
  out << YAML::EndMap;
  return "# brokerha-server effective configuration (source: " +
         (config.source.empty() ? std::string("built-in defaults") : config.source) +
         "; environment overrides applied; secrets redacted)\n" + out.c_str() + "\n";
}

BrokerOptions to_broker_options(const ServerConfig& config) {
  const MqttConfig& q = config.mqtt;
  BrokerOptions o;
  auto listener = [&](const std::string& bind, std::uint16_t port, ListenerType type,
                      const std::string& path, bool proxy) {
    ListenerOptions lo;
    lo.bind = bind.empty() ? q.bind : bind;
    lo.port = port;
    lo.type = type;
    lo.path = path;
    lo.proxy_protocol = proxy;
    if (type == ListenerType::tls || type == ListenerType::wss) {
      // Every TLS listener serves the mqtt.tls certificate (docs/configuration.md).
      lo.tls_cert = q.tls.cert;
      lo.tls_key = q.tls.key;
      lo.tls_ca = q.tls.ca;
      lo.require_client_cert = q.tls.require_client_cert;
      lo.use_identity_as_username = q.tls.use_identity_as_username;
    }
    o.listeners.push_back(lo);
  };
  if (q.port != 0) listener(q.bind, q.port, ListenerType::tcp, "/mqtt", false);
  if (q.tls.port != 0) listener(q.bind, q.tls.port, ListenerType::tls, "/mqtt", false);
  if (q.websocket.port != 0) {
    listener(q.bind, q.websocket.port, q.websocket.tls ? ListenerType::wss : ListenerType::ws,
             q.websocket.path, false);
  }
  for (const ListenerConfig& lc : q.listeners) {
    ListenerType type = ListenerType::tcp;
    for (const ListenerType t :
         {ListenerType::tcp, ListenerType::tls, ListenerType::ws, ListenerType::wss}) {
      if (lc.type == listener_type_name(t)) type = t;
    }
    listener(lc.bind, lc.port, type, lc.path, lc.proxy_protocol);
  }
  o.max_packet_size = q.max_packet_size;
  o.receive_maximum = q.receive_maximum;
  o.max_inflight = q.max_inflight;
  o.topic_alias_maximum = q.topic_alias_maximum;
  o.max_queued_messages = q.max_queued_messages;
  o.max_connections = q.max_connections;
  o.max_connection_rate = q.max_connection_rate;
  o.max_subscriptions = q.max_subscriptions;
  o.max_publish_rate = q.max_publish_rate;
  o.max_session_queued_bytes = q.max_session_queued_bytes;
  o.max_keepalive = q.max_keepalive;
  o.max_session_expiry = q.max_session_expiry;
  o.max_message_expiry = q.max_message_expiry;
  o.connect_timeout = std::chrono::milliseconds(q.connect_timeout);
  o.io_threads = q.io_threads;
  o.access.auth = q.auth;
  o.access.acl = q.acl;
  o.access.acl_default_allow = q.acl_default == "allow";
  o.access.password_file = q.password_file;

  // Cluster mode only when discovery is configured (docs/cluster.md).
  const DiscoveryConfig& d = config.discovery;
  if (!d.domain.empty() || !d.members.empty()) {
    const ClusterConfig& c = config.cluster;
    const MemberlistConfig& k = c.config;
    ClusterOptions co;
    co.link_retain = std::chrono::milliseconds(c.link_retain);
    co.max_clock_skew = std::chrono::milliseconds(c.max_clock_skew);
    co.max_inbound_links = c.max_inbound_links;
    co.insecure = c.insecure;
    MembershipOptions& m = co.membership;
    m.name = c.node_name;
    m.bind_address = c.bind;
    m.port = c.port;
    m.advertise_address = c.advertise;
    if (m.advertise_address.empty() && (c.bind == "0.0.0.0" || c.bind.empty())) {
      m.advertise_address = first_non_loopback_address();
    }
    m.secret_key = k.secret_key;
    m.secret_keys = k.secret_keys;
    m.label = k.label;
    // Peers find this node's HTTP API (for /proxy) in its metadata.
    m.meta = "api=" + std::to_string(config.api.port);
    m.tcp_timeout = std::chrono::milliseconds(k.tcp_timeout);
    m.push_pull_interval = std::chrono::milliseconds(k.push_pull_interval);
    m.probe_interval = std::chrono::milliseconds(k.probe_interval);
    m.probe_timeout = std::chrono::milliseconds(k.probe_timeout);
    m.gossip_interval = std::chrono::milliseconds(k.gossip_interval);
    m.gossip_to_the_dead_time = std::chrono::milliseconds(k.gossip_to_the_dead_time);
    m.dead_node_reclaim_time = std::chrono::milliseconds(k.dead_node_reclaim_time);
    m.indirect_checks = static_cast<int>(k.indirect_checks);
    m.retransmit_mult = static_cast<int>(k.retransmit_mult);
    m.suspicion_mult = static_cast<int>(k.suspicion_mult);
    m.suspicion_max_timeout_mult = static_cast<int>(k.suspicion_max_timeout_mult);
    m.awareness_max_multiplier = static_cast<int>(k.awareness_max_multiplier);
    m.gossip_nodes = static_cast<int>(k.gossip_nodes);
    m.udp_buffer_size = k.udp_buffer_size;
    m.enable_compression = k.enable_compression;
    m.disable_tcp_pings = k.disable_tcp_pings;
    m.gossip_verify_incoming = k.gossip_verify_incoming;
    m.delegate_protocol_min = static_cast<std::uint8_t>(k.delegate_protocol_min);
    m.delegate_protocol_max = static_cast<std::uint8_t>(k.delegate_protocol_max);
    m.delegate_protocol_version = static_cast<std::uint8_t>(k.delegate_protocol_version);
    co.discovery.domain = d.domain;
    co.discovery.members = d.members;
    co.discovery.nameservers = d.nameservers;
    co.discovery.refresh_interval = std::chrono::milliseconds(d.refresh_interval);
    co.discovery.default_port = c.port;
    co.expected_members = c.expected_members;
    o.cluster = std::move(co);
  }
  return o;
}

}  // namespace brokerha::server
