// SPDX-License-Identifier: Apache-2.0
#pragma once
// Real MQTT clients as child processes, for broker integration tests. Header-only, POSIX.
//
//  - BackgroundProcess: a child (mosquitto_sub, a python script) that runs while the test
//    does other things. Its stdout/stderr are collected whenever the test waits on it
//    (wait_output, wait_exit); no reader thread. The destructor kills it by its pid (SIGKILL)
//    and reaps it: nothing outlives the object.
//  - run_python(): runs a python3-paho-mqtt script with /usr/bin/python3 (Debian's package),
//    bounded, through run_process() of child_process.hpp.
//  - mosquitto_pub() / mosquitto_sub() paths, "" when not installed.
//
// Thread safety: one thread uses a BackgroundProcess; the helpers may be called from any
// thread.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "support/child_process.hpp"

namespace brokerha::test {

inline constexpr const char* kPython = "/usr/bin/python3";

/// A free TCP port on 127.0.0.1 (bound, then released), for a child process that must be
/// told its port; 0 on failure.
inline std::uint16_t free_port() {
  // Below the kernel's ephemeral range (32768 and up by default): a port handed out here is
  // not taken meanwhile as the source port of some other test's outgoing connection (a test
  // that opens hundreds of them made port-0 picks collide, and a server failed to bind). The
  // pick is random per process, and checked free.
  static std::minstd_rand rng(
      static_cast<unsigned>(::getpid()) ^
      static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::uniform_int_distribution<int> pick(20000, 32767);
  for (int attempt = 0; attempt < 256; ++attempt) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(pick(rng)));
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    if (ok) return ntohs(addr.sin_port);
  }
  return 0;
}

class BackgroundProcess {
 public:
  using Clock = std::chrono::steady_clock;

  BackgroundProcess() = default;
  explicit BackgroundProcess(const std::vector<std::string>& argv) { start(argv); }
  ~BackgroundProcess() { kill_and_reap(); }
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;

