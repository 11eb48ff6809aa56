// Unit tests of the model layer that do not need the official fixtures'
// outputs: the fast attention against the reference, config detection,
// strict loading, prompt validation, round trips.
#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <thread>

#include "error.h"
#include "io/tensor_file.h"
#include "model/attention.h"
#include "model/autocast.h"
#include "model/checkpoint.h"
#include "model/mask_resize.h"
#include "model/predictor.h"
#include "model/runtime.h"
#include "tiny_config.h"

namespace {

const std::string kData = RSAM_TEST_DATA_DIR "/sam/";

rsam::SamConfig tiny() { return rsam::testing::tiny_config(); }

std::string tmp_path(const std::string& name) { return ::testing::TempDir() + "rsam_" + name; }

}  // namespace

TEST(Attention, ChunkedEqualsReference) {
  torch::manual_seed(3);
  for (auto [H, W, chunk] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{8, 8, 64}, {6, 10, 100}, {5, 7, 1}}) {
    const int64_t B = 3, C = 16;
    auto q = torch::randn({B, H * W, C}), k = torch::randn({B, H * W, C}), v = torch::randn({B, H * W, C});
    auto Rh = rsam::get_rel_pos(H, H, torch::randn({2 * H - 1, C}));
    auto Rw = rsam::get_rel_pos(W, W, torch::randn({2 * W - 1, C}));
    auto ref = rsam::attention_with_rel_pos_reference(q, k, v, Rh, Rw, H, W, 0.25);
    auto fast = rsam::attention_with_rel_pos_chunked(q, k, v, Rh, Rw, H, W, 0.25, chunk);
    EXPECT_LE((ref - fast).abs().max().item<double>(), 1e-5) << H << "x" << W;
  }
}

TEST(Attention, RelPosIsResizedWhenTableSizeDiffers) {
  auto table = torch::arange(5, torch::kFloat32).unsqueeze(1);  // trained for size 3
  auto r = rsam::get_rel_pos(4, 4, table);                      // needs 7 entries
  EXPECT_EQ(r.sizes(), (std::vector<int64_t>{4, 4, 1}));
  // Linear interpolation keeps the ends and monotonicity.
  EXPECT_FLOAT_EQ(r[3][0][0].item<float>(), 4.0f);
  EXPECT_FLOAT_EQ(r[0][3][0].item<float>(), 0.0f);
}

namespace {
double rel_err(const torch::Tensor& a, const torch::Tensor& ref) {
  return ((a.to(torch::kFloat32) - ref).norm() / ref.norm()).item<double>();
}
}  // namespace

// softmax(..) @ v is the product that torch 1.13's fallback gemm (CPUs without
// oneDNN bf16) accumulates in bf16: 1.2% off on this shape, measured on an
// AVX2 EPYC, against ~0.17% for the rounding of the inputs alone.
TEST(Bf16, AttentionProductAccumulatesInFp32) {
  torch::manual_seed(5);
  auto attn = torch::softmax(3 * torch::randn({4, 1024, 1024}), -1), v = torch::randn({4, 1024, 64});
  const auto ref =
      torch::matmul(attn.to(torch::kBFloat16).to(torch::kFloat32), v.to(torch::kBFloat16).to(torch::kFloat32));
  rsam::Bf16Autocast ac(torch::kCPU);
  const auto out = torch::matmul(attn, rsam::bf16_safe_rhs(v));
  EXPECT_EQ(out.scalar_type(), torch::kBFloat16);
  EXPECT_LE(rel_err(out, ref), 0.004);
}

TEST(Bf16, ConvolutionsKeepFp32UnderCpuAutocast) {
  torch::manual_seed(6);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(8, 16, 3).padding(1));
  auto x = torch::randn({1, 8, 20, 20});
  const auto ref = conv->forward(x);
  {
    rsam::Bf16Autocast ac(torch::kCPU);
    EXPECT_EQ(conv->forward(x).scalar_type(), torch::kBFloat16);  // what autocast alone does
    const auto out = rsam::conv_fp32_on_cpu(*conv, x);
    EXPECT_EQ(out.scalar_type(), torch::kFloat32);
    EXPECT_TRUE(torch::equal(out, ref));
    // A bf16 input is widened, not rejected.
    EXPECT_LE(rel_err(rsam::conv_fp32_on_cpu(*conv, x.to(torch::kBFloat16)), ref), 0.01);
  }
  // Without autocast nothing changes: fp32 in, the conv as it is.
  EXPECT_TRUE(torch::equal(rsam::conv_fp32_on_cpu(*conv, x), ref));
  EXPECT_TRUE(rsam::bf16_safe_rhs(x).is_same(x));
}

TEST(Window, PartitionRoundTripsWithPadding) {
  auto x = torch::randn({2, 8, 8, 4});
  auto [w, pad] = rsam::window_partition(x, 3);
  EXPECT_EQ(w.size(0), 2 * 9);
  EXPECT_EQ(pad, (std::pair<int64_t, int64_t>{9, 9}));
  EXPECT_TRUE(torch::equal(rsam::window_unpartition(w, 3, pad, {8, 8}), x));
}

TEST(Config, PresetsAreDetectedFromShapes) {
  for (auto cfg : {rsam::SamConfig::vit_b(), tiny()}) {
    rsam::Sam m(cfg);
    auto sd = rsam::state_dict_of(*m);
    EXPECT_EQ(rsam::detect_config(sd), cfg) << cfg.to_json();
  }
  EXPECT_EQ(rsam::SamConfig::vit_b().type_name(), "vit_b");
  EXPECT_EQ(rsam::SamConfig::vit_h().type_name(), "vit_h");
  EXPECT_EQ(tiny().type_name(), "custom");
}

