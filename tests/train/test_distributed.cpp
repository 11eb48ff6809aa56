// Data-parallel training's environment: the rank torchrun's variables name
// and the cores each local process gets.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "error.h"
#include "train_helpers.h"
#include "train/distributed.h"

namespace fs = std::filesystem;
using namespace rsam_test;

TEST(Distributed, ReadsItsRankAndSharesTheCores) {
  const char* old = std::getenv("RANK");
  const std::string saved = old ? old : "";
  unsetenv("RANK");
  EXPECT_FALSE(rsam::train::started_as_rank());
  EXPECT_EQ(rsam::train::rank_from_env(), 0);
  setenv("RANK", "3", 1);
  EXPECT_TRUE(rsam::train::started_as_rank());
  EXPECT_EQ(rsam::train::rank_from_env(), 3);
  setenv("RANK", "x", 1);  // atoi would have made this rank 0
  EXPECT_THROW(rsam::train::rank_from_env(), rsam::Error);
  if (old)
    setenv("RANK", saved.c_str(), 1);
  else
    unsetenv("RANK");
  const int cores = std::max(1, int(std::thread::hardware_concurrency()));
  EXPECT_EQ(rsam::train::threads_per_process(1), cores);
  EXPECT_EQ(rsam::train::threads_per_process(cores), 1);
  EXPECT_EQ(rsam::train::threads_per_process(4 * cores), 1);  // never zero
  EXPECT_EQ(rsam::train::threads_per_process(0), cores);
}
