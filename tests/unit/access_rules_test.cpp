// SPDX-License-Identifier: Apache-2.0
// The built-in authentication and ACL rules (docs/access-rules.md): glob and remote matching, the
// SUBSCRIBE filter coverage, Mosquitto password files ($7$ PBKDF2-SHA512 and $6$ SHA-512), and
// the decisions of Rules::authenticate / Rules::allows / Rules::compile.
//
// $7$ hashes come from Debian's mosquitto_passwd (package mosquitto) when it is installed; a
// constant line made by it is checked as well, so the PBKDF2 path is covered without it.

#include <brokerha/hooks.hpp>
#include <brokerha/options.hpp>

#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "access/rules.hpp"
#include "support/child_process.hpp"
#include "support/required_tool.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::Access;
using brokerha::AccessRules;
using brokerha::AclRule;
using brokerha::AuthRule;
using brokerha::ReasonCode;
namespace access = brokerha::access;

const char* const kMosquittoPasswd = "/usr/bin/mosquitto_passwd";

// `alice:secret`, written by `mosquitto_passwd -c -b FILE alice secret` (mosquitto 2.0.11).
const char* const kAliceLine7 =
    "alice:$7$101$DYQAah4/beAXVlKh$sk4A6/dEf4DE6I09l6dK3B3KnXo9+lScmAgWE1qZgN/"
    "wCbVLpC7XCYYMTO2VLJVJb4eVXkq0s/1/3TZIJRTvWA==";

// `carol:hunter2` in Mosquitto 1.x's $6$ format: $6$<base64 salt>$<base64 SHA512(password +
// salt)>, made with
//   /usr/bin/python3 -c 'import hashlib,base64; s=b"brokerha-salt6"; print("$6$" +
//     base64.b64encode(s).decode() + "$" +
//     base64.b64encode(hashlib.sha512(b"hunter2" + s).digest()).decode())'
const char* const kCarolLine6 =
    "carol:$6$YnJva2VyaGEtc2FsdDY=$w7vfHHG5MTDw16thQ2JYKM85sPAJQEa6hpjR/"
    "SWQvvG+tUqsMEFUd9IkVyzaU7VdMVak06ENnL5de1IISdSh1w==";

// An empty password with the salt bytes 00..0b, made the same way (hashlib.sha512(b"" + s)).
const char* const kEmptyLine6 =
    "empty:$6$AAECAwQFBgcICQoL$ulGyqdovJv6B/D7hFSQlWTfsa+xIg160N8WYxVZ04VqlD4iSLedYQzKl5NJHhwkM"
    "sU38Or2znFWu327hCPlTVA==";

// A temporary directory, removed with its files at the end of the scope.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/brokerha-access-unit-XXXXXX";
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    for (const std::string& f : files_) ::unlink(f.c_str());
    if (!path_.empty()) ::rmdir(path_.c_str());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  bool ok() const { return !path_.empty(); }
  std::string file(const std::string& name) {
    files_.push_back(path_ + "/" + name);
    return files_.back();
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// Runs mosquitto_passwd -b; `create` adds -c (a new file).
brokerha::test::ProcessResult mosquitto_passwd(const std::string& file, const std::string& user,
                                               const std::string& password, bool create) {
  std::vector<std::string> argv{kMosquittoPasswd};
  if (create) argv.emplace_back("-c");
  argv.insert(argv.end(), {"-b", file, user, password});
  return brokerha::test::run_process(argv, 30s);
}

// The message of the std::runtime_error that `f` throws, or "<no exception>".
template <class F>
std::string runtime_error_of(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  } catch (...) {
    return "<another exception type>";
  }
  return "<no exception>";
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

access::Identity who(std::string_view client, std::optional<std::string_view> user = std::nullopt,
                     std::string_view ip = "127.0.0.1", std::uint16_t port = 50000) {
  access::Identity w;
  w.client_id = client;
  w.username = user;
  w.remote_ip = ip;
  w.remote_port = port;
  return w;
}

AuthRule auth_rule(bool allow) {
  AuthRule r;
  r.allow = allow;
  return r;
}

AclRule acl_rule(std::vector<std::pair<std::string, int>> filters) {
  AclRule r;
  r.filters = std::move(filters);
  return r;
}

std::unique_ptr<access::Rules> compile(const AccessRules& r) {
  std::unique_ptr<access::Rules> out;
  REQUIRE_NOTHROW(out = access::Rules::compile(r));
  REQUIRE(out != nullptr);
  return out;
}

}  // namespace

// ---- glob_match -------------------------------------------------------------------------------

TEST_CASE("access glob_match: equality and a trailing '*' prefix glob") {
  CHECK(access::glob_match("sensor-1", "sensor-1"));
  CHECK_FALSE(access::glob_match("sensor-1", "sensor-10"));
  CHECK_FALSE(access::glob_match("sensor-10", "sensor-1"));
  CHECK_FALSE(access::glob_match("Sensor-1", "sensor-1"));  // case-sensitive

  CHECK(access::glob_match("sensor-*", "sensor-"));
  CHECK(access::glob_match("sensor-*", "sensor-42"));
  CHECK(access::glob_match("sensor-*", "sensor-*"));
  CHECK_FALSE(access::glob_match("sensor-*", "sensor"));
  CHECK_FALSE(access::glob_match("sensor-*", "xsensor-1"));
  CHECK_FALSE(access::glob_match("sensor-*", ""));

  // '*' alone matches everything, the empty string included.
  CHECK(access::glob_match("*", ""));
  CHECK(access::glob_match("*", "anything at all"));

  // The empty pattern matches only the empty value.
  CHECK(access::glob_match("", ""));
  CHECK_FALSE(access::glob_match("", "a"));

  // Only a trailing '*' is a glob; elsewhere it is a literal character.
  CHECK_FALSE(access::glob_match("a*b", "axxb"));
  CHECK(access::glob_match("a*b", "a*b"));
  CHECK(access::glob_match("*a*", "*abc"));
  CHECK_FALSE(access::glob_match("*a*", "xabc"));
}

// ---- remote_match -----------------------------------------------------------------------------

TEST_CASE("access remote_match: exact IPv4 address") {
  CHECK(access::remote_match("127.0.0.1", "127.0.0.1", 1234));
  CHECK_FALSE(access::remote_match("127.0.0.1", "127.0.0.2", 1234));
  CHECK_FALSE(access::remote_match("127.0.0.1", "127.0.0.10", 1234));
  CHECK_FALSE(access::remote_match("10.0.0.1", "127.0.0.1", 1234));
}

