#include "train/distributed.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "error.h"
#include "model/runtime.h"

#if RSAM_WITH_GLOO
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace rsam::train {

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end || x < 0 || x > 1 << 20)
    throw Error(std::string("environment variable ") + name + "='" + v + "' is not a count");
  return int(x);
}

std::string env_str(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

}  // namespace

bool started_as_rank() { return std::getenv("RANK") != nullptr; }

int rank_from_env() { return env_int("RANK", 0); }

int threads_per_process(int local_processes) { return std::max(1, hardware_threads() / std::max(1, local_processes)); }

#if RSAM_WITH_GLOO

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

bool distributed_available() { return true; }

std::unique_ptr<ProcessGroup> ProcessGroup::from_env() {
  const int size = env_int("WORLD_SIZE", 1);
  if (size <= 1) return nullptr;
  const int rank = env_int("RANK", -1);
  if (rank < 0 || rank >= size) throw Error("RANK must be set and below WORLD_SIZE=" + std::to_string(size));
  const int local_size = std::max(1, env_int("LOCAL_WORLD_SIZE", size));
  const std::string addr = env_str("MASTER_ADDR", "127.0.0.1");
  const int port = env_int("MASTER_PORT", -1);
  if (port <= 0 || port > 65535) throw Error("MASTER_PORT must be set to the rendezvous port");
  auto impl = std::make_unique<Impl>();
  try {
    c10d::TCPStoreOptions so;
    so.port = uint16_t(port);
    // Under torchrun's agent the store already runs; otherwise rank 0 hosts
    // it (what torch's env:// rendezvous does).
    so.isServer = rank == 0 && env_str("TORCHELASTIC_USE_AGENT_STORE", "") != "True";
    so.numWorkers = size;
    so.waitWorkers = false;
    so.timeout = std::chrono::seconds(env_int("RSAM_RENDEZVOUS_TIMEOUT", 300));
    impl->store = c10::make_intrusive<c10d::TCPStore>(addr, so);
    auto opts = c10d::ProcessGroupGloo::Options::create();
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"))
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (addr == "127.0.0.1" || addr == "localhost")
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    impl->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, rank, size, opts);
  } catch (const std::exception& e) {
    std::string m = e.what();
    throw Error("rank " + std::to_string(rank) + " could not join " + addr + ":" + std::to_string(port) + ": " +
                m.substr(0, m.find('\n')));
  }
  return std::unique_ptr<ProcessGroup>(new ProcessGroup(std::move(impl), rank, size, local_size));
}

namespace {

// Runs a collective on one flat buffer holding every tensor (one message,
// not one per parameter), then copies the result back into them.
template <class Collective>
void on_flat_buffer(std::vector<torch::Tensor>& tensors, Collective run) {
  if (tensors.empty()) return;
  std::vector<torch::Tensor> flat;
  for (auto& t : tensors) {
    if (t.scalar_type() != tensors[0].scalar_type() || t.device() != tensors[0].device())
      throw Error("collective over tensors of different dtypes or devices");
    flat.push_back(t.reshape(-1));
  }
  std::vector<torch::Tensor> buf{torch::cat(flat)};
  run(buf);
  int64_t at = 0;
  for (auto& t : tensors) {
    const int64_t n = t.numel();
    t.copy_(buf[0].narrow(0, at, n).view_as(t));
    at += n;
  }
}

}  // namespace

void ProcessGroup::all_reduce_sum(std::vector<torch::Tensor>& tensors) {
  on_flat_buffer(tensors, [&](std::vector<torch::Tensor>& buf) { impl_->pg->allreduce(buf)->wait(); });
}

void ProcessGroup::broadcast(std::vector<torch::Tensor>& tensors) {
  on_flat_buffer(tensors, [&](std::vector<torch::Tensor>& buf) { impl_->pg->broadcast(buf)->wait(); });
}

#else  // built without c10d's Gloo headers

struct ProcessGroup::Impl {};

bool distributed_available() { return false; }

std::unique_ptr<ProcessGroup> ProcessGroup::from_env() {
  if (env_int("WORLD_SIZE", 1) <= 1) return nullptr;
  throw Error("this rsam was built without c10d's Gloo backend (install libgloo-dev and rebuild)");
}

void ProcessGroup::all_reduce_sum(std::vector<torch::Tensor>&) {}
void ProcessGroup::broadcast(std::vector<torch::Tensor>&) {}

#endif

ProcessGroup::ProcessGroup(std::unique_ptr<Impl> impl, int rank, int size, int local_size)
    : impl_(std::move(impl)), rank_(rank), size_(size), local_size_(local_size) {}
ProcessGroup::~ProcessGroup() = default;

namespace {

std::vector<pid_t> g_children;

void pass_on(int sig) {
  for (pid_t p : g_children)
    if (p > 0) kill(p, sig);
}

// A port nothing listens on now (the kernel's choice); rank 0 binds it a
// moment later, as torchrun does.
int free_port() {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) throw Error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const std::string err = std::strerror(errno);
    close(s);
    throw Error("could not find a free port: " + err);
  }
  close(s);
  return ntohs(a.sin_port);
}

}  // namespace

int launch_local(int n, char** argv) {
  if (n < 1 || n > 256) throw Error("the process count must be in 1..256");
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) throw Error("cannot find this program's path (/proc/self/exe)");
  self[len] = '\0';
  const std::string port = std::to_string(free_port());
  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = pass_on;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  const pid_t parent = getpid();
  g_children.assign(size_t(n), 0);
  for (int r = 0; r < n; ++r) {
    const pid_t pid = fork();
    if (pid < 0) {
      const std::string err = std::strerror(errno);
      pass_on(SIGTERM);
      sigaction(SIGINT, &old_int, nullptr);
      sigaction(SIGTERM, &old_term, nullptr);
      throw Error("fork: " + err);
    }
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(1);  // the launcher died before prctl
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(n).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(n).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", port.c_str(), 1);
      execv(self, argv);
      _exit(127);
    }
    g_children[size_t(r)] = pid;
  }
  int code = 0, left = n;
  while (left > 0) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (auto& c : g_children)
      if (c == pid) c = 0, --left;
    const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (rc != 0 && code == 0) {
      code = rc;
      pass_on(SIGTERM);  // the others would wait for it in their next collective
    }
  }
  // The caller may go on (eval and study merge what the ranks wrote): a
  // signal must stop it again, not be passed to ranks that are gone.
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return code;
}

}  // namespace rsam::train
