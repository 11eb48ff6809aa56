// The server's counters, rendered as Prometheus text (GET /metrics).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace rsam::serve {

// What the engine reports at render time (gauges).
struct Gauges {
  size_t cache_bytes = 0, cache_bound = 0, cache_images = 0;
  int encodes_active = 0, encodes_waiting = 0, decodes_active = 0;
  // Where the process's memory is (docs/serve.md, Memory): resident now
  // and at its peak, the freed blocks torch's CPU allocator keeps for
  // reuse, and malloc's heap in use and free-but-held.
  size_t rss = 0, rss_peak = 0, cpu_allocator_cached = 0, malloc_in_use = 0, malloc_free = 0;
};
// Fills the process-memory half of `g`.
void read_process_memory(Gauges& g);

class Metrics {
 public:
  // One finished request: route label (e.g. "segment"), status, duration.
  void request(const std::string& route, int status, double seconds);
  // Model work: "encode" or "decode", seconds.
  void work(const std::string& kind, double seconds);
  void cache(bool hit);
  void busy();  // an encode refused with 503
  std::string render(const Gauges& g) const;

 private:
  static constexpr std::array<double, 12> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                     0.5,   1,    2.5,   5,    10,  30};
  struct Histogram {
    std::array<uint64_t, kBounds.size()> buckets{};
    uint64_t count = 0;
    double sum = 0;
    void add(double s);
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, Histogram> latency_, work_;
  uint64_t hits_ = 0, misses_ = 0, busy_ = 0;
};

}  // namespace rsam::serve