TEST_CASE("access remote_match: IPv4 CIDR /8 /24 /32 /0") {
  CHECK(access::remote_match("10.0.0.0/8", "10.0.0.1", 1));
  CHECK(access::remote_match("10.0.0.0/8", "10.255.255.255", 1));
  CHECK_FALSE(access::remote_match("10.0.0.0/8", "11.0.0.1", 1));
  CHECK_FALSE(access::remote_match("10.0.0.0/8", "9.255.255.255", 1));
  // Host bits in the network address do not matter.
  CHECK(access::remote_match("10.1.2.3/8", "10.200.0.1", 1));

  CHECK(access::remote_match("192.168.1.0/24", "192.168.1.0", 1));
  CHECK(access::remote_match("192.168.1.0/24", "192.168.1.254", 1));
  CHECK_FALSE(access::remote_match("192.168.1.0/24", "192.168.2.1", 1));
  CHECK_FALSE(access::remote_match("192.168.1.0/24", "192.169.1.1", 1));

  // A prefix that is not a multiple of 8.
  CHECK(access::remote_match("172.16.0.0/12", "172.31.255.255", 1));
  CHECK_FALSE(access::remote_match("172.16.0.0/12", "172.32.0.0", 1));
  CHECK_FALSE(access::remote_match("172.16.0.0/12", "172.15.255.255", 1));

  CHECK(access::remote_match("127.0.0.1/32", "127.0.0.1", 1));
  CHECK_FALSE(access::remote_match("127.0.0.1/32", "127.0.0.2", 1));

  CHECK(access::remote_match("0.0.0.0/0", "127.0.0.1", 1));
  CHECK(access::remote_match("0.0.0.0/0", "203.0.113.9", 1));
}

TEST_CASE("access remote_match: IPv6 addresses and IPv6 CIDR") {
  CHECK(access::remote_match("::1", "::1", 1));
  CHECK_FALSE(access::remote_match("::1", "::2", 1));
  CHECK_FALSE(access::remote_match("::1", "127.0.0.1", 1));

  CHECK(access::remote_match("::1/128", "::1", 1));
  CHECK_FALSE(access::remote_match("::1/128", "::2", 1));
  CHECK(access::remote_match("2001:db8::/32", "2001:db8:1234::1", 1));
  CHECK(access::remote_match("2001:db8::/32", "2001:0db8:ffff:ffff::", 1));
  CHECK_FALSE(access::remote_match("2001:db8::/32", "2001:db9::1", 1));
  CHECK(access::remote_match("fe80::/10", "febf::1", 1));
  CHECK_FALSE(access::remote_match("fe80::/10", "fec0::1", 1));
  CHECK(access::remote_match("::/0", "2001:db8::1", 1));
}

TEST_CASE("access remote_match: an IPv4 CIDR never matches a (non-mapped) IPv6 peer") {
  CHECK_FALSE(access::remote_match("0.0.0.0/0", "::1", 1));
  CHECK_FALSE(access::remote_match("0.0.0.0/0", "2001:db8::1", 1));
  CHECK_FALSE(access::remote_match("0.0.0.0/0", "::", 1));
  CHECK_FALSE(access::remote_match("127.0.0.0/8", "::1", 1));
  CHECK_FALSE(access::remote_match("127.0.0.1/32", "::1", 1));
  // ::7f00:1 holds 127.0.0.1's bits in its last 32 bits, but is not an IPv4 address.
  CHECK_FALSE(access::remote_match("127.0.0.0/8", "::7f00:1", 1));
  // An IPv6 CIDR does not match an IPv4 peer unless it covers the IPv4-mapped range.
  CHECK_FALSE(access::remote_match("2001:db8::/32", "127.0.0.1", 1));
  CHECK_FALSE(access::remote_match("::1/128", "127.0.0.1", 1));
}

TEST_CASE("access remote_match: an IPv4 pattern matches the IPv4-mapped form of its peer") {
  // A dual-stack listener ("::") reports IPv4 peers as ::ffff:a.b.c.d; the peer IP is still
  // 127.0.0.1, so `remote: 127.0.0.1` (the broker-ha README rule) must match it, as the CIDR
  // forms do.
  CHECK(access::remote_match("127.0.0.0/8", "::ffff:127.0.0.1", 1));
  CHECK(access::remote_match("127.0.0.1/32", "::ffff:127.0.0.1", 1));
  CHECK_FALSE(access::remote_match("10.0.0.0/8", "::ffff:127.0.0.1", 1));
  CHECK(access::remote_match("127.0.0.1", "::ffff:127.0.0.1", 1));
  CHECK_FALSE(access::remote_match("127.0.0.2", "::ffff:127.0.0.1", 1));
  CHECK(access::remote_match("127.0.0.1:*", "::ffff:127.0.0.1", 1));
  CHECK(access::remote_match("127.0.0.1:7", "::ffff:127.0.0.1", 7));
  // A pattern written in the mapped form itself still matches that peer.
  CHECK(access::remote_match("::ffff:127.0.0.1", "::ffff:127.0.0.1", 1));
  CHECK(access::remote_match("::ffff:127.0.0.1/128", "::ffff:127.0.0.1", 1));
  CHECK(access::remote_match("::ffff:0:0/96", "::ffff:10.1.2.3", 1));
  CHECK_FALSE(access::remote_match("::ffff:127.0.0.2", "::ffff:127.0.0.1", 1));
}

TEST_CASE("access remote_match: ip:port patterns and the ip:* glob") {
  CHECK(access::remote_match("127.0.0.1:*", "127.0.0.1", 1883));
  CHECK(access::remote_match("127.0.0.1:*", "127.0.0.1", 0));
  CHECK_FALSE(access::remote_match("127.0.0.1:*", "127.0.0.2", 1883));
  CHECK_FALSE(access::remote_match("127.0.0.1:*", "127.0.0.10", 1883));

  CHECK(access::remote_match("127.0.0.1:5000", "127.0.0.1", 5000));
  CHECK_FALSE(access::remote_match("127.0.0.1:5000", "127.0.0.1", 5001));
  CHECK_FALSE(access::remote_match("127.0.0.1:5000", "127.0.0.1", 50000));
  CHECK_FALSE(access::remote_match("127.0.0.1:5000", "127.0.0.2", 5000));

  // A prefix glob on the whole "ip:port" text, as broker-ha compared it.
  CHECK(access::remote_match("127.0.0.1:50*", "127.0.0.1", 50123));
  CHECK_FALSE(access::remote_match("127.0.0.1:50*", "127.0.0.1", 60123));
  CHECK(access::remote_match("*", "203.0.113.1", 7));
  CHECK(access::remote_match("192.168.*", "192.168.7.7", 7));
  CHECK_FALSE(access::remote_match("192.168.*", "192.169.7.7", 7));
}

TEST_CASE("access remote_match: garbage patterns never match and never crash") {
  const char* const peers[] = {"127.0.0.1",       "10.1.2.3", "::1",
                               "::ffff:10.1.2.3", "0.0.0.0",  "not-an-ip"};
  const char* const patterns[] = {
      "",
      "/",
      "/8",
      "//",
      "10.0.0.0/x",   // not a number
      "10.0.0.0/-1",  // negative
      "10.0.0.0/33",  // too long for IPv4
      "10.0.0.0/8/8",
      "10.0.0.0/ 8",
      "10.0.0.0/8 ",
      "10.0.0.0/99999999999999999999999",
      "10.0.0/8",
      "10.0.0.0.0/8",
      "256.0.0.0/8",
      "::1/129",
      "::g/64",
      "localhost",
      "localhost/8",
      "127.0.0.1 ",
      " 127.0.0.1",
      "127.0.0.1:",
      ":",
      "[::1]",
      "[::1]/128",
      "\xff\xfe/8",
      "1.2.3.4/8\n",
  };
  for (const char* pattern : patterns) {
    for (const char* peer : peers) {
      INFO("pattern: " << std::string(pattern));
      INFO("peer: " << std::string(peer));
      bool matched = true;
      CHECK_NOTHROW(matched = access::remote_match(pattern, peer, 1883));
      CHECK_FALSE(matched);
    }
  }
}

