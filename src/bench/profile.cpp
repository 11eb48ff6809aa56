#include "bench/profile.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

namespace rsam {

namespace {

using Clock = std::chrono::steady_clock;

// One profile at a time per thread; the callbacks are thread-local.
thread_local int t_depth = 0;
thread_local std::map<std::string, OpProfile::Row>* t_rows = nullptr;

struct Started : at::ObserverContext {
  Clock::time_point t;
};

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction&) {
  if (t_depth++ != 0) return nullptr;
  auto c = std::make_unique<Started>();
  c->t = Clock::now();
  return c;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext* ctx) {
  --t_depth;
  if (!ctx || !t_rows) return;
  auto& r = (*t_rows)[fn.name()];
  r.calls += 1;
  r.ms += std::chrono::duration<double, std::milli>(Clock::now() - static_cast<Started*>(ctx)->t).count();
}

}  // namespace

static thread_local std::map<std::string, OpProfile::Row> t_store;

OpProfile::OpProfile() {
  t_store.clear();
  t_rows = &t_store;
  t_depth = 0;
  handle_ = at::addThreadLocalCallback(at::RecordFunctionCallback(on_start, on_end).scopes({at::RecordScope::FUNCTION}));
  on_ = true;
}

OpProfile::~OpProfile() { stop(); }

void OpProfile::stop() {
  if (!on_) return;
  at::removeCallback(handle_);
  t_rows = nullptr;
  on_ = false;
}

double OpProfile::total_ms() const {
  double s = 0;
  for (const auto& [k, r] : t_store) s += r.ms;
  return s;
}

nlohmann::json OpProfile::table(int runs, double min_share) const {
  std::vector<std::pair<std::string, Row>> rows(t_store.begin(), t_store.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  const double total = std::max(total_ms(), 1e-9);
  const double n = std::max(runs, 1);
  nlohmann::json out = nlohmann::json::array();
  Row other;
  for (const auto& [name, r] : rows) {
    if (r.ms / total < min_share) {
      other.calls += r.calls;
      other.ms += r.ms;
      continue;
    }
    out.push_back({{"op", name}, {"calls", double(r.calls) / n}, {"ms", r.ms / n}, {"share", r.ms / total}});
  }
  if (other.calls)
    out.push_back({{"op", "(other)"}, {"calls", double(other.calls) / n}, {"ms", other.ms / n}, {"share", other.ms / total}});
  return out;
}

std::string format_profile(const nlohmann::json& table) {
  std::string s;
  char line[256];
  for (const auto& r : table) {
    std::snprintf(line, sizeof(line), "  %-34s %7.1f calls %8.2f ms %5.1f%%\n", r["op"].get<std::string>().c_str(),
                  r["calls"].get<double>(), r["ms"].get<double>(), 100 * r["share"].get<double>());
    s += line;
  }
  return s;
}

}  // namespace rsam
