#include "log.h"

#include <cstdio>
#include <mutex>

namespace rsam {
namespace {

std::mutex g_mu;
std::function<void(LogLevel, const std::string&)> g_sink;

}  // namespace

void set_log_sink(std::function<void(LogLevel, const std::string&)> sink) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_sink = std::move(sink);
}

void log(LogLevel level, const std::string& line) {
  std::lock_guard<std::mutex> lock(g_mu);  // lines from worker threads never interleave
  if (g_sink) {
    g_sink(level, line);
    return;
  }
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace rsam