TEST_CASE("access remote_match: a CIDR without a prefix length is garbage, not /0") {
  // "10.0.0.0/" (a prefix length forgotten in the config) must not match every IPv4 peer.
  CHECK_FALSE(access::remote_match("10.0.0.0/", "192.0.2.1", 1));
  CHECK_FALSE(access::remote_match("10.0.0.0/", "10.0.0.1", 1));
  CHECK_FALSE(access::remote_match("::1/", "2001:db8::1", 1));
  CHECK_FALSE(access::remote_match("::1/", "127.0.0.1", 1));

  // So an auth rule with such a remote admits nobody.
  AuthRule lan;
  lan.remote = "10.0.0.0/";
  lan.allow = true;
  AccessRules r;
  r.auth = {lan};
  const auto rules = access::Rules::compile(r);
  CHECK(rules->authenticate(who("c", std::nullopt, "192.0.2.1"), std::nullopt) ==
        ReasonCode::not_authorized);
}

TEST_CASE("access remote_match: a pattern with an embedded NUL never matches") {
  using namespace std::string_view_literals;
  CHECK_FALSE(access::remote_match("127.0.0.1\0/8"sv, "127.0.0.1", 1));
  CHECK_FALSE(access::remote_match("127.0.0.0/8\0"sv, "127.0.0.1", 1));
  CHECK_FALSE(access::remote_match("127.0.0.1\0junk"sv, "127.0.0.1", 1));
}

// ---- rule_covers_filter -------------------------------------------------------------------------

TEST_CASE("access rule_covers_filter: '#' covers everything") {
  for (const char* f : {"a", "a/b", "a/b/c", "+", "#", "+/#", "a/+/c", "/", "/a"}) {
    INFO("filter: " << std::string(f));
    CHECK(access::rule_covers_filter("#", f));
  }
  CHECK(access::rule_covers_filter("a/#", "a"));
  CHECK(access::rule_covers_filter("a/#", "a/#"));
  CHECK(access::rule_covers_filter("a/#", "a/+"));
  CHECK(access::rule_covers_filter("a/#", "a/+/c/#"));
  CHECK_FALSE(access::rule_covers_filter("a/#", "#"));
  CHECK_FALSE(access::rule_covers_filter("a/#", "+/b"));
  CHECK_FALSE(access::rule_covers_filter("a/#", "b/c"));
  CHECK_FALSE(access::rule_covers_filter("a/#", "ab"));
}

TEST_CASE("access rule_covers_filter: '+' covers one level, a subscription '+' too, not '#'") {
  CHECK(access::rule_covers_filter("+", "a"));
  CHECK(access::rule_covers_filter("+", "+"));
  CHECK(access::rule_covers_filter("+", ""));  // an empty level is a level
  CHECK_FALSE(access::rule_covers_filter("+", "#"));
  CHECK_FALSE(access::rule_covers_filter("+", "a/b"));
  CHECK_FALSE(access::rule_covers_filter("+", "+/+"));

  CHECK(access::rule_covers_filter("a/+/c", "a/b/c"));
  CHECK(access::rule_covers_filter("a/+/c", "a/+/c"));
  CHECK_FALSE(access::rule_covers_filter("a/+/c", "a/#"));
  CHECK_FALSE(access::rule_covers_filter("a/+/c", "a/b/#"));
  CHECK_FALSE(access::rule_covers_filter("a/+/c", "a/b/d"));
  CHECK_FALSE(access::rule_covers_filter("a/+/c", "a/b"));
  CHECK(access::rule_covers_filter("a/+/#", "a/x/y/z"));
  CHECK(access::rule_covers_filter("a/+/#", "a/+/#"));
  CHECK_FALSE(access::rule_covers_filter("a/+/#", "a/#"));
}

TEST_CASE("access rule_covers_filter: literal levels are compared as text") {
  CHECK(access::rule_covers_filter("a/b", "a/b"));
  CHECK_FALSE(access::rule_covers_filter("a/b", "a/+"));  // '+' may be any level, not just b
  CHECK_FALSE(access::rule_covers_filter("a/b", "a/#"));
  CHECK_FALSE(access::rule_covers_filter("a/b", "+/b"));
  CHECK_FALSE(access::rule_covers_filter("a/b", "a/c"));
  CHECK_FALSE(access::rule_covers_filter("a/b", "a/bc"));
  CHECK_FALSE(access::rule_covers_filter("a/b", "A/b"));
  // Shorter and longer.
  CHECK_FALSE(access::rule_covers_filter("a/b", "a"));
  CHECK_FALSE(access::rule_covers_filter("a/b", "a/b/c"));
  CHECK_FALSE(access::rule_covers_filter("a/b", "a/b/"));
  CHECK_FALSE(access::rule_covers_filter("a", "a/b"));
  CHECK_FALSE(access::rule_covers_filter("a/b/c", "a/b"));
  // Empty levels are levels.
  CHECK(access::rule_covers_filter("/a", "/a"));
  CHECK_FALSE(access::rule_covers_filter("/a", "a"));
  CHECK(access::rule_covers_filter("+/a", "/a"));
  CHECK(access::rule_covers_filter("a/", "a/"));
  CHECK_FALSE(access::rule_covers_filter("a/", "a"));
}

// ---- password files -----------------------------------------------------------------------------

TEST_CASE("access password file: mosquitto_passwd $7$ hashes verify") {
  // Always: the constant line made by mosquitto_passwd.
  {
    const auto users = access::parse_password_file(std::string(kAliceLine7) + "\n");
    REQUIRE(users.size() == 1);
    const access::PasswordHash& h = users.at("alice");
    CHECK(h.kind == access::PasswordHash::Kind::pbkdf2_sha512);
    CHECK(h.iterations == 101);
    CHECK(h.salt.size() == 12);
    CHECK(h.hash.size() == 64);
    CHECK(access::verify_password(h, "secret"));
    CHECK_FALSE(access::verify_password(h, "Secret"));
    CHECK_FALSE(access::verify_password(h, "secret "));
    CHECK_FALSE(access::verify_password(h, "secre"));
    CHECK_FALSE(access::verify_password(h, ""));
  }

  if (brokerha::test::find_program(kMosquittoPasswd).empty()) {
    brokerha::test::tool_missing(std::string(kMosquittoPasswd) +
                                 " (Debian mosquitto): the live part");
    return;
  }
  TempDir dir;
  REQUIRE(dir.ok());
  const std::string file = dir.file("passwd");
  const std::string odd = std::string("p@ss w:rd\xc3\xa9") + "$7$";
  struct User {
    const char* name;
    std::string password;
  };
  const User users[] = {{"alice", "secret"}, {"bob", odd}, {"dave", "x"}};
  bool first = true;
  for (const User& u : users) {
    const auto r = mosquitto_passwd(file, u.name, u.password, first);
    INFO(r.describe());
    REQUIRE(r.ok());
    first = false;
  }
  const std::string text = read_text(file);
  INFO(text);
  REQUIRE(contains(text, "alice:$7$"));

  const auto parsed = access::parse_password_file(text);
  REQUIRE(parsed.size() == 3);
  for (const User& u : users) {
    INFO("user: " << std::string(u.name));
    REQUIRE(parsed.count(u.name) == 1);
    const access::PasswordHash& h = parsed.at(u.name);
    CHECK(h.kind == access::PasswordHash::Kind::pbkdf2_sha512);
    CHECK(h.iterations > 0);
    CHECK(h.hash.size() == 64);
    CHECK(access::verify_password(h, u.password));
    CHECK_FALSE(access::verify_password(h, u.password + "x"));
    CHECK_FALSE(access::verify_password(h, u.password.substr(1)));
    CHECK_FALSE(access::verify_password(h, ""));
  }
  // Each user's hash is salted separately: alice's password does not open bob's entry.
  CHECK_FALSE(access::verify_password(parsed.at("bob"), "secret"));
  CHECK_FALSE(access::verify_password(parsed.at("alice"), odd));
}

