#include "serve/metrics.h"

#include <malloc.h>

#include <fstream>
#include <sstream>

#include "model/runtime.h"

namespace rsam::serve {

void read_process_memory(Gauges& g) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    const auto kb = [&] { return size_t(std::stoull(line.substr(line.find(':') + 1))) * 1024; };
    if (line.rfind("VmRSS:", 0) == 0) g.rss = kb();
    if (line.rfind("VmHWM:", 0) == 0) g.rss_peak = kb();
  }
  g.cpu_allocator_cached = cpu_cache_bytes();
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  const struct mallinfo2 mi = mallinfo2();
  g.malloc_in_use = mi.uordblks + mi.hblkhd;
  g.malloc_free = mi.fordblks;
#endif
}

void Metrics::Histogram::add(double s) {
  for (size_t i = 0; i < kBounds.size(); ++i)
    if (s <= kBounds[i]) ++buckets[i];
  ++count;
  sum += s;
}

void Metrics::request(const std::string& route, int status, double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{route, status}];
  if (seconds >= 0) latency_[route].add(seconds);
}

void Metrics::work(const std::string& kind, double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  work_[kind].add(seconds);
}

void Metrics::cache(bool hit) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++(hit ? hits_ : misses_);
}

void Metrics::busy() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++busy_;
}

namespace {
void histogram(std::ostringstream& o, const std::string& name, const std::string& label, const std::string& value,
               const std::array<uint64_t, 12>& buckets, const std::array<double, 12>& bounds, uint64_t count,
               double sum) {
  const std::string sel = label + "=\"" + value + "\"";
  for (size_t i = 0; i < bounds.size(); ++i)
    o << name << "_bucket{" << sel << ",le=\"" << bounds[i] << "\"} " << buckets[i] << "\n";
  o << name << "_bucket{" << sel << ",le=\"+Inf\"} " << count << "\n";
  o << name << "_sum{" << sel << "} " << sum << "\n";
  o << name << "_count{" << sel << "} " << count << "\n";
}
}  // namespace

std::string Metrics::render(const Gauges& g) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::ostringstream o;
  o << "# HELP rsam_http_requests_total Requests answered, by route and status.\n"
       "# TYPE rsam_http_requests_total counter\n";
  for (const auto& [k, n] : requests_)
    o << "rsam_http_requests_total{route=\"" << k.first << "\",code=\"" << k.second << "\"} " << n << "\n";
  o << "# HELP rsam_http_request_duration_seconds Time from routing to response, by route.\n"
       "# TYPE rsam_http_request_duration_seconds histogram\n";
  for (const auto& [route, h] : latency_)
    histogram(o, "rsam_http_request_duration_seconds", "route", route, h.buckets, kBounds, h.count, h.sum);
  o << "# HELP rsam_model_seconds Model work: image encodes and prompt decodes.\n"
       "# TYPE rsam_model_seconds histogram\n";
  for (const auto& [kind, h] : work_) histogram(o, "rsam_model_seconds", "kind", kind, h.buckets, kBounds, h.count, h.sum);
  o << "# TYPE rsam_cache_hits_total counter\nrsam_cache_hits_total " << hits_ << "\n";
  o << "# TYPE rsam_cache_misses_total counter\nrsam_cache_misses_total " << misses_ << "\n";
  o << "# HELP rsam_encode_rejected_total Encodes refused with 503 (queue full or wait too long).\n"
       "# TYPE rsam_encode_rejected_total counter\nrsam_encode_rejected_total " << busy_ << "\n";
  o << "# TYPE rsam_cache_bytes gauge\nrsam_cache_bytes " << g.cache_bytes << "\n";
  o << "# TYPE rsam_cache_bound_bytes gauge\nrsam_cache_bound_bytes " << g.cache_bound << "\n";
  o << "# TYPE rsam_cache_images gauge\nrsam_cache_images " << g.cache_images << "\n";
  o << "# TYPE rsam_encodes_active gauge\nrsam_encodes_active " << g.encodes_active << "\n";
  o << "# HELP rsam_encode_queue_depth Encodes waiting for a slot.\n"
       "# TYPE rsam_encode_queue_depth gauge\nrsam_encode_queue_depth " << g.encodes_waiting << "\n";
  o << "# TYPE rsam_decodes_active gauge\nrsam_decodes_active " << g.decodes_active << "\n";
  o << "# HELP rsam_process_resident_bytes Resident memory now (VmRSS) and at its peak (VmHWM).\n"
       "# TYPE rsam_process_resident_bytes gauge\nrsam_process_resident_bytes " << g.rss << "\n"
       "# TYPE rsam_process_resident_peak_bytes gauge\nrsam_process_resident_peak_bytes " << g.rss_peak << "\n";
  o << "# HELP rsam_cpu_allocator_cached_bytes Freed tensor blocks kept for reuse by the CPU allocator.\n"
       "# TYPE rsam_cpu_allocator_cached_bytes gauge\nrsam_cpu_allocator_cached_bytes " << g.cpu_allocator_cached
    << "\n";
  o << "# HELP rsam_malloc_bytes malloc's memory: in use (heap and mmap) and free but held (heap).\n"
       "# TYPE rsam_malloc_bytes gauge\nrsam_malloc_bytes{state=\"in_use\"} " << g.malloc_in_use << "\n"
    << "rsam_malloc_bytes{state=\"free\"} " << g.malloc_free << "\n";
  return o.str();
}

}  // namespace rsam::serve