TEST(Config, OfficialVitBHasTheOfficialKeyCount) {
  rsam::Sam m(rsam::SamConfig::vit_b());
  auto sd = rsam::state_dict_of(*m);
  EXPECT_EQ(sd.size(), 314u);  // as sam_vit_b_01ec64.pth
  // As sum(p.numel() for p in sam.parameters()); the file also holds the
  // prompt encoder's 2x128 Gaussian matrix, a buffer.
  EXPECT_EQ(rsam::parameter_count(*m), 93735472);
  EXPECT_EQ(rsam::parameter_count(sd), 93735472);
  EXPECT_EQ(sd.front().first, "image_encoder.pos_embed");
  bool found = false;
  for (const auto& [k, t] : sd)
    if (k == "image_encoder.blocks.2.attn.rel_pos_h") {
      found = true;
      EXPECT_EQ(t.shape, (std::vector<int64_t>{127, 64}));
    }
  EXPECT_TRUE(found);
}

TEST(Config, JsonRoundTrip) {
  auto c = tiny();
  c.decoder_num_heads = 4;
  EXPECT_EQ(rsam::SamConfig::from_json(c.to_json()), c);
  EXPECT_THROW(rsam::SamConfig::from_json("{\"encoder_num_heads\": 5}"), rsam::Error);
  EXPECT_THROW(rsam::SamConfig::from_json("not json"), rsam::Error);
}

TEST(Load, MissingUnexpectedAndMisshapedKeysAreNamed) {
  rsam::Sam m(tiny());
  auto sd = rsam::state_dict_of(*m);
  auto expect_error = [&](rsam::io::StateDict bad, const std::string& needle) {
    rsam::Sam target(tiny());
    try {
      rsam::load_state_dict(*target, bad, "x.pth");
      FAIL() << "no error for " << needle;
    } catch (const rsam::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto missing = sd;
  missing.erase(missing.begin() + 5);
  expect_error(missing, sd[5].first);
  auto extra = sd;
  extra.emplace_back("mask_decoder.surprise", sd[0].second);
  expect_error(extra, "mask_decoder.surprise");
  auto shaped = sd;
  shaped[0].second.shape = {1, 2, 2, 128};
  expect_error(shaped, sd[0].first);
  auto nan = sd;
  reinterpret_cast<float*>(nan[3].second.data.data())[0] = std::nanf("");
  expect_error(nan, "NaN");
}

TEST(Load, SafetensorsRoundTripKeepsConfigAndWeights) {
  torch::manual_seed(1);
  auto cfg = tiny();
  cfg.decoder_num_heads = 4;  // not visible in shapes: must travel in metadata
  rsam::Sam m(cfg);
  const auto path = tmp_path("roundtrip.safetensors");
  rsam::save_sam(m, path);
  auto back = rsam::load_sam(path);
  EXPECT_EQ(back.model->config, cfg);
  auto a = rsam::state_dict_of(*m), b = rsam::state_dict_of(*back.model);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].second.data, b[i].second.data) << a[i].first;
  std::remove(path.c_str());
}

// The mapped .safetensors load checks every weight's bits itself: a NaN,
// an Inf or a cut-off file is a one-line error, not a model.
TEST(Load, MappedSafetensorsRejectNonFiniteAndTruncatedFiles) {
  torch::manual_seed(1);
  rsam::Sam m(tiny());
  const auto sd = rsam::state_dict_of(*m);
  const std::map<std::string, std::string> meta{{"rsam.config", m->config.to_json()}};
  const auto path = tmp_path("nonfinite.safetensors");
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    auto s = sd;
    auto& t = s[7].second;
    reinterpret_cast<float*>(t.data.data())[t.numel() - 1] = bad;
    rsam::io::save_safetensors(path, s, meta);
    try {
      rsam::load_sam(path);
      FAIL() << "no error for " << bad;
    } catch (const rsam::Error& e) {
      EXPECT_NE(std::string(e.what()).find("'" + s[7].first + "' holds NaN or Inf"), std::string::npos) << e.what();
    }
  }
  rsam::io::save_safetensors(path, sd, meta);
  std::FILE* f = std::fopen(path.c_str(), "rb");
  std::vector<char> bytes(1 << 20);
  bytes.resize(std::fread(bytes.data(), 1, bytes.size(), f));
  std::fclose(f);
  f = std::fopen(path.c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size() - 5, f);
  std::fclose(f);
  EXPECT_THROW(rsam::load_sam(path), rsam::Error);
  std::remove(path.c_str());
}

// What the caching CPU allocator is for: an encode reuses the pages the
// previous encode freed instead of faulting fresh ones in. With torch's own
// allocator the attention maps and activations here (1-8 MB each) go back to
// the kernel on free and fault in again on every encode.
TEST(Runtime, ARepeatedEncodeDoesNotPageFaultAgain) {
  rsam::use_caching_cpu_allocator();
  auto cfg = rsam::testing::tiny_config();
  cfg.img_size = 256;  // a 32x32 grid: the global block's map is 8 MB
  torch::manual_seed(0);
  rsam::Sam model(cfg);
  model->eval();
  torch::NoGradGuard ng;
  const auto x = torch::randn({1, 3, 256, 256});
  auto faults = [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt;
  };
  const auto first = model->image_encoder->forward(x);  // the cache fills
  model->image_encoder->forward(x);
  const long before = faults();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(model->image_encoder->forward(x), first));
  EXPECT_LT(faults() - before, 300) << "freed tensor memory went back to the kernel";
  EXPECT_GT(rsam::cpu_cache_bytes(), 0u);
}