TEST_CASE("access password file: $6$ SHA-512 hashes verify") {
  const auto users =
      access::parse_password_file(std::string(kCarolLine6) + "\n" + kEmptyLine6 + "\n");
  REQUIRE(users.size() == 2);
  const access::PasswordHash& carol = users.at("carol");
  CHECK(carol.kind == access::PasswordHash::Kind::sha512);
  CHECK(carol.salt == "brokerha-salt6");
  CHECK(carol.hash.size() == 64);
  CHECK(access::verify_password(carol, "hunter2"));
  CHECK_FALSE(access::verify_password(carol, "hunter3"));
  CHECK_FALSE(access::verify_password(carol, "hunter2brokerha-salt6"));  // salt added once only
  CHECK_FALSE(access::verify_password(carol, ""));

  const access::PasswordHash& empty = users.at("empty");
  CHECK(empty.kind == access::PasswordHash::Kind::sha512);
  CHECK(empty.salt.size() == 12);
  CHECK(access::verify_password(empty, ""));
  CHECK_FALSE(access::verify_password(empty, " "));
}

TEST_CASE("access password file: comments, blank lines and CRLF are ignored") {
  const std::string text = std::string("# a comment\n") + "\n" + kAliceLine7 + "\r\n" +
                           "#carol:not-a-hash\n" + "\r\n" + kCarolLine6;
  std::unordered_map<std::string, access::PasswordHash> users;
  REQUIRE_NOTHROW(users = access::parse_password_file(text));
  CHECK(users.size() == 2);
  REQUIRE(users.count("alice") == 1);
  REQUIRE(users.count("carol") == 1);
  CHECK(access::verify_password(users.at("alice"), "secret"));
  CHECK(access::verify_password(users.at("carol"), "hunter2"));

  CHECK(access::parse_password_file("").empty());
  CHECK(access::parse_password_file("\n\n# only comments\n").empty());
  CHECK(access::parse_password_file("\r\n").empty());
}

TEST_CASE("access password file: lines of only blanks are blank lines") {
  // Mosquitto skips them (it ignores every line without a ':'); an editor leaves them easily.
  const std::string text = std::string(kAliceLine7) + "\n   \n\t\n \r\n" + kCarolLine6 + "\n";
  std::unordered_map<std::string, access::PasswordHash> users;
  CHECK_NOTHROW(users = access::parse_password_file(text));
  CHECK(users.size() == 2);
}

TEST_CASE("access password file: blanks around a line are ignored") {
  const std::string text = std::string("  ") + kAliceLine7 + " \t\r\n\t" + kCarolLine6 + "  \n";
  std::unordered_map<std::string, access::PasswordHash> users;
  REQUIRE_NOTHROW(users = access::parse_password_file(text));
  REQUIRE(users.count("alice") == 1);
  REQUIRE(users.count("carol") == 1);
  CHECK(access::verify_password(users.at("alice"), "secret"));
  CHECK(access::verify_password(users.at("carol"), "hunter2"));
}

TEST_CASE("access password file: malformed lines throw runtime_error naming the line") {
  struct Bad {
    const char* what;
    std::string line;
  };
  const std::string salt7 = "$7$101$DYQAah4/beAXVlKh$";
  const std::string hash64 =
      "sk4A6/dEf4DE6I09l6dK3B3KnXo9+lScmAgWE1qZgN/wCbVLpC7XCYYMTO2VLJVJb4eVXkq0s/1/3TZIJRTvWA==";
  const Bad bad[] = {
      {"no colon", "alice"},
      {"no user", std::string(":") + salt7 + hash64},
      {"empty hash", "alice:"},
      {"plaintext", "alice:secret"},
      {"unknown hash prefix $5$", "alice:$5$c2FsdA==$" + hash64},
      {"unknown hash prefix $8$", "alice:$8$101$DYQAah4/beAXVlKh$" + hash64},
      {"$7$ without fields", "alice:$7$"},
      {"$7$ without hash", "alice:$7$101$DYQAah4/beAXVlKh"},
      {"$7$ non-numeric iterations", "alice:$7$abc$DYQAah4/beAXVlKh$" + hash64},
      {"$7$ zero iterations", "alice:$7$0$DYQAah4/beAXVlKh$" + hash64},
      {"$7$ negative iterations", "alice:$7$-5$DYQAah4/beAXVlKh$" + hash64},
      {"$7$ huge iterations", "alice:$7$99999999999999999999$DYQAah4/beAXVlKh$" + hash64},
      {"$7$ bad base64 salt", "alice:$7$101$DYQA*h4/beAXVlKh$" + hash64},
      {"$7$ bad base64 hash", "alice:" + salt7 + "!!!!" + hash64.substr(4)},
      {"$7$ base64 of the wrong length", "alice:" + salt7 + hash64.substr(0, 87)},
      {"$7$ empty salt", "alice:$7$101$$" + hash64},
      {"$7$ empty hash", "alice:" + salt7},
      {"$7$ hash of 48 bytes", "alice:" + salt7 + hash64.substr(0, 64)},
      {"$7$ hash of 66 bytes", "alice:" + salt7 + hash64.substr(0, 84) + "AAAA"},
      {"$6$ without hash", "carol:$6$YnJva2VyaGEtc2FsdDY="},
      {"$6$ bad base64", "carol:$6$YnJva2VyaGEtc2FsdDY=$" + std::string(88, '%')},
      {"$6$ hash of 33 bytes", "carol:$6$YnJva2VyaGEtc2FsdDY=$" + hash64.substr(0, 44)},
  };
  for (const Bad& b : bad) {
    INFO("case: " << std::string(b.what));
    CAPTURE(b.line);
    // Two good lines first, so the bad one is line 4 (line 2 is a comment).
    const std::string text = std::string(kAliceLine7) + "\n# comment\n" + kCarolLine6 + "\n" +
                             b.line + "\n" + kEmptyLine6 + "\n";
    const std::string msg = runtime_error_of([&] { access::parse_password_file(text); });
    CHECK(contains(msg, "line 4"));
  }
  // The last line without a newline is numbered too.
  CHECK(contains(runtime_error_of([] { access::parse_password_file("\n\nalice:secret"); }),
                 "line 3"));
  CHECK(contains(runtime_error_of([] { access::parse_password_file("bob"); }), "line 1"));
}

