#include "log.h"

#include <cstdio>
#include <mutex>

namespace rsam {
namespace {

std::mutex g_mu;
std::function<void(LogLevel, const std::string&)> g_sink;
bool g_meter_open = false;  // the default sink's progress line awaits its newline

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
  if (level == LogLevel::Progress) {
    std::fprintf(stderr, "\r%s   ", line.c_str());
    g_meter_open = true;
  } else {
    std::fprintf(stderr, "%s%s\n", g_meter_open ? "\n" : "", line.c_str());
    g_meter_open = false;
  }
  std::fflush(stderr);
}

void log_progress_end() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_sink || !g_meter_open) return;
  std::fputc('\n', stderr);
  std::fflush(stderr);
  g_meter_open = false;
}

}  // namespace rsam
