// A `rsam serve` process for the tests: started on an ephemeral port on
// 127.0.0.1, its URL read from its stdout, stopped with SIGTERM.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace rsam::serve_test {

inline const std::string kBin = RSAM_BINARY;

class ServerProcess {
 public:
  explicit ServerProcess(const std::vector<std::string>& flags) {
    err_path_ = ::testing::TempDir() + "rsam_serve_" + std::to_string(getpid()) + "_" + std::to_string(count()++) + ".err";
    int out[2];
    if (pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      close(out[0]);
      FILE* err = std::fopen(err_path_.c_str(), "w");
      if (err) dup2(fileno(err), 2);
      std::vector<std::string> args = {kBin, "serve", "--port", "0", "--threads", "2"};
      args.insert(args.end(), flags.begin(), flags.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(kBin.c_str(), argv.data());
      _exit(127);
    }
    close(out[1]);
    out_fd_ = out[0];
    // The first stdout line is the URL; the model loads first.
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd p{out_fd_, POLLIN, 0};
      if (poll(&p, 1, 500) <= 0) continue;
      char buf[256];
      const ssize_t n = read(out_fd_, buf, sizeof(buf));
      if (n <= 0) break;
      line.append(buf, size_t(n));
    }
    url_ = line.substr(0, line.find('\n'));
    const auto colon = url_.rfind(':');
    if (url_.rfind("http://127.0.0.1:", 0) == 0 && colon != std::string::npos) port_ = std::stoi(url_.substr(colon + 1));
  }
  ~ServerProcess() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_fd_ >= 0) close(out_fd_);
    std::remove(err_path_.c_str());
  }
  int port() const { return port_; }
  const std::string& url() const { return url_; }
  // SIGTERM, then the exit status (-1: still running after timeout_s).
  int terminate(int timeout_s = 30) {
    kill(pid_, SIGTERM);
    for (int i = 0; i < timeout_s * 20; ++i) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }
  std::string stderr_text() const {
    std::ifstream f(err_path_);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }

 private:
  static int& count() {
    static int n = 0;
    return n;
  }
  pid_t pid_ = -1;
  int out_fd_ = -1, port_ = 0;
  bool exited_ = false;
  std::string url_, err_path_;
};

}  // namespace rsam::serve_test