// ---- Rules::authenticate ------------------------------------------------------------------------

TEST_CASE("access authenticate: no rules and no password file -> anonymous clients allowed") {
  const auto rules = compile(AccessRules{});
  CHECK(rules->authenticate(who("c1"), std::nullopt) == ReasonCode::success);
  CHECK(rules->authenticate(who("c1", "alice"), std::string_view("pw")) == ReasonCode::success);
  CHECK(rules->authenticate(who("", std::nullopt, "::1"), std::nullopt) == ReasonCode::success);
}

TEST_CASE("access authenticate: the first matching rule decides") {
  AuthRule deny_alice = auth_rule(false);
  deny_alice.username = "alice";
  const AuthRule allow_all = auth_rule(true);

  AccessRules deny_first;
  deny_first.auth = {deny_alice, allow_all};
  const auto a = compile(deny_first);
  CHECK(a->authenticate(who("c", "alice"), std::nullopt) == ReasonCode::not_authorized);
  CHECK(a->authenticate(who("c", "bob"), std::nullopt) == ReasonCode::success);
  CHECK(a->authenticate(who("c"), std::nullopt) == ReasonCode::success);

  AccessRules allow_first;
  allow_first.auth = {allow_all, deny_alice};
  const auto b = compile(allow_first);
  CHECK(b->authenticate(who("c", "alice"), std::nullopt) == ReasonCode::success);
  CHECK(b->authenticate(who("c", "bob"), std::nullopt) == ReasonCode::success);
}

TEST_CASE("access authenticate: no rule matches -> not_authorized") {
  AuthRule only_bob = auth_rule(true);
  only_bob.username = "bob";
  AccessRules r;
  r.auth = {only_bob};
  const auto rules = compile(r);
  CHECK(rules->authenticate(who("c", "bob"), std::nullopt) == ReasonCode::success);
  CHECK(rules->authenticate(who("c", "alice"), std::nullopt) == ReasonCode::not_authorized);
  CHECK(rules->authenticate(who("c"), std::nullopt) == ReasonCode::not_authorized);
  CHECK(rules->authenticate(who("c", "bobby"), std::nullopt) == ReasonCode::not_authorized);
}

TEST_CASE("access authenticate: username, password, client and remote fields") {
  AuthRule with_password = auth_rule(true);
  with_password.username = "alice";
  with_password.password = "s3cret";
  AuthRule sensors = auth_rule(true);
  sensors.client = "sensor-*";
  AuthRule loopback = auth_rule(true);
  loopback.username = "local";
  loopback.remote = "127.0.0.1";
  AuthRule lan = auth_rule(true);
  lan.username = "lan";
  lan.remote = "10.0.0.0/8";
  AuthRule port_rule = auth_rule(true);
  port_rule.username = "porty";
  port_rule.remote = "127.0.0.1:*";
  AuthRule all_fields = auth_rule(true);
  all_fields.username = "u-*";
  all_fields.password = "pw";
  all_fields.client = "c-*";
  all_fields.remote = "192.168.0.0/16";
  AccessRules r;
  r.auth = {with_password, sensors, loopback, lan, port_rule, all_fields};
  const auto rules = compile(r);

  // password
  CHECK(rules->authenticate(who("x", "alice"), std::string_view("s3cret")) == ReasonCode::success);
  CHECK(rules->authenticate(who("x", "alice"), std::string_view("s3cre")) ==
        ReasonCode::not_authorized);
  CHECK(rules->authenticate(who("x", "alice"), std::string_view("s3cret!")) ==
        ReasonCode::not_authorized);
  CHECK(rules->authenticate(who("x", "alice"), std::string_view("")) == ReasonCode::not_authorized);
  CHECK(rules->authenticate(who("x", "alice"), std::nullopt) == ReasonCode::not_authorized);
  // Binary passwords compare all their bytes.
  using namespace std::string_view_literals;
  CHECK(rules->authenticate(who("x", "alice"), "s3cret\0"sv) == ReasonCode::not_authorized);

  // client prefix glob; any username, with or without a password
  CHECK(rules->authenticate(who("sensor-17"), std::nullopt) == ReasonCode::success);
  CHECK(rules->authenticate(who("sensor-"), std::nullopt) == ReasonCode::success);
  CHECK(rules->authenticate(who("sensor-1", "zed"), std::string_view("x")) == ReasonCode::success);
  CHECK(rules->authenticate(who("sensor"), std::nullopt) == ReasonCode::not_authorized);
  CHECK(rules->authenticate(who("my-sensor-1"), std::nullopt) == ReasonCode::not_authorized);

  // remote: IP, CIDR and ip:port glob
  CHECK(rules->authenticate(who("x", "local", "127.0.0.1"), std::nullopt) == ReasonCode::success);
  CHECK(rules->authenticate(who("x", "local", "127.0.0.2"), std::nullopt) ==
        ReasonCode::not_authorized);
  CHECK(rules->authenticate(who("x", "lan", "10.9.8.7"), std::nullopt) == ReasonCode::success);
  CHECK(rules->authenticate(who("x", "lan", "11.9.8.7"), std::nullopt) ==
        ReasonCode::not_authorized);
  CHECK(rules->authenticate(who("x", "porty", "127.0.0.1", 61000), std::nullopt) ==
        ReasonCode::success);
  CHECK(rules->authenticate(who("x", "porty", "127.0.0.3", 61000), std::nullopt) ==
        ReasonCode::not_authorized);

  // every field at once: all must match
  const auto pw = std::optional<std::string_view>("pw");
  CHECK(rules->authenticate(who("c-1", "u-1", "192.168.4.4"), pw) == ReasonCode::success);
  CHECK(rules->authenticate(who("d-1", "u-1", "192.168.4.4"), pw) == ReasonCode::not_authorized);
  CHECK(rules->authenticate(who("c-1", "v-1", "192.168.4.4"), pw) == ReasonCode::not_authorized);
  CHECK(rules->authenticate(who("c-1", "u-1", "192.169.4.4"), pw) == ReasonCode::not_authorized);
  CHECK(rules->authenticate(who("c-1", "u-1", "192.168.4.4"), std::string_view("pW")) ==
        ReasonCode::not_authorized);
  CHECK(rules->authenticate(who("c-1", std::nullopt, "192.168.4.4"), pw) ==
        ReasonCode::not_authorized);
}

TEST_CASE("access authenticate: a rule's password mismatch moves on to the next rule") {
  AuthRule alice = auth_rule(true);
  alice.username = "alice";
  alice.password = "right";
  AuthRule deny_rest = auth_rule(false);
  deny_rest.username = "alice";
  AuthRule allow_all = auth_rule(true);
  AccessRules r;
  r.auth = {alice, deny_rest, allow_all};
  const auto rules = compile(r);
  CHECK(rules->authenticate(who("x", "alice"), std::string_view("right")) == ReasonCode::success);
  CHECK(rules->authenticate(who("x", "alice"), std::string_view("wrong")) ==
        ReasonCode::not_authorized);
  CHECK(rules->authenticate(who("x", "bob"), std::string_view("wrong")) == ReasonCode::success);
}

