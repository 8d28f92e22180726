// SPDX-License-Identifier: Apache-2.0
#pragma once
// Runs a program as a child process with a bounded wait, for tests that drive real clients
// (mosquitto_pub, mosquitto_sub, /usr/bin/python3). Header-only, POSIX.
//
// The child gets /dev/null as stdin and pipes as stdout and stderr; both are collected. When
// the deadline passes the child is killed by its pid (SIGKILL) and reaped: nothing outlives
// run_process(). Thread safety: run_process() may be called from any thread; it only touches
// the descriptors and the pid it creates.

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

extern char** environ;

namespace brokerha::test {

struct ProcessResult {
  bool started = false;    // false: spawning failed (`error` says why)
  bool timed_out = false;  // the deadline passed and the child was killed
  int exit_code = -1;      // exit status when the child exited normally, else -1
  int signal = 0;          // the signal that ended the child, else 0
  std::string out;         // everything the child wrote to stdout
  std::string err;         // everything the child wrote to stderr
  std::string error;       // why spawning failed

  bool ok() const noexcept { return started && !timed_out && exit_code == 0; }
  /// A one-line summary for doctest INFO/CAPTURE.
  std::string describe() const {
    std::string s = "started=" + std::to_string(started) +
                    " timed_out=" + std::to_string(timed_out) +
                    " exit=" + std::to_string(exit_code) + " signal=" + std::to_string(signal);
    if (!error.empty()) s += " error=" + error;
    s += "\n--- stdout ---\n" + out + "\n--- stderr ---\n" + err;
    return s;
  }
};

/// The absolute path of `name` found in $PATH (or `name` itself when it contains a '/'
/// and is executable), or "" when there is none.
inline std::string find_program(const std::string& name) {
  auto executable = [](const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
           ::access(path.c_str(), X_OK) == 0;
  };
  if (name.find('/') != std::string::npos) return executable(name) ? name : std::string();
  const char* env = std::getenv("PATH");
  std::string_view path = env ? env : "/usr/local/bin:/usr/bin:/bin";
  while (true) {
    const std::size_t colon = path.find(':');
    std::string dir(path.substr(0, colon));
    if (dir.empty()) dir = ".";
    const std::string candidate = dir + "/" + name;
    if (executable(candidate)) return candidate;
    if (colon == std::string_view::npos) break;
    path.remove_prefix(colon + 1);
  }
  return {};
}

/// Runs `argv` (argv[0] is the program's path; no $PATH search) and waits at most `timeout`.
inline ProcessResult run_process(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  ProcessResult result;
  if (argv.empty()) {
    result.error = "empty argv";
    return result;
  }
  int out_pipe[2] = {-1, -1};
  int err_pipe[2] = {-1, -1};
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    result.error = std::string("pipe2: ") + std::strerror(errno);
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) {
      if (fd >= 0) ::close(fd);
    }
    return result;
  }

  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  // dup2 clears FD_CLOEXEC on the target; every other descriptor of ours is O_CLOEXEC.
  ::posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  ::posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);

  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  ::posix_spawn_file_actions_destroy(&actions);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (rc != 0) {
    result.error = std::string("posix_spawn ") + argv[0] + ": " + std::strerror(rc);
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    return result;
  }
  result.started = true;

  const auto deadline = Clock::now() + timeout;
  auto ms_left = [&]() -> int {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(left);
  };

  // Collect stdout and stderr until both reach end of file or the deadline passes.
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_pipes = 2;
  while (open_pipes > 0) {
    const int left = ms_left();
    if (left == 0) {
      result.timed_out = true;
      break;
    }
    const int n = ::poll(fds, 2, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      result.error = std::string("poll: ") + std::strerror(errno);
      result.timed_out = true;  // cannot wait any more: treat like a timeout
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(got));
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        ::close(fds[i].fd);
        fds[i].fd = -1;  // poll() ignores negative descriptors
        --open_pipes;
      }
    }
  }
  for (pollfd& p : fds) {
    if (p.fd >= 0) ::close(p.fd);
  }

  // Reap the child. It closed its output, so it is normally exiting already; a child that
  // timed out, or that keeps running past the deadline, is killed by its pid (never by name).
  bool killed = false;
  if (result.timed_out) {
    ::kill(pid, SIGKILL);
    killed = true;
  }
  int status = 0;
  while (true) {
    const pid_t w = ::waitpid(pid, &status, killed ? 0 : WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      result.error = std::string("waitpid: ") + std::strerror(errno);
      return result;
    }
    if (ms_left() == 0) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);
      killed = true;  // the next waitpid blocks until it is gone
      continue;
    }
    ::poll(nullptr, 0, 5);  // output closed but not exited yet: a short bounded step
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

}  // namespace brokerha::test
