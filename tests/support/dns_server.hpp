// SPDX-License-Identifier: Apache-2.0
#pragma once
// tests/support/dns_server.py as a child process on loopback, for the discovery tests, and the
// zone files it serves. Header-only, POSIX.
//
//   brokerha::test::DnsZone zone;
//   zone.srv("_broker._tcp.test", 7946, "n1.test").a("n1.test", "10.0.0.1");
//   brokerha::test::DnsServer dns(zone);          // port 0: the server picks one
//   REQUIRE(dns.started());                       // dns.error() says why not
//   options.nameservers = {dns.nameserver()};     // "127.0.0.1:<port>"
//   dns.set_zone(other);                          // answers change from the next query on
//   dns.count_queries("tcp", "SRV", "_broker._tcp.test");
//
// The server runs /usr/bin/python3 (Debian's; the python3 first on PATH may be another one).
// Its files (zone, query log, stderr) live in a temporary directory removed by the destructor,
// which also kills the server by its pid (SIGKILL) and reaps it.
// Thread safety: one DnsServer is used by one thread at a time.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

extern char** environ;

namespace brokerha::test {

/// A zone for dns_server.py (see the comment at the top of that script).
class DnsZone {
 public:
  DnsZone& srv(const std::string& name, std::uint16_t port, const std::string& target,
               std::uint16_t priority = 0, std::uint16_t weight = 0) {
    names_[name].srv.push_back(Srv{priority, weight, port, target});
    return *this;
  }
  DnsZone& a(const std::string& name, const std::string& ip) {
    names_[name].a.push_back(ip);
    return *this;
  }
  DnsZone& aaaa(const std::string& name, const std::string& ip) {
    names_[name].aaaa.push_back(ip);
    return *this;
  }
  /// "nxdomain", "servfail", "refused", "silent", "malformed", "garbage" or "truncate";
  /// name "*" sets the mode of every name not listed.
  DnsZone& mode(const std::string& name, const std::string& mode) {
    names_[name].mode = mode;
    return *this;
  }

  std::string json() const {
    std::string out = "{";
    bool first_name = true;
    for (const auto& [name, e] : names_) {
      out += first_name ? "\n  " : ",\n  ";
      first_name = false;
      out += quote(name) + ": {";
      std::vector<std::string> fields;
      if (!e.mode.empty()) fields.push_back("\"mode\": " + quote(e.mode));
      if (!e.srv.empty()) {
        std::string s = "\"SRV\": [";
        for (std::size_t i = 0; i < e.srv.size(); ++i) {
          const Srv& r = e.srv[i];
          s += (i ? ", " : "") + std::string("{\"priority\": ") + std::to_string(r.priority) +
               ", \"weight\": " + std::to_string(r.weight) +
               ", \"port\": " + std::to_string(r.port) + ", \"target\": " + quote(r.target) + "}";
        }
        fields.push_back(s + "]");
      }
      if (!e.a.empty()) fields.push_back("\"A\": " + list(e.a));
      if (!e.aaaa.empty()) fields.push_back("\"AAAA\": " + list(e.aaaa));
      for (std::size_t i = 0; i < fields.size(); ++i) out += (i ? ", " : "") + fields[i];
      out += "}";
    }
    return out + "\n}\n";
  }

 private:
  struct Srv {
    std::uint16_t priority, weight, port;
    std::string target;
  };
  struct Entry {
    std::vector<Srv> srv;
    std::vector<std::string> a, aaaa;
    std::string mode;
  };
  static std::string quote(const std::string& s) {
    std::string q = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\') q += '\\';
      q += c;
    }
    return q + "\"";
  }
  static std::string list(const std::vector<std::string>& v) {
    std::string s = "[";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + quote(v[i]);
    return s + "]";
  }
  std::map<std::string, Entry> names_;
};

class DnsServer {
 public:
#ifdef BROKERHA_SOURCE_DIR
  static std::string default_script() {
    return std::string(BROKERHA_SOURCE_DIR) + "/tests/support/dns_server.py";
  }
#else
  static std::string default_script() { return "tests/support/dns_server.py"; }
#endif