TEST_CASE("access authenticate: password file users") {
  TempDir dir;
  REQUIRE(dir.ok());
  const std::string file = dir.file("passwd");
  write_text(file, std::string(kAliceLine7) + "\n" + kCarolLine6 + "\n");

  SUBCASE("no auth rules: only listed users with their password") {
    AccessRules r;
    r.password_file = file;
    const auto rules = compile(r);
    CHECK(rules->authenticate(who("x", "alice"), std::string_view("secret")) ==
          ReasonCode::success);
    CHECK(rules->authenticate(who("x", "carol"), std::string_view("hunter2")) ==
          ReasonCode::success);
    CHECK(rules->authenticate(who("x", "alice"), std::string_view("hunter2")) ==
          ReasonCode::bad_username_or_password);
    CHECK(rules->authenticate(who("x", "alice"), std::nullopt) ==
          ReasonCode::bad_username_or_password);
    CHECK(rules->authenticate(who("x", "bob"), std::string_view("secret")) ==
          ReasonCode::not_authorized);
    CHECK(rules->authenticate(who("x"), std::nullopt) == ReasonCode::not_authorized);
    CHECK(rules->authenticate(who("x"), std::string_view("secret")) == ReasonCode::not_authorized);
  }

  SUBCASE("with auth rules: the password is checked first, then the rules decide") {
    AuthRule deny_carol = auth_rule(false);
    deny_carol.username = "carol";
    AuthRule allow_all = auth_rule(true);
    AccessRules r;
    r.password_file = file;
    r.auth = {deny_carol, allow_all};
    const auto rules = compile(r);
    CHECK(rules->authenticate(who("x", "alice"), std::string_view("secret")) ==
          ReasonCode::success);
    // A listed user with a wrong password is refused even though a rule allows everyone.
    CHECK(rules->authenticate(who("x", "alice"), std::string_view("wrong")) ==
          ReasonCode::bad_username_or_password);
    CHECK(rules->authenticate(who("x", "alice"), std::nullopt) ==
          ReasonCode::bad_username_or_password);
    // The right password does not override a rule that denies.
    CHECK(rules->authenticate(who("x", "carol"), std::string_view("hunter2")) ==
          ReasonCode::not_authorized);
    // Users not in the file: the rules alone decide.
    CHECK(rules->authenticate(who("x", "bob"), std::nullopt) == ReasonCode::success);
    CHECK(rules->authenticate(who("x"), std::nullopt) == ReasonCode::success);
  }
}

// ---- Rules::allows ------------------------------------------------------------------------------

TEST_CASE("access allows: no ACL rules -> acl_default") {
  AccessRules r;
  const auto allow = compile(r);
  CHECK(allow->acl_allows_everything());
  CHECK(allow->allows(who("c"), "a/b", Access::read, false));
  CHECK(allow->allows(who("c", "u"), "a/b", Access::write, false));
  CHECK(allow->allows(who("c"), "#", Access::read, true));

  r.acl_default_allow = false;
  const auto deny = compile(r);
  CHECK_FALSE(deny->acl_allows_everything());
  CHECK_FALSE(deny->allows(who("c"), "a/b", Access::read, false));
  CHECK_FALSE(deny->allows(who("c", "u"), "a/b", Access::write, false));
  CHECK_FALSE(deny->allows(who("c"), "#", Access::read, true));
}

TEST_CASE("access allows: a rule that decides nothing leaves acl_default") {
  AccessRules r;
  AclRule rule = acl_rule({{"only/this", 3}});
  rule.username = "alice";
  r.acl = {rule};
  const auto allow = compile(r);
  CHECK_FALSE(allow->acl_allows_everything());
  CHECK(allow->allows(who("c", "alice"), "other", Access::write, false));    // no filter matches
  CHECK(allow->allows(who("c", "bob"), "only/this", Access::write, false));  // not alice
  r.acl_default_allow = false;
  const auto deny = compile(r);
  CHECK_FALSE(deny->allows(who("c", "alice"), "other", Access::write, false));
  CHECK_FALSE(deny->allows(who("c", "bob"), "only/this", Access::write, false));
  CHECK(deny->allows(who("c", "alice"), "only/this", Access::write, false));
}

TEST_CASE("access allows: a rule without filters grants everything") {
  AccessRules r;
  r.acl_default_allow = false;
  AclRule admin;
  admin.username = "admin";
  AclRule deny_all = acl_rule({{"#", 0}});
  r.acl = {admin, deny_all};
  const auto rules = compile(r);
  for (const char* t : {"a", "a/b/c", "secret", "$SYS/broker/uptime"}) {
    INFO("topic: " << std::string(t));
    CHECK(rules->allows(who("c", "admin"), t, Access::read, false));
    CHECK(rules->allows(who("c", "admin"), t, Access::write, false));
    CHECK_FALSE(rules->allows(who("c", "user"), t, Access::write, false));
  }
  CHECK(rules->allows(who("c", "admin"), "#", Access::read, true));
  CHECK(rules->allows(who("c", "admin"), "+/x", Access::read, true));
  CHECK_FALSE(rules->allows(who("c", "user"), "#", Access::read, true));
}

// One matching rule for every action: the rule filter is matched level by level against the
// PUBLISH topic, the SUBSCRIBE filter and the delivered topic alike, `$` topics included (a
// rule `#` or `+` covers a `$SYS` level: an ACL rule is not a subscription).
TEST_CASE("access allows: the same decision for publish, subscribe and delivery ($ included)") {
  struct Row {
    const char* rule;
    int granted;
    bool default_allow;
    const char* topic;
    bool publish;  // write on the topic
    bool read;     // subscribe to the topic as a filter, and delivery of the topic
  };
  const Row rows[] = {
      // a catch-all deny stops every action on every topic, `$` topics too
      {"#", 0, true, "a/b", false, false},
      {"#", 0, true, "$SYS/broker/uptime", false, false},
      {"#", 0, true, "$internal", false, false},
      // a catch-all grant under default deny
      {"#", 3, false, "a/b", true, true},
      {"#", 3, false, "$SYS/broker/uptime", true, true},
      // read only
      {"#", 1, false, "a", false, true},
      {"#", 1, false, "$SYS/x", false, true},
      // write only
      {"#", 2, false, "$SYS/x", true, false},
      // '+' covers a `$` level
      {"+/status", 0, true, "$SYS/status", false, false},
      {"+/status", 0, true, "a/status", false, false},
      {"+/status", 0, true, "a/b", true, true},
      {"+/status", 0, true, "$SYS/status/x", true, true},
      // a literal `$` rule
      {"$SYS/#", 0, true, "$SYS/broker/uptime", false, false},
      {"$SYS/#", 0, true, "$SYS", false, false},
      {"$SYS/#", 0, true, "a/b", true, true},
      {"$SYS/#", 0, true, "SYS/x", true, true},
      // a prefix rule under default deny: MQTT's `a/#` covers `a`, nothing else
      {"a/#", 3, false, "a", true, true},
      {"a/#", 3, false, "a/b/c", true, true},
      {"a/#", 3, false, "$SYS/a", false, false},
      {"a/#", 3, false, "ab", false, false},
      {"a/+", 3, false, "a", false, false},
      {"a/+", 3, false, "a/", true, true},
  };
  for (const Row& row : rows) {
    AccessRules r;
    r.acl = {acl_rule({{row.rule, row.granted}})};
    r.acl_default_allow = row.default_allow;
    const auto rules = compile(r);
    INFO("rule {\"" << std::string(row.rule) << "\": " << row.granted << "}, acl_default "
                    << std::string(row.default_allow ? "allow" : "deny") << ", topic "
                    << std::string(row.topic));
    CHECK(rules->allows(who("c"), row.topic, Access::write, false) == row.publish);
    CHECK(rules->allows(who("c"), row.topic, Access::read, true) == row.read);   // SUBSCRIBE
    CHECK(rules->allows(who("c"), row.topic, Access::read, false) == row.read);  // delivery
  }
}