TEST(Runtime, CacheBoundFromTheEnvironmentSetting) {
  EXPECT_EQ(rsam::cpu_cache_bound(nullptr), size_t(2) << 30);
  EXPECT_EQ(rsam::cpu_cache_bound("0"), 0u);
  EXPECT_EQ(rsam::cpu_cache_bound("8"), size_t(8) << 30);
  EXPECT_EQ(rsam::cpu_cache_bound("0.5"), size_t(1) << 29);
  for (const char* bad : {"", "abc", "-1", "2x", "nan", "inf", "1e9"})
    EXPECT_THROW(rsam::cpu_cache_bound(bad), rsam::Error) << bad;
}

TEST(Runtime, CachedBlocksAreReusedAndBounded) {
  rsam::use_caching_cpu_allocator();
  rsam::release_cpu_cache();
  void* first;
  {
    auto t = torch::full({1 << 20}, 3.f);  // 4 MB
    first = t.data_ptr();
  }
  EXPECT_GE(rsam::cpu_cache_bytes(), size_t(4) << 20);
  auto u = torch::empty({1 << 20});  // same size class: the same block
  EXPECT_EQ(u.data_ptr(), first);
  auto w = torch::zeros({(1 << 20) + 1000});  // 1/8 rounding: also one class up from 4 MB
  EXPECT_TRUE(torch::all(w == 0).item<bool>());
  // Small tensors stay with malloc and never enter the cache.
  rsam::release_cpu_cache();
  { auto s = torch::ones({1000}); }
  EXPECT_EQ(rsam::cpu_cache_bytes(), 0u);
  // raw_allocate / raw_deallocate, the path oneDNN's scratch memory takes.
  auto* a = c10::GetCPUAllocator();
  void* raw = a->raw_allocate(size_t(1) << 20);
  std::memset(raw, 1, size_t(1) << 20);
  a->raw_deallocate(raw);
  void* raw_small = a->raw_allocate(100);
  a->raw_deallocate(raw_small);
  // The bound: a 1 MB cap keeps at most 1 MB of freed blocks.
  rsam::use_caching_cpu_allocator(size_t(1) << 20);
  { auto big = torch::empty({1 << 20}), small = torch::empty({1 << 17}); }  // 4 MB, 512 KB
  EXPECT_LE(rsam::cpu_cache_bytes(), size_t(1) << 20);
  EXPECT_GT(rsam::cpu_cache_bytes(), 0u) << "the 512 KB block fits the bound";
  rsam::use_caching_cpu_allocator();
  rsam::release_cpu_cache();
  EXPECT_EQ(rsam::cpu_cache_bytes(), 0u);
}

// Blocks of 4 MiB and more are 2 MiB-aligned so that the huge-page advice
// covers them (whether the kernel grants it is the system's setting).
TEST(Runtime, LargeBlocksAreAlignedForHugePages) {
  if (std::getenv("RSAM_HUGEPAGES")) GTEST_SKIP() << "RSAM_HUGEPAGES is set";
  rsam::use_caching_cpu_allocator();
  rsam::release_cpu_cache();
  auto big = torch::full({3 << 20}, 2.f);  // 12 MB, a fresh block
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big.data_ptr()) % (uintptr_t(2) << 20), 0u);
  EXPECT_EQ(big.sum().item<double>(), 2.0 * (3 << 20));
  auto small = torch::full({1 << 18}, 1.f);  // 1 MB: malloc's alignment is enough
  EXPECT_EQ(small.sum().item<double>(), double(1 << 18));
}

TEST(Runtime, TimedPairsAlternateWhichRunsFirst) {
  std::string order;
  const rsam::PairTimes t = rsam::time_pairs(
      4, [&] { order += 'a'; }, [&] { order += 'b'; });
  EXPECT_EQ(order, "abbaabba");
  ASSERT_EQ(t.a.size(), 4u);
  ASSERT_EQ(t.b.size(), 4u);
  for (size_t k = 0; k < 4; ++k) EXPECT_TRUE(t.a[k] >= 0 && t.b[k] >= 0);
  // The time is the call's own (a lower bound only: an upper one would make
  // this a timed test).
  const rsam::PairTimes s = rsam::time_pairs(
      2, [] {}, [] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); });
  for (size_t k = 0; k < 2; ++k) EXPECT_GE(s.b[k], 0.02);
}

TEST(Resize, SameSizeIsAnExactCopy) {
  torch::manual_seed(4);
  rsam::Sam m(tiny());
  auto a = rsam::state_dict_of(*m), b = rsam::state_dict_of(*rsam::resize_input(m, tiny().img_size));
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].second.data, b[i].second.data) << a[i].first;
}