  explicit DnsServer(const DnsZone& zone = DnsZone(), const std::string& script = default_script(),
                     std::chrono::milliseconds startup = std::chrono::seconds(15)) {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/brokerha-dns-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) {
      error_ = std::string("mkdtemp: ") + std::strerror(errno);
      return;
    }
    dir_ = templ;
    if (!set_zone(zone)) {
      error_ = "cannot write " + zone_path();
      return;
    }
    spawn(script, startup);
  }

  ~DnsServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int st = 0;
      while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
      }
    }
    if (out_fd_ >= 0) ::close(out_fd_);
    if (!dir_.empty()) {
      for (const std::string& f : {zone_path(), zone_path() + ".tmp", log_path(), err_path()}) {
        ::unlink(f.c_str());
      }
      ::rmdir(dir_.c_str());
    }
  }
  DnsServer(const DnsServer&) = delete;
  DnsServer& operator=(const DnsServer&) = delete;

  bool started() const { return port_ != 0; }
  std::uint16_t port() const { return port_; }
  /// "127.0.0.1:<port>", for DiscoveryOptions::nameservers.
  std::string nameserver() const { return "127.0.0.1:" + std::to_string(port_); }
  /// Why the server did not start, with its stderr.
  std::string error() const { return error_ + "\n--- stderr ---\n" + read(err_path()); }

  /// Replaces the zone (written aside, then renamed: the server never reads half a file).
  bool set_zone(const DnsZone& zone) {
    const std::string tmp = zone_path() + ".tmp";
    {
      std::ofstream f(tmp, std::ios::trunc);
      f << zone.json();
      if (!f.flush()) return false;
    }
    return std::rename(tmp.c_str(), zone_path().c_str()) == 0;
  }

  /// The query log: one line "<udp|tcp> <TYPE> <name>" per query received.
  std::string query_log() const { return read(log_path()); }

  /// How many logged queries match (an empty argument matches anything).
  int count_queries(std::string_view proto, std::string_view type, std::string_view name) const {
    std::istringstream in(query_log());
    std::string p, t, n;
    int count = 0;
    while (in >> p >> t >> n) {
      if ((proto.empty() || p == proto) && (type.empty() || t == type) &&
          (name.empty() || n == name)) {
        ++count;
      }
    }
    return count;
  }

 private:
  std::string zone_path() const { return dir_ + "/zone.json"; }
  std::string log_path() const { return dir_ + "/queries.log"; }
  std::string err_path() const { return dir_ + "/stderr.txt"; }

  static std::string read(const std::string& path) {
    std::ifstream f(path);
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
  }

  void spawn(const std::string& script, std::chrono::milliseconds startup) {
    int out[2] = {-1, -1};
    if (::pipe2(out, O_CLOEXEC) != 0) {
      error_ = std::string("pipe2: ") + std::strerror(errno);
      return;
    }
    std::vector<std::string> argv = {
        "/usr/bin/python3", script,      "--bind", "127.0.0.1", "--port", "0",
        "--zone",           zone_path(), "--log",  log_path()};
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    ::posix_spawn_file_actions_init(&fa);
    ::posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    ::posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    ::posix_spawn_file_actions_addopen(&fa, 2, err_path().c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                       0600);
    const int rc = ::posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
    ::posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    out_fd_ = out[0];
    if (rc != 0) {
      pid_ = -1;
      error_ = std::string("posix_spawn /usr/bin/python3: ") + std::strerror(rc);
      return;
    }
    // Read stdout until "PORT <n>\n" (bounded).
    const auto deadline = std::chrono::steady_clock::now() + startup;
    std::string got;
    while (got.find('\n') == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) {
        error_ = "dns_server.py did not print its port in time; stdout: " + got;
        return;
      }
      pollfd p{out_fd_, POLLIN, 0};
      const int n = ::poll(&p, 1, static_cast<int>(left));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) continue;
      char buf[256];
      const ssize_t r = ::read(out_fd_, buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        error_ = "dns_server.py exited before printing its port; stdout: " + got;
        return;
      }
      got.append(buf, static_cast<std::size_t>(r));
    }
    unsigned port = 0;
    if (std::sscanf(got.c_str(), "PORT %u", &port) != 1 || port == 0 || port > 65535) {
      error_ = "unexpected first line from dns_server.py: " + got;
      return;
    }
    port_ = static_cast<std::uint16_t>(port);
  }

  std::string dir_;
  std::string error_;
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::uint16_t port_ = 0;
};

}  // namespace brokerha::test
