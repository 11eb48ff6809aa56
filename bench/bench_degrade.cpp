// Images per second for every corruption at 512^2 and 1024^2:
//   cv1   one image at a time, cv::setNumThreads(1)
//   cv2   one image at a time, cv::setNumThreads(2) (row-parallel inside a corruption)
//   jobs2 two images at once on two threads, OpenCV single-threaded each
//         (what `rsam degrade --jobs 2` and a two-worker data loader do)
// items_per_second is images per second. Run with --benchmark_min_time=0.5 for
// steadier numbers; docs/degradations.md lists measured results.
#include <benchmark/benchmark.h>

#include <opencv2/core/utility.hpp>
#include <opencv2/imgproc.hpp>

#include "degrade/corruption.h"
#include "degrade/rng.h"

namespace {

using rsam::degrade::Rng;

// A photo-like test image: dead leaves (discs with power-law radii).
cv::Mat test_image(int size) {
  Rng rng(7);
  cv::Mat img(size, size, CV_8UC3, cv::Scalar::all(128));
  for (int i = 0; i < size * size / 6; ++i) {
    const double u = rng.uniform(), rmax = size / 4.0;
    const double r = 1.0 / std::sqrt(1.0 - u * (1.0 - 1.0 / (rmax * rmax)));
    cv::circle(img, cv::Point(rng.uniform_int(0, size - 1), rng.uniform_int(0, size - 1)), std::max(1, static_cast<int>(r)),
               cv::Scalar(rng.uniform_int(0, 255), rng.uniform_int(0, 255), rng.uniform_int(0, 255)), cv::FILLED);
  }
  return img;
}

const cv::Mat& image(int size) {
  static const cv::Mat i512 = test_image(512), i1024 = test_image(1024);
  return size == 512 ? i512 : i1024;
}

// OpenCV's thread count is global: set once per benchmark, before its threads start.
void cv_threads_1(const benchmark::State&) { cv::setNumThreads(1); }
void cv_threads_2(const benchmark::State&) { cv::setNumThreads(2); }

void run(benchmark::State& state, const std::string& name, int size) {
  const auto c = rsam::degrade::create(name);
  const cv::Mat& img = image(size);
  uint64_t seed = static_cast<uint64_t>(state.thread_index()) << 32;
  for (auto _ : state) benchmark::DoNotOptimize(c->run(img, seed++).image.data);
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

int main(int argc, char** argv) {
  image(512);  // build the inputs outside the timed region
  image(1024);
  for (const std::string& name : rsam::degrade::expand("all")) {
    for (int size : {512, 1024}) {
      const std::string base = name + "/" + std::to_string(size);
      benchmark::RegisterBenchmark((base + "/cv1").c_str(), [=](benchmark::State& s) { run(s, name, size); })
          ->Setup(cv_threads_1)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
      benchmark::RegisterBenchmark((base + "/cv2").c_str(), [=](benchmark::State& s) { run(s, name, size); })
          ->Setup(cv_threads_2)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
      benchmark::RegisterBenchmark((base + "/jobs2").c_str(), [=](benchmark::State& s) { run(s, name, size); })
          ->Setup(cv_threads_1)
          ->Unit(benchmark::kMillisecond)
          ->Threads(2)
          ->UseRealTime();
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