TEST(Resize, GlobalBlocksComputeWhatTheOfficialRunTimeResizeComputes) {
  torch::manual_seed(5);
  rsam::Sam m(tiny());  // 64 px, 8x8 grid; block 1 global, block 0 windowed (3)
  for (auto& p : m->parameters()) p.data().normal_(0, 0.2);
  auto big = rsam::resize_input(m, 96);  // 12x12 grid
  EXPECT_EQ(big->config.img_size, 96);
  EXPECT_EQ(rsam::detect_config(rsam::state_dict_of(*big)).img_size, 96);
  auto old_blocks = m->image_encoder->blocks, new_blocks = big->image_encoder->blocks;
  // The windowed table is the window's: unchanged. The global one spans the grid.
  auto w0 = old_blocks[0]->as<rsam::EncoderBlock>(), w1 = new_blocks[0]->as<rsam::EncoderBlock>();
  EXPECT_TRUE(torch::equal(w0->attn->rel_pos_h, w1->attn->rel_pos_h));
  auto g0 = old_blocks[1]->as<rsam::EncoderBlock>(), g1 = new_blocks[1]->as<rsam::EncoderBlock>();
  EXPECT_EQ(g1->attn->rel_pos_h.size(0), 23);
  // The 8x8 block given a 12x12 input interpolates its table at run time, as
  // the official get_rel_pos does; the converted block must agree.
  torch::NoGradGuard ng;
  auto x = torch::randn({1, 12, 12, 32});
  EXPECT_LE((g0->forward(x) - g1->forward(x)).abs().max().item<double>(), 1e-5);
  // A position embedding that is constant per channel stays so.
  m->image_encoder->pos_embed.data().copy_(
      torch::arange(32, torch::kFloat32).view({1, 1, 1, 32}).expand({1, 8, 8, 32}));
  auto pe = rsam::resize_input(m, 96)->image_encoder->pos_embed;
  EXPECT_EQ(pe.sizes(), (std::vector<int64_t>{1, 12, 12, 32}));
  EXPECT_LE((pe - torch::arange(32, torch::kFloat32).view({1, 1, 1, 32})).abs().max().item<double>(), 1e-5);
  // The converted model segments at its new size.
  rsam::SamPredictor pred(big);
  pred.set_image(rsam::Image8(96, 80, 3));
  rsam::Prompt box;
  box.box = std::array<float, 4>{10, 12, 50, 60};
  auto out = pred.predict(box);
  EXPECT_EQ(out.masks.sizes(), (std::vector<int64_t>{3, 80, 96}));
  EXPECT_EQ(out.low_res_logits.sizes(), (std::vector<int64_t>{3, 48, 48}));
  EXPECT_THROW(rsam::resize_input(m, 100), rsam::Error);  // not a multiple of the patch
}