TEST_CASE("access allows: identity fields select the rule") {
  AccessRules r;
  r.acl_default_allow = false;
  AclRule by_user = acl_rule({{"users/alice/#", 3}});
  by_user.username = "alice";
  AclRule by_client = acl_rule({{"sensors/#", 2}});
  by_client.client = "sensor-*";
  AclRule by_remote = acl_rule({{"lan/#", 1}});
  by_remote.remote = "10.0.0.0/8";
  AclRule by_port = acl_rule({{"port/#", 1}});
  by_port.remote = "127.0.0.1:4*";
  r.acl = {by_user, by_client, by_remote, by_port};
  const auto rules = compile(r);

  CHECK(rules->allows(who("c", "alice"), "users/alice/x", Access::write, false));
  CHECK_FALSE(rules->allows(who("c", "alicia"), "users/alice/x", Access::write, false));
  CHECK_FALSE(rules->allows(who("alice"), "users/alice/x", Access::write, false));

  CHECK(rules->allows(who("sensor-9"), "sensors/t", Access::write, false));
  CHECK_FALSE(rules->allows(who("actuator-9"), "sensors/t", Access::write, false));

  CHECK(rules->allows(who("c", std::nullopt, "10.1.1.1"), "lan/x", Access::read, false));
  CHECK_FALSE(rules->allows(who("c", std::nullopt, "127.0.0.1"), "lan/x", Access::read, false));

  CHECK(rules->allows(who("c", std::nullopt, "127.0.0.1", 40000), "port/x", Access::read, false));
  CHECK_FALSE(
      rules->allows(who("c", std::nullopt, "127.0.0.1", 50000), "port/x", Access::read, false));
}

TEST_CASE("access allows: an anonymous client does not match a rule with a username") {
  AccessRules r;
  r.acl_default_allow = false;
  AclRule named = acl_rule({{"#", 3}});
  named.username = "*";
  r.acl = {named};
  const auto rules = compile(r);
  CHECK(rules->allows(who("c", "anyone"), "a", Access::write, false));
  CHECK(rules->allows(who("c", ""), "a", Access::write, false));  // an empty username is one
  CHECK_FALSE(rules->allows(who("c"), "a", Access::write, false));
  CHECK_FALSE(rules->allows(who("c"), "a", Access::read, false));

  // A rule without a username applies to anonymous clients too.
  AclRule anyone = acl_rule({{"public/#", 1}});
  r.acl = {anyone};
  const auto anon = compile(r);
  CHECK(anon->allows(who("c"), "public/x", Access::read, false));
  CHECK_FALSE(anon->allows(who("c"), "public/x", Access::write, false));
}

TEST_CASE("access allows: read (1), write (2), read+write (3) and deny (0)") {
  AccessRules r;
  r.acl_default_allow = true;  // a matching filter decides even against the default
  r.acl = {acl_rule({{"r/#", 1}, {"w/#", 2}, {"rw/#", 3}, {"no/#", 0}})};
  const auto rules = compile(r);
  const auto c = who("c");
  CHECK(rules->allows(c, "r/x", Access::read, false));
  CHECK_FALSE(rules->allows(c, "r/x", Access::write, false));
  CHECK_FALSE(rules->allows(c, "w/x", Access::read, false));
  CHECK(rules->allows(c, "w/x", Access::write, false));
  CHECK(rules->allows(c, "rw/x", Access::read, false));
  CHECK(rules->allows(c, "rw/x", Access::write, false));
  CHECK_FALSE(rules->allows(c, "no/x", Access::read, false));
  CHECK_FALSE(rules->allows(c, "no/x", Access::write, false));
  // No filter matches: the default.
  CHECK(rules->allows(c, "other", Access::read, false));
  CHECK(rules->allows(c, "other", Access::write, false));
  // SUBSCRIBE needs read.
  CHECK(rules->allows(c, "r/#", Access::read, true));
  CHECK_FALSE(rules->allows(c, "w/#", Access::read, true));
  CHECK(rules->allows(c, "rw/+", Access::read, true));
  CHECK_FALSE(rules->allows(c, "no/+", Access::read, true));
}

TEST_CASE("access allows: a granting filter wins over a denying one in the same rule") {
  for (bool deny_first : {true, false}) {
    CAPTURE(deny_first);
    AccessRules r;
    r.acl_default_allow = false;
    AclRule rule =
        deny_first ? acl_rule({{"a/#", 0}, {"a/b", 1}}) : acl_rule({{"a/b", 1}, {"a/#", 0}});
    r.acl = {rule};
    const auto rules = compile(r);
    CHECK(rules->allows(who("c"), "a/b", Access::read, false));
    CHECK_FALSE(rules->allows(who("c"), "a/b", Access::write, false));
    CHECK_FALSE(rules->allows(who("c"), "a/c", Access::read, false));
    CHECK_FALSE(rules->allows(who("c"), "a", Access::read, false));
  }
  // Read from one filter and write from another combine.
  AccessRules r;
  r.acl_default_allow = false;
  r.acl = {acl_rule({{"x/+", 1}, {"+/y", 2}, {"#", 0}})};
  const auto rules = compile(r);
  CHECK(rules->allows(who("c"), "x/y", Access::read, false));
  CHECK(rules->allows(who("c"), "x/y", Access::write, false));
  CHECK_FALSE(rules->allows(who("c"), "x/z", Access::write, false));
  CHECK_FALSE(rules->allows(who("c"), "z/y", Access::read, false));
}