  /// Spawns `argv` (argv[0] is a path). False (and error()) when spawning failed.
  bool start(const std::vector<std::string>& argv) {
    kill_and_reap();
    out_.clear();
    err_.clear();
    error_.clear();
    exit_code_ = -1;
    signal_ = 0;
    int out_pipe[2] = {-1, -1};
    int err_pipe[2] = {-1, -1};
    if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
      error_ = std::string("pipe2: ") + std::strerror(errno);
      for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) {
        if (fd >= 0) ::close(fd);
      }
      return false;
    }
    posix_spawn_file_actions_t actions;
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    ::posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
    ::posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    const int rc = argv.empty()
                       ? EINVAL
                       : ::posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
    ::posix_spawn_file_actions_destroy(&actions);
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    if (rc != 0) {
      error_ = std::string("posix_spawn: ") + std::strerror(rc);
      ::close(out_pipe[0]);
      ::close(err_pipe[0]);
      return false;
    }
    pid_ = pid;
    fds_[0] = out_pipe[0];
    fds_[1] = err_pipe[0];
    return true;
  }

  bool running() const noexcept { return pid_ > 0; }
  pid_t pid() const noexcept { return pid_; }
  const std::string& out() const noexcept { return out_; }
  const std::string& err() const noexcept { return err_; }
  const std::string& error() const noexcept { return error_; }
  int exit_code() const noexcept { return exit_code_; }
  int signal() const noexcept { return signal_; }

  /// Collects output until `pred(out())` holds or `timeout` passes; returns pred's value.
  bool wait_output(const std::function<bool(const std::string&)>& pred,
                   std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!pred(out_)) {
      if (!read_some(deadline)) return pred(out_);
    }
    return true;
  }

  /// Waits until the child exits (collecting its output) or `timeout` passes. True when it
  /// exited; exit_code() / signal() tell how. A child still running is left running.
  bool wait_exit(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (pid_ > 0) {
      if (fds_[0] >= 0 || fds_[1] >= 0) {
        if (!read_some(deadline)) {
          if (Clock::now() >= deadline) return reap(false);
        }
        continue;
      }
      if (reap(false)) return true;
      if (Clock::now() >= deadline) return false;
      ::poll(nullptr, 0, 5);  // output closed, not exited yet: a short bounded step
    }
    return true;
  }

  /// Sends `sig` to the child (by its pid) and, for SIGKILL, reaps it.
  void kill(int sig = SIGKILL) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    if (sig == SIGKILL) {
      reap(true);
      drain();
    }
  }

  /// A summary for doctest INFO.
  std::string describe() const {
    return "pid=" + std::to_string(pid_) + " exit=" + std::to_string(exit_code_) +
           " signal=" + std::to_string(signal_) + (error_.empty() ? "" : " error=" + error_) +
           "\n--- stdout ---\n" + out_ + "\n--- stderr ---\n" + err_;
  }

 private:
  // Reads what is available (waiting at most until `deadline`). False when nothing more can
  // come before the deadline (timeout, or both pipes closed).
  bool read_some(Clock::time_point deadline) {
    if (fds_[0] < 0 && fds_[1] < 0) return false;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p[2] = {{fds_[0], POLLIN, 0}, {fds_[1], POLLIN, 0}};
    const int n = ::poll(p, 2, static_cast<int>(left));
    if (n < 0) return errno == EINTR;
    if (n == 0) return false;
    std::string* sinks[2] = {&out_, &err_};
    for (int i = 0; i < 2; ++i) {
      if (p[i].fd < 0 || p[i].revents == 0) continue;
      char buf[4096];
      const ssize_t got = ::read(p[i].fd, buf, sizeof buf);
      if (got > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(got));
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        ::close(fds_[i]);
        fds_[i] = -1;
      }
    }
    return true;
  }

  // Reads what is left without waiting, then closes the pipes.
  void drain() {
    for (int i = 0; i < 2; ++i) {
      if (fds_[i] < 0) continue;
      std::string* sink = i == 0 ? &out_ : &err_;
      ::fcntl(fds_[i], F_SETFL, ::fcntl(fds_[i], F_GETFL) | O_NONBLOCK);
      char buf[4096];
      ssize_t got = 0;
      while ((got = ::read(fds_[i], buf, sizeof buf)) > 0) {
        sink->append(buf, static_cast<std::size_t>(got));
      }
      ::close(fds_[i]);
      fds_[i] = -1;
    }
  }

  bool reap(bool block) {
    if (pid_ <= 0) return true;
    int status = 0;
    pid_t w = 0;
    do {
      w = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
    } while (w < 0 && errno == EINTR);
    if (w != pid_) return false;
    if (WIFEXITED(status)) exit_code_ = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) signal_ = WTERMSIG(status);
    pid_ = -1;
    return true;
  }

  void kill_and_reap() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      reap(true);
    }
    for (int& fd : fds_) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  }

  pid_t pid_ = -1;
  int fds_[2] = {-1, -1};
  std::string out_;
  std::string err_;
  std::string error_;
  int exit_code_ = -1;
  int signal_ = 0;
};

/// The path of mosquitto_pub / mosquitto_sub, "" when mosquitto-clients is not installed.
inline const std::string& mosquitto_pub_path() {
  static const std::string path = find_program("mosquitto_pub");
  return path;
}
inline const std::string& mosquitto_sub_path() {
  static const std::string path = find_program("mosquitto_sub");
  return path;
}

/// True when /usr/bin/python3 can import paho.mqtt (python3-paho-mqtt).
inline bool have_python_paho() {
  static const bool found = [] {
    if (find_program(kPython).empty()) return false;
    return run_process({kPython, "-c", "import paho.mqtt.client"}, std::chrono::seconds(10)).ok();
  }();
  return found;
}

/// Runs `script` with /usr/bin/python3 -c, with `args` as sys.argv[1:].
inline ProcessResult run_python(const std::string& script, const std::vector<std::string>& args,
                                std::chrono::milliseconds timeout = std::chrono::seconds(15)) {
  std::vector<std::string> argv{kPython, "-c", script};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv, timeout);
}

}  // namespace brokerha::test