TEST(Deepen, InsertsIdentityBlocksEvenly) {
  EXPECT_EQ(rsam::deepen_insert_after(6, 9), (std::vector<int>{1, 3, 5}));
  EXPECT_EQ(rsam::deepen_insert_after(6, 8), (std::vector<int>{2, 5}));
  EXPECT_EQ(rsam::deepen_insert_after(2, 6), (std::vector<int>{-1, 0, 0, 1}));
  torch::manual_seed(6);
  rsam::Sam m(tiny());  // block 0 windowed, block 1 global
  for (auto& p : m->parameters()) p.data().normal_(0, 0.2);
  torch::manual_seed(11);
  torch::rand({4});
  const auto next = torch::rand({4});
  torch::manual_seed(11);
  torch::rand({4});
  auto deep = rsam::deepen_encoder(m, 4);  // old 0, new, old 1 (global), new
  EXPECT_TRUE(torch::equal(torch::rand({4}), next)) << "the caller's random stream goes on as before";
  EXPECT_EQ(deep->config.encoder_depth, 4);
  EXPECT_EQ(deep->config.global_attn_indexes, (std::vector<int>{2}));
  auto sd = rsam::state_dict_of(*deep);
  const auto cfg = rsam::detect_config(sd);
  EXPECT_EQ(cfg.encoder_depth, 4);
  EXPECT_EQ(cfg.global_attn_indexes, (std::vector<int>{2}));
  // Old blocks are copied to their new places; new ones have a fresh input
  // side and zero output projections.
  auto block = [](rsam::Sam s, int i) { return s->image_encoder->blocks[i]->as<rsam::EncoderBlock>(); };
  EXPECT_TRUE(torch::equal(block(m, 1)->attn->qkv->weight, block(deep, 2)->attn->qkv->weight));
  EXPECT_TRUE(torch::equal(block(m, 1)->attn->rel_pos_h, block(deep, 2)->attn->rel_pos_h));
  EXPECT_GT(block(deep, 1)->attn->qkv->weight.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(block(deep, 3)->mlp->lin2->weight.abs().sum().item<double>(), 0.0);
  // The same function: identical image embeddings.
  auto x = torch::randn({1, 3, 64, 64});
  torch::Tensor a, b;
  {
    torch::NoGradGuard ng;
    a = m->image_encoder->forward(x);
    b = deep->image_encoder->forward(x);
  }
  EXPECT_TRUE(torch::equal(a, b));
  // Trainable: the zero projections get a gradient, so the new blocks learn.
  deep->train();
  deep->image_encoder->forward(x).pow(2).sum().backward();
  EXPECT_GT(block(deep, 1)->attn->proj->weight.grad().abs().sum().item<double>(), 0.0);
  EXPECT_GT(block(deep, 3)->mlp->lin2->weight.grad().abs().sum().item<double>(), 0.0);
  EXPECT_THROW(rsam::deepen_encoder(m, 2), rsam::Error);
  EXPECT_THROW(rsam::deepen_encoder(m, 100000), rsam::Error);
}

TEST(Widen, SameMasksAndScoresFromAWiderDecoder) {
  torch::manual_seed(8);
  rsam::Sam m(tiny());
  for (auto& p : m->parameters()) p.data().normal_(0, 0.2);  // LayerNorms far from identity too
  auto wide = rsam::widen_decoder(m, 64);
  EXPECT_EQ(wide->config.prompt_embed_dim, 64);
  EXPECT_EQ(wide->config.decoder_num_heads, 2 * m->config.decoder_num_heads);
  EXPECT_EQ(wide->config.decoder_mlp_dim, 2 * m->config.decoder_mlp_dim);
  EXPECT_TRUE(
      torch::equal(m->image_encoder->patch_embed->proj->weight, wide->image_encoder->patch_embed->proj->weight));
  const auto cfg = rsam::detect_config(rsam::state_dict_of(*wide), &wide->config);
  EXPECT_EQ(cfg, wide->config);
  // Points, a box and a mask input: every path through the prompt encoder.
  torch::manual_seed(3);
  rsam::Image8 img(72, 60, 3);
  auto px = torch::randint(0, 256, {60, 72, 3}, torch::kUInt8);
  std::memcpy(img.data.data(), px.data_ptr(), img.data.size());
  rsam::Prompt p;
  p.points = {{20, 30}, {50, 12}};
  p.labels = {1, 0};
  p.box = std::array<float, 4>{8, 5, 60, 50};
  p.mask_input = torch::randn({1, 32, 32});
  for (bool with_mask : {false, true}) {
    rsam::Prompt q = p;
    if (!with_mask) q.mask_input = torch::Tensor();
    rsam::SamPredictor a(m), b(wide);
    a.set_image(img);
    b.set_image(img);
    const auto ra = a.predict(q, true, false), rb = b.predict(q, true, false);
    const double scale = ra.low_res_logits.abs().max().item<double>();
    EXPECT_LE((ra.low_res_logits - rb.low_res_logits).abs().max().item<double>(), 1e-4 * scale) << with_mask;
    EXPECT_LE((ra.iou_predictions - rb.iou_predictions).abs().max().item<double>(), 1e-4) << with_mask;
  }
  // The copies' readers differ, so training pulls the copies apart: two
  // Adam steps on the decoder leave the two copies of an MLP unit unequal.
  wide->train();
  auto emb = wide->image_encoder->forward(torch::randn({1, 3, 64, 64})).detach();
  torch::optim::Adam opt(wide->mask_decoder->parameters(), torch::optim::AdamOptions(1e-2));
  auto boxes = torch::tensor({{4.f, 6.f, 40.f, 50.f}});
  for (int step = 0; step < 2; ++step) {
    opt.zero_grad();
    auto [sparse, dense] = wide->prompt_encoder->forward(std::nullopt, boxes, std::nullopt);
    auto [masks, iou] = wide->mask_decoder->forward(emb, wide->prompt_encoder->get_dense_pe(), sparse, dense, true);
    (masks.sigmoid().mean() + iou.pow(2).sum()).backward();
    opt.step();
  }
  const auto lin1 = wide->mask_decoder->transformer->layers[0]->as<rsam::TwoWayAttentionBlock>()->mlp->lin1->weight;
  const int64_t units = m->config.decoder_mlp_dim;
  EXPECT_GT((lin1.slice(0, 0, units) - lin1.slice(0, units, 2 * units)).abs().max().item<double>(), 1e-6);
  EXPECT_THROW(rsam::widen_decoder(m, 48), rsam::Error);  // not a multiple
  EXPECT_THROW(rsam::widen_decoder(m, 32), rsam::Error);  // not wider
}

TEST(Load, CorruptFilesGiveErrors) {
  const auto path = tmp_path("garbage.pth");
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fputs("this is not a checkpoint", f);
  std::fclose(f);
  EXPECT_THROW(rsam::load_sam(path), rsam::Error);
  EXPECT_THROW(rsam::load_sam(tmp_path("does_not_exist.pth")), rsam::Error);
  std::remove(path.c_str());
}

class PredictorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(0);
    pred = std::make_unique<rsam::SamPredictor>(rsam::Sam(tiny()));
    rsam::Image8 img(100, 60, 3);
    for (size_t i = 0; i < img.data.size(); ++i) img.data[i] = uint8_t(i * 7);
    pred->set_image(img);
  }
  std::unique_ptr<rsam::SamPredictor> pred;
};

