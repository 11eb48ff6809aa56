// The degradation engine's own random number generator.
//
// Every random draw in rsam::degrade goes through Rng, never cv::theRNG or
// std::*_distribution: the former is global state shared across threads, the
// latter are implementation-defined (libstdc++ and libc++ give different
// streams). xoshiro256** seeded through splitmix64 gives the same bytes on
// every platform and is cheap enough for per-pixel noise.
#pragma once

#include <algorithm>
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

  uint64_t next() { return step(s_); }

  // n successive next() values. The state stays in registers through the
  // loop (next() in a loop with other stores keeps it in memory, a
  // store-to-load round trip per draw).
  void fill_bits(uint64_t* out, size_t n) {
    uint64_t s[4] = {s_[0], s_[1], s_[2], s_[3]};
    for (size_t i = 0; i < n; ++i) out[i] = step(s);
    for (int i = 0; i < 4; ++i) s_[i] = s[i];
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
    const uint64_t bits = next();
    const int i = static_cast<int>(bits & 255);
    // Signed uniform in [-1, 1) from the top 53 bits.
    const double u = static_cast<double>(static_cast<int64_t>(bits) >> 11) * 0x1.0p-52;
    const double x = u * z.x[i];
    if (std::fabs(x) < z.x[i + 1]) return x;
    return normal_outside_core(z, i, u);
  }

  // n standard normals in float, two per 64-bit draw: normal()'s ziggurat on
  // 32 bits each (8 pick the layer, 24 a signed coordinate across it). About
  // 99 % of draws land inside their layer's core and cost a shift, a table
  // look-up and a compare; the rest take normal()'s exact wedge and tail
  // tests and, if rejected, a fresh normal(). The law is normal()'s with the
  // coordinate quantised to 2^-23 of the layer width (normal() uses 2^-52):
  // test Rng.FillNormalIsStandardNormal.
  // (The draws come in chunks from fill_bits; the rare extra draws of the
  // wedge and tail tests follow each chunk.)
  void fill_normal(float* out, size_t n) {
    const Ziggurat& z = ziggurat();
    constexpr size_t kChunk = 256;  // 64-bit draws
    uint64_t bits[kChunk];
    for (size_t k = 0; k < n; k += 2 * kChunk) {
      const size_t m = std::min(n - k, 2 * kChunk);  // normals in this chunk
      fill_bits(bits, (m + 1) / 2);
      for (size_t i = 0; i < m; ++i) {
        const auto half = static_cast<uint32_t>(i % 2 == 0 ? bits[i / 2] : bits[i / 2] >> 32);
        out[k + i] = normal_from_bits(z, half);
      }
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
      for (int i = 2; i < 256; ++i)
        x[i] = std::sqrt(-2.0 * std::log(v / x[i - 1] + std::exp(-0.5 * x[i - 1] * x[i - 1])));
      x[256] = 0.0;
      for (int i = 0; i < 256; ++i) {
        // Core of layer i: |j| < kn[i] <=> |j| * 2^-23 * x[i] < x[i + 1].
        kn[i] = static_cast<int32_t>(std::ceil(x[i + 1] / x[i] * 0x1.0p23));
        wn[i] = static_cast<float>(x[i] * 0x1.0p-23);
      }
    }
    int32_t kn[256];  // fill_normal's core bound per layer, in units of 2^-23 of the width
    float wn[256];    // layer width x 2^-23
  };
  // One fill_normal() draw from 32 random bits.
  float normal_from_bits(const Ziggurat& z, uint32_t bits) {
    const int i = static_cast<int>(bits & 255);
    const int32_t j = static_cast<int32_t>(bits) >> 8;  // arithmetic shift: signed, in [-2^23, 2^23)
    if ((j < 0 ? -j : j) < z.kn[i]) return static_cast<float>(j) * z.wn[i];
    return static_cast<float>(normal_outside_core(z, i, j * 0x1.0p-23));
  }
  // normal()'s tests for a draw outside its layer's core (u in [-1, 1)).
  double normal_outside_core(const Ziggurat& z, int i, double u) {
    const double x = u * z.x[i];
    if (i == 0) {  // beyond r: the tail
      double a, b;
      do {
        a = -std::log(uniform_open0()) / z.r;
        b = -std::log(uniform_open0());
      } while (b + b < a * a);
      return u < 0 ? -(z.r + a) : z.r + a;
    }
    const double f0 = std::exp(-0.5 * z.x[i] * z.x[i]), f1 = std::exp(-0.5 * z.x[i + 1] * z.x[i + 1]);
    if (f0 + uniform() * (f1 - f0) < std::exp(-0.5 * x * x)) return x;
    return normal();  // rejected: any exact normal draw keeps the law exact
  }
  static const Ziggurat& ziggurat() {
    static const Ziggurat z;
    return z;
  }
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static uint64_t step(uint64_t* s) {  // xoshiro256**
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  }
  uint64_t s_[4];
};

}  // namespace rsam::degrade