TEST_CASE("access allows: the first rule with a matching filter decides") {
  AclRule deny_x = acl_rule({{"x/#", 0}});
  deny_x.username = "alice";
  AclRule grant_x = acl_rule({{"x/#", 3}});
  grant_x.username = "alice";
  AclRule unrelated = acl_rule({{"y/#", 3}});
  unrelated.username = "alice";

  AccessRules r;
  r.acl_default_allow = true;
  r.acl = {deny_x, grant_x};
  const auto a = compile(r);
  CHECK_FALSE(a->allows(who("c", "alice"), "x/1", Access::read, false));  // rule 2 not consulted
  CHECK_FALSE(a->allows(who("c", "alice"), "x/1", Access::write, false));
  CHECK_FALSE(a->allows(who("c", "alice"), "x/#", Access::read, true));
  CHECK(a->allows(who("c", "bob"), "x/1", Access::read, false));  // no rule for bob: default

  r.acl = {grant_x, deny_x};
  const auto b = compile(r);
  CHECK(b->allows(who("c", "alice"), "x/1", Access::write, false));
  CHECK(b->allows(who("c", "alice"), "x/#", Access::read, true));

  // A rule whose filters do not match the topic does not decide: the next one does.
  r.acl_default_allow = true;
  r.acl = {unrelated, deny_x};
  const auto c = compile(r);
  CHECK_FALSE(c->allows(who("c", "alice"), "x/1", Access::read, false));
  CHECK(c->allows(who("c", "alice"), "y/1", Access::write, false));
  CHECK(c->allows(who("c", "alice"), "z/1", Access::write, false));  // default

  // A rule for another identity is skipped.
  AclRule bob_all = acl_rule({{"#", 3}});
  bob_all.username = "bob";
  r.acl_default_allow = false;
  r.acl = {bob_all, grant_x};
  const auto d = compile(r);
  CHECK(d->allows(who("c", "alice"), "x/1", Access::write, false));
  CHECK_FALSE(d->allows(who("c", "alice"), "q", Access::write, false));
}

TEST_CASE("access allows: topics use MQTT matching") {
  AccessRules r;
  r.acl_default_allow = false;
  r.acl = {acl_rule({{"a/#", 3}, {"s/+/t", 3}, {"exact/b", 3}})};
  const auto rules = compile(r);
  const auto c = who("c");
  CHECK(rules->allows(c, "a", Access::write, false));  // "a/#" matches the parent level
  CHECK(rules->allows(c, "a/b", Access::write, false));
  CHECK(rules->allows(c, "a/b/c/d", Access::write, false));
  CHECK_FALSE(rules->allows(c, "ab", Access::write, false));
  CHECK_FALSE(rules->allows(c, "b/a", Access::write, false));
  CHECK(rules->allows(c, "s/x/t", Access::read, false));
  CHECK(rules->allows(c, "s//t", Access::read, false));
  CHECK_FALSE(rules->allows(c, "s/x/y/t", Access::read, false));
  CHECK_FALSE(rules->allows(c, "s/x/t/u", Access::read, false));
  CHECK(rules->allows(c, "exact/b", Access::read, false));
  CHECK_FALSE(rules->allows(c, "exact/b/c", Access::read, false));  // "a/b" is not a prefix
  CHECK_FALSE(rules->allows(c, "exact", Access::read, false));
  CHECK_FALSE(rules->allows(c, "exact/bb", Access::read, false));
}

TEST_CASE("access allows: SUBSCRIBE filters are checked as text (is_filter)") {
  AccessRules r;
  r.acl_default_allow = false;
  r.acl = {acl_rule({{"a/#", 1}, {"s/+/t", 1}, {"x/y", 1}})};
  const auto rules = compile(r);
  const auto c = who("c");
  CHECK(rules->allows(c, "a/#", Access::read, true));
  CHECK(rules->allows(c, "a/+/z", Access::read, true));
  CHECK(rules->allows(c, "a", Access::read, true));
  CHECK_FALSE(rules->allows(c, "#", Access::read, true));
  CHECK_FALSE(rules->allows(c, "+/b", Access::read, true));
  CHECK(rules->allows(c, "s/+/t", Access::read, true));
  CHECK(rules->allows(c, "s/q/t", Access::read, true));
  CHECK_FALSE(rules->allows(c, "s/#", Access::read, true));
  CHECK_FALSE(rules->allows(c, "s/+/#", Access::read, true));
  CHECK(rules->allows(c, "x/y", Access::read, true));
  CHECK_FALSE(rules->allows(c, "x/+", Access::read, true));  // would also receive x/z
  CHECK_FALSE(rules->allows(c, "x/#", Access::read, true));
  // The same strings as topics are matched the MQTT way; "+" in a rule is a wildcard there too.
  CHECK(rules->allows(c, "s/q/t", Access::read, false));

  // A subscription filter with a wildcard is covered only by a rule that is at least as wide;
  // it is not "matched" by the rule the MQTT way (which would let "x/+" pass a rule "x/y").
  AccessRules deny;
  deny.acl_default_allow = true;
  deny.acl = {acl_rule({{"secret/#", 0}})};
  const auto d = compile(deny);
  CHECK_FALSE(d->allows(c, "secret/#", Access::read, true));
  CHECK_FALSE(d->allows(c, "secret/+", Access::read, true));
  CHECK_FALSE(d->allows(c, "secret", Access::read, true));
  CHECK(d->allows(c, "#", Access::read, true));  // as text: the delivery check guards it
  CHECK(d->allows(c, "+/x", Access::read, true));
  CHECK_FALSE(d->allows(c, "secret/x", Access::read, false));
}

// ---- Rules::compile -------------------------------------------------------------------------

TEST_CASE("access compile: an invalid filter or access is rejected naming it") {
  for (const char* filter : {"a/#/b", "a#", "a/b+", "", "#/a"}) {
    INFO("filter: " << std::string(filter));
    AccessRules r;
    r.acl = {acl_rule({{"ok/#", 3}, {filter, 1}})};
    const std::string msg = runtime_error_of([&] { access::Rules::compile(r); });
    CHECK(msg != "<no exception>");
    CHECK(contains(msg, std::string("\"") + filter + "\""));
  }
  for (int bad : {-1, 4, 7, 100}) {
    CAPTURE(bad);
    AccessRules r;
    AclRule ok = acl_rule({{"fine/#", 3}});
    r.acl = {ok, acl_rule({{"ok/#", 3}, {"the/filter", bad}})};
    const std::string msg = runtime_error_of([&] { access::Rules::compile(r); });
    CHECK(msg != "<no exception>");
    CHECK(contains(msg, "the/filter"));
  }
  for (int good : {0, 1, 2, 3}) {
    AccessRules r;
    r.acl = {acl_rule({{"a/+/#", good}})};
    CHECK_NOTHROW(access::Rules::compile(r));
  }
}

TEST_CASE("access compile: password file errors name the file and the line") {
  TempDir dir;
  REQUIRE(dir.ok());
  AccessRules r;
  r.password_file = dir.file("missing");
  std::string msg = runtime_error_of([&] { access::Rules::compile(r); });
  CHECK(msg != "<no exception>");
  CHECK(contains(msg, r.password_file));

  r.password_file = dir.file("bad");
  write_text(r.password_file, std::string(kAliceLine7) + "\nbob:plaintext\n");
  msg = runtime_error_of([&] { access::Rules::compile(r); });
  CHECK(contains(msg, r.password_file));
  CHECK(contains(msg, "line 2"));

  r.password_file = dir.file("empty");
  write_text(r.password_file, "");
  std::unique_ptr<access::Rules> rules;
  REQUIRE_NOTHROW(rules = access::Rules::compile(r));
  // An empty password file lists nobody: with no auth rules nobody may connect.
  CHECK(rules->authenticate(who("c"), std::nullopt) == ReasonCode::not_authorized);
  CHECK(rules->authenticate(who("c", "alice"), std::string_view("secret")) ==
        ReasonCode::not_authorized);
}
