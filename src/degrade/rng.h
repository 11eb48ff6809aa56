// The degradation engine's own random number generator.
//
// Every random draw in rsam::degrade goes through Rng, never cv::theRNG or
// std::*_distribution: the former is global state shared across threads, the
// latter are implementation-defined (libstdc++ and libc++ give different
// streams). xoshiro256** seeded through splitmix64 gives the same bytes on
// every platform and is cheap enough for per-pixel noise.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

namespace rsam::degrade {

// splitmix64 finaliser: a good 64-bit mixer, used for seeding and for
// deriving independent child seeds.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Seed for a sub-stream `index` of `seed` (row blocks, images, corruptions).
inline uint64_t derive_seed(uint64_t seed, uint64_t index) {
  return mix64(seed ^ mix64(index + 0x632be59bd9b4e019ULL));
}

// FNV-1a of a string, mixed: turns names and relative paths into seed material.
inline uint64_t hash_string(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return mix64(h);
}

class Rng {
 public:
  explicit Rng(uint64_t seed) {
    uint64_t x = seed;
    for (auto& s : s_) {
      x += 0x9e3779b97f4a7c15ULL;
      s = mix64(x);
    }
  }

  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Uniform in (0, 1]: safe to take the log of.
  double uniform_open0() { return static_cast<double>((next() >> 11) + 1) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Integer uniform in [lo, hi] inclusive (bias below 2^-40 for the ranges used here).
  int uniform_int(int lo, int hi) {
    const uint64_t n = static_cast<uint64_t>(static_cast<int64_t>(hi) - lo + 1);
    return lo + static_cast<int>(((next() >> 32) * n) >> 32);
  }
  bool bernoulli(double p) { return uniform() < p; }

  // Standard normal by the ziggurat method (256 layers, Doornik's variant):
  // about 99% of draws cost one 64-bit number and one comparison, an order of
  // magnitude cheaper than Box-Muller's log and trigonometry.
  double normal() {
    const Ziggurat& z = ziggurat();
    for (;;) {
      const uint64_t bits = next();
      const int i = static_cast<int>(bits & 255);
      // Signed uniform in [-1, 1) from the top 53 bits.
      const double u = static_cast<double>(static_cast<int64_t>(bits) >> 11) * 0x1.0p-52;
      const double x = u * z.x[i];
      if (std::fabs(x) < z.x[i + 1]) return x;
      if (i == 0) {  // the tail beyond r, by Marsaglia's exponential method
        double a, b;
        do {
          a = -std::log(uniform_open0()) / z.r;
          b = -std::log(uniform_open0());
        } while (b + b < a * a);
        return u < 0 ? -(z.r + a) : z.r + a;
      }
      const double f0 = std::exp(-0.5 * z.x[i] * z.x[i]), f1 = std::exp(-0.5 * z.x[i + 1] * z.x[i + 1]);
      if (f0 + uniform() * (f1 - f0) < std::exp(-0.5 * x * x)) return x;
    }
  }

 private:
  struct Ziggurat {
    static constexpr double r = 3.6541528853610088;  // start of the tail for 256 layers
    double x[257];
    Ziggurat() {
      const double v = 0.00492867323399;  // area of each layer
      const double fr = std::exp(-0.5 * r * r);
      x[0] = v / fr;  // the base layer's equivalent width (strip plus tail)
      x[1] = r;
      for (int i = 2; i < 256; ++i) x[i] = std::sqrt(-2.0 * std::log(v / x[i - 1] + std::exp(-0.5 * x[i - 1] * x[i - 1])));
      x[256] = 0.0;
    }
  };
  static const Ziggurat& ziggurat() {
    static const Ziggurat z;
    return z;
  }
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace rsam::degrade