TEST_F(PredictorTest, ShapesFollowTheReference) {
  rsam::Prompt p;
  p.points = {{50, 30}};
  p.labels = {1};
  auto r = pred->predict(p, true);
  EXPECT_EQ(r.masks.sizes(), (std::vector<int64_t>{3, 60, 100}));
  EXPECT_EQ(r.iou_predictions.sizes(), (std::vector<int64_t>{3}));
  EXPECT_EQ(r.low_res_logits.sizes(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(pred->embedding().sizes(), (std::vector<int64_t>{1, 32, 8, 8}));
  EXPECT_EQ(pred->predict(p, false).masks.size(0), 1);
}

TEST_F(PredictorTest, BadPromptsAreErrors) {
  rsam::Prompt outside;
  outside.points = {{101, 10}};
  outside.labels = {1};
  EXPECT_THROW(pred->predict(outside), rsam::Error);
  rsam::Prompt nan;
  nan.points = {{std::nanf(""), 10}};
  nan.labels = {1};
  EXPECT_THROW(pred->predict(nan), rsam::Error);
  rsam::Prompt box;
  box.box = std::array<float, 4>{10, 10, 5, 20};
  EXPECT_THROW(pred->predict(box), rsam::Error);
  rsam::Prompt mask;
  mask.mask_input = torch::zeros({1, 16, 16});
  EXPECT_THROW(pred->predict(mask), rsam::Error);
  rsam::Prompt label;
  label.points = {{1, 1}};
  label.labels = {7};
  EXPECT_THROW(pred->predict(label), rsam::Error);
  EXPECT_THROW(pred->predict(rsam::Prompt{}), rsam::Error);
  rsam::SamPredictor fresh{rsam::Sam(tiny())};
  EXPECT_THROW(fresh.predict(outside), rsam::Error);
}

TEST_F(PredictorTest, BatchedBoxesEqualOneAtATime) {
  auto boxes = torch::tensor({10.f, 5.f, 60.f, 40.f, 30.f, 20.f, 90.f, 55.f}).view({2, 4});
  auto batch = pred->predict_batch({}, {}, boxes, {}, true);
  for (int i = 0; i < 2; ++i) {
    rsam::Prompt p;
    p.box = std::array<float, 4>{boxes[i][0].item<float>(), boxes[i][1].item<float>(), boxes[i][2].item<float>(),
                                 boxes[i][3].item<float>()};
    auto one = pred->predict(p, true);
    EXPECT_LE((one.low_res_logits - batch.low_res_logits[i]).abs().max().item<double>(), 1e-5);
  }
}

TEST_F(PredictorTest, OnePointAloneReturnsTheBestScoredOfThree) {
  rsam::Prompt p;
  p.points = {{50, 30}};
  p.labels = {1};
  EXPECT_TRUE(rsam::is_ambiguous(p));
  const auto three = pred->predict(p, true);
  const int64_t k = rsam::best_index(three);
  for (int64_t j = 0; j < 3; ++j)
    EXPECT_LE(three.iou_predictions[j].item<float>(), three.iou_predictions[k].item<float>());
  const auto one = pred->predict_one(p);
  EXPECT_EQ(one.masks.size(0), 1);
  EXPECT_TRUE(torch::equal(one.low_res_logits[0], three.low_res_logits[k]));
  EXPECT_TRUE(torch::equal(one.masks[0], three.masks[k]));
  // A second point, a box or a mask input removes the ambiguity: the
  // single-mask output, as the reference's multimask_output=False.
  rsam::Prompt two = p;
  two.points.push_back({20, 10});
  two.labels.push_back(0);
  rsam::Prompt boxed = p;
  boxed.box = std::array<float, 4>{10, 5, 60, 40};
  rsam::Prompt masked = p;
  masked.mask_input = three.low_res_logits[k].unsqueeze(0);
  for (const auto* q : {&two, &boxed, &masked}) {
    EXPECT_FALSE(rsam::is_ambiguous(*q));
    EXPECT_TRUE(torch::equal(pred->predict_one(*q).low_res_logits, pred->predict(*q, false).low_res_logits));
  }
}

TEST(Pick, StabilityScoreIsTheIoUOfTheMaskThresholdedEitherSideOfZero) {
  // Mask 0: 4 pixels above +1, 8 above -1 -> 0.5. Mask 1: 2 of 2 -> 1.
  // Mask 2: nothing above -1 -> 0 (not NaN).
  auto l = torch::full({3, 4, 4}, -5.0f);
  l[0].view({-1}).slice(0, 0, 4).fill_(3.0f);
  l[0].view({-1}).slice(0, 4, 8).fill_(0.5f);
  l[1].view({-1}).slice(0, 0, 2).fill_(2.0f);
  const auto s = rsam::stability_scores(l);
  EXPECT_FLOAT_EQ(s[0].item<float>(), 0.5f);
  EXPECT_FLOAT_EQ(s[1].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(s[2].item<float>(), 0.0f);
  // Offset 0.25: mask 0 has 8 above -0.25 and 8 above +0.25.
  EXPECT_FLOAT_EQ(rsam::stability_scores(l, 0.25f)[0].item<float>(), 1.0f);
  // The two rules pick different masks here.
  rsam::Prediction r{l.gt(0), torch::tensor({0.9f, 0.5f, 0.7f}), l};
  EXPECT_EQ(rsam::best_index(r), 0);
  EXPECT_EQ(rsam::best_index(r, rsam::Pick::Score), 0);
  EXPECT_EQ(rsam::best_index(r, rsam::Pick::Stability), 1);
  EXPECT_TRUE(torch::equal(rsam::best_of(r, rsam::Pick::Stability).low_res_logits[0], l[1]));
  EXPECT_EQ(rsam::parse_pick("stability"), rsam::Pick::Stability);
  EXPECT_EQ(rsam::parse_pick("score"), rsam::Pick::Score);
  EXPECT_THROW(rsam::parse_pick("area"), rsam::Error);
  EXPECT_THROW(rsam::stability_scores(torch::zeros({4, 4})), rsam::Error);
}

TEST_F(PredictorTest, PredictOneByStabilityKeepsTheMostStableOfThree) {
  rsam::Prompt p;
  p.points = {{50, 30}};
  p.labels = {1};
  const auto three = pred->predict(p, true);
  const auto k = rsam::stability_scores(three.low_res_logits).argmax().item<int64_t>();
  const auto one = pred->predict_one(p, false, rsam::Pick::Stability);
  EXPECT_TRUE(torch::equal(one.low_res_logits[0], three.low_res_logits[k]));
}

TEST_F(PredictorTest, RefineFeedsTheMaskBackAsTheMaskInput) {
  rsam::Prompt p;
  p.points = {{50, 30}};
  p.labels = {1};
  const auto first = pred->predict_one(p);
  rsam::Prompt q = p;
  q.mask_input = first.low_res_logits;
  const auto once = pred->predict(q, false);
  EXPECT_TRUE(torch::equal(pred->refine(p, first, 1).low_res_logits, once.low_res_logits));
  q.mask_input = once.low_res_logits;
  EXPECT_TRUE(torch::equal(pred->refine(p, first, 2).low_res_logits, pred->predict(q, false).low_res_logits));
  EXPECT_TRUE(torch::equal(pred->refine(p, first, 0).low_res_logits, first.low_res_logits));
  EXPECT_THROW(pred->refine(p, pred->predict(p, true), 1), rsam::Error);  // three masks: which one?
  EXPECT_THROW(pred->refine(p, first, -1), rsam::Error);
}

// The flip predictor's answer is the plain predictor's on the image and on
// its mirror image (the prompt mirrored, the answer flipped back), averaged:
// points, boxes and mask inputs all mirrored where the encoder sees them.
// The mirror is taken in the resized input's pixels, as the encoder sees
// them; this image's resize scale is a power of two, so every coordinate
// below is exact.
TEST_F(PredictorTest, FlipAveragesTheImageAndItsMirrorImage) {
  const int W = 128, H = 80;
  rsam::Image8 img(W, H, 3), mirror(W, H, 3);
  for (size_t i = 0; i < img.data.size(); ++i) img.data[i] = uint8_t(i * 7 + (i / 300) * 13);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < 3; ++c) mirror.data[(y * W + x) * 3 + c] = img.data[(y * W + W - 1 - x) * 3 + c];
  rsam::SamPredictor flip(pred->model(), rsam::Precision::FP32, true), plain(pred->model());
  flip.set_image(img);
  EXPECT_TRUE(flip.flip());
  // Column x of the S-wide resized input is S-1-x in the mirror image; in
  // the original's coordinates x goes to X - x.
  const int S = pred->model()->config.img_size;
  ASSERT_EQ(W % S, 0);
  const float X = float(W) * float(S - 1) / float(S);
  rsam::Prompt p, m;
  p.points = {{30, 20}, {70, 40}};
  p.labels = {1, 0};
  p.box = std::array<float, 4>{10, 5, 60, 50};
  m.points = {{X - 30, 20}, {X - 70, 40}};
  m.labels = p.labels;
  m.box = std::array<float, 4>{X - 60, 5, X - 10, 50};
  plain.set_image(img);
  p.mask_input = plain.predict(p, false).low_res_logits;
  m.mask_input = p.mask_input.flip({-1});
  for (bool multi : {true, false}) {
    plain.set_image(img);
    const auto a = plain.predict(p, multi, true);
    plain.set_image(mirror);
    const auto b = plain.predict(m, multi, true);
    const auto f = flip.predict(p, multi, true);
    EXPECT_LE((f.masks - 0.5 * (a.masks + b.masks.flip({-1}))).abs().max().item<double>(), 1e-5);
    EXPECT_LE((f.low_res_logits - 0.5 * (a.low_res_logits + b.low_res_logits.flip({-1}))).abs().max().item<double>(),
              1e-5);
    EXPECT_LE((f.iou_predictions - 0.5 * (a.iou_predictions + b.iou_predictions)).abs().max().item<double>(), 1e-6);
    // Not the plain answer: the mirrored view counts.
    EXPECT_GT((f.masks - a.masks).abs().max().item<double>(), 1e-3);
    EXPECT_TRUE(torch::equal(flip.predict(p, multi).masks, f.masks > 0));
  }
  // An embedding set directly has no mirrored view: single-view decodes.
  flip.set_embedding(pred->embedding(), {60, 100});
  rsam::Prompt q;
  q.points = {{20, 20}};
  q.labels = {1};
  EXPECT_TRUE(torch::equal(flip.predict(q).low_res_logits, pred->predict(q).low_res_logits));
}

TEST_F(PredictorTest, EmbeddingCanBeSetDirectly) {
  rsam::Prompt p;
  p.points = {{20, 20}};
  p.labels = {1};
  auto a = pred->predict(p);
  rsam::SamPredictor other(pred->model());
  other.set_embedding(pred->embedding(), {60, 100});
  auto b = other.predict(p);
  EXPECT_TRUE(torch::equal(a.low_res_logits, b.low_res_logits));
  EXPECT_THROW(other.set_embedding(torch::zeros({1, 8, 8, 8}), {60, 100}), rsam::Error);
}

// The fast decoder (fast_decoder.cpp) against the reference formulation:
// every prompt kind, the image-only cache, the batched and flipped paths,
// and predict_one's pick-then-upsample.
TEST(Decoder, FastEqualsReference) {
  torch::manual_seed(11);
  rsam::Sam m(tiny());
  for (auto& p : m->parameters()) p.data().normal_(0, 0.2);
  rsam::Image8 img(72, 60, 3);
  auto px = torch::randint(0, 256, {60, 72, 3}, torch::kUInt8);
  std::memcpy(img.data.data(), px.data_ptr(), img.data.size());
  rsam::Prompt one;
  one.points = {{20, 30}};
  one.labels = {1};
  rsam::Prompt many = one;
  many.points.push_back({50, 12});
  many.labels.push_back(0);
  many.box = std::array<float, 4>{8, 5, 60, 50};
  rsam::Prompt masked = many;
  masked.mask_input = torch::randn({1, 32, 32});
  auto close = [](const rsam::Prediction& a, const rsam::Prediction& b, const std::string& what) {
    const double scale = a.low_res_logits.abs().max().item<double>();
    EXPECT_LE((a.low_res_logits - b.low_res_logits).abs().max().item<double>(), 1e-5 * scale) << what;
    EXPECT_LE((a.iou_predictions - b.iou_predictions).abs().max().item<double>(), 1e-5) << what;
    EXPECT_LE((a.masks - b.masks).abs().max().item<double>(), 1e-5 * scale) << what;
  };
  for (bool flip : {false, true}) {
    rsam::SamPredictor pred(m, rsam::Precision::FP32, flip);
    pred.set_image(img);
    auto both = [&](const std::function<rsam::Prediction()>& f, const std::string& what) {
      rsam::set_reference_decoder(true);
      const auto ref = f();
      rsam::set_reference_decoder(false);
      close(ref, f(), what + (flip ? " flip" : ""));
    };
    for (bool multi : {false, true}) {
      const std::string mm = multi ? " multimask" : "";
      both([&] { return pred.predict(one, multi, true); }, "one point" + mm);
      both([&] { return pred.predict(many, multi, true); }, "points and box" + mm);
      both([&] { return pred.predict(masked, multi, true); }, "mask input" + mm);
      auto boxes = torch::tensor({{4.f, 6.f, 40.f, 50.f}, {10.f, 2.f, 70.f, 30.f}, {0.f, 0.f, 72.f, 60.f}});
      both([&] { return pred.predict_batch({}, {}, boxes, {}, multi, true); }, "batched boxes" + mm);
      auto pts = torch::tensor({{{5.f, 5.f}}, {{60.f, 40.f}}});
      auto labels = torch::ones({2, 1}, torch::kInt32);
      both([&] { return pred.predict_batch(pts, labels, {}, {}, multi, true); }, "batched points" + mm);
    }
    for (auto pick : {rsam::Pick::Score, rsam::Pick::Stability})
      both([&] { return pred.predict_one(one, true, pick); }, "predict_one");
    // The picked mask as bytes is the same mask.
    rsam::set_reference_decoder(true);
    const auto ref = pred.predict_one(one);
    rsam::set_reference_decoder(false);
    EXPECT_TRUE(torch::equal(ref.masks, pred.predict_one(one).masks));
  }
  // A batch of embeddings (training's layout) through the module itself.
  torch::NoGradGuard ng;
  auto emb = torch::randn({3, m->config.prompt_embed_dim, 8, 8});
  auto [sparse, dense] =
      m->prompt_encoder->forward(std::nullopt, torch::tensor({{1.f, 2.f, 30.f, 40.f}}).repeat({3, 1}), std::nullopt);
  const auto pe = m->prompt_encoder->get_dense_pe();
  auto [lr, ir] = m->mask_decoder->predict_masks(emb, pe, sparse, dense);
  auto [lf, iff] = m->mask_decoder->predict_masks_fast(emb, pe, sparse, dense, nullptr);
  EXPECT_LE((lr - lf).abs().max().item<double>(), 1e-5 * lr.abs().max().item<double>());
  EXPECT_LE((ir - iff).abs().max().item<double>(), 1e-5);
}

// postprocess_masks' composed single pass (model/mask_resize.h) against the
// official two interpolations, on crops and sizes up and down.
TEST(Resize, ComposedMaskResizeEqualsTwoInterpolations) {
  namespace F = torch::nn::functional;
  torch::manual_seed(5);
  auto masks = torch::randn({2, 3, 16, 16}) * 10;
  for (auto [crop, out] :
       std::vector<std::pair<std::pair<int64_t, int64_t>, std::pair<int64_t, int64_t>>>{{{64, 64}, {64, 64}},
                                                                                        {{48, 64}, {48, 64}},
                                                                                        {{64, 40}, {300, 187}},
                                                                                        {{13, 64}, {5, 25}},
                                                                                        {{64, 1}, {7, 3}}}) {
    auto ref = F::interpolate(
        masks,
        F::InterpolateFuncOptions().size(std::vector<int64_t>{64, 64}).mode(torch::kBilinear).align_corners(false));
    ref = ref.slice(2, 0, crop.first).slice(3, 0, crop.second);
    ref = F::interpolate(ref, F::InterpolateFuncOptions()
                                  .size(std::vector<int64_t>{out.first, out.second})
                                  .mode(torch::kBilinear)
                                  .align_corners(false));
    auto got = rsam::resize_masks_composed(masks, 64, crop, out);
    ASSERT_EQ(got.sizes(), ref.sizes());
    EXPECT_LE((got - ref).abs().max().item<double>(), 1e-4) << crop.first << "x" << crop.second;
  }
}

// --precision auto: bf16 only where it is native and the model's bf16 masks
// were measured to agree with fp32; explicit choices pass through.
TEST(Precision, AutoIsBf16OnlyWhereNativeAndMeasured) {
  using rsam::Precision;
  EXPECT_EQ(rsam::resolve_precision("fp32", true), Precision::FP32);
  EXPECT_EQ(rsam::resolve_precision("bf16", false), Precision::BF16);
  EXPECT_EQ(rsam::resolve_precision("auto", false), Precision::FP32);
  const bool native = rsam::cpu_bf16_support() == rsam::Bf16Support::Native;
  EXPECT_EQ(rsam::resolve_precision("auto", true), native ? Precision::BF16 : Precision::FP32);
  EXPECT_THROW(rsam::resolve_precision("fp16", true), rsam::Error);
}
