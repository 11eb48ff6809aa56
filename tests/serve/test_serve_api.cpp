// `rsam serve` as a client and an attacker see it: one server (bundled
// rsam-tiny + GaRA, a token, small limits) on an ephemeral loopback port for
// the whole file; every refusal is checked for its status, a one-line JSON
// error, and that the next request is still answered.
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "data/rle.h"
#include "serve_util.h"

namespace rsam::serve_test {
namespace {

using json = nlohmann::json;
const std::string kToken = "s3cret-token";
ServerProcess* g_server = nullptr;

struct Env : ::testing::Environment {
  void SetUp() override {
    // Three decodes at once, so that concurrent decodes share a cached
    // predictor here (the default runs one at a time).
    g_server = new ServerProcess({"--token", kToken, "--max-upload-mb", "1", "--max-pixels", "4000000",
                                  "--cache-mb", "64", "--max-decodes", "3"});
  }
  void TearDown() override {
    delete g_server;
    g_server = nullptr;
  }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new Env);

httplib::Client client(const std::string& token = kToken) {
  httplib::Client c("127.0.0.1", g_server->port());
  c.set_read_timeout(120, 0);
  c.set_write_timeout(30, 0);
  if (!token.empty()) c.set_default_headers({{"Authorization", "Bearer " + token}});
  return c;
}

// A dark scene with one bright disc and one grey square (PNG bytes).
cv::Mat scene() {
  cv::Mat m(240, 320, CV_8UC3, cv::Scalar(40, 50, 60));
  cv::circle(m, {110, 120}, 55, cv::Scalar(230, 220, 40), cv::FILLED);
  cv::rectangle(m, cv::Rect(220, 60, 70, 90), cv::Scalar(60, 60, 200), cv::FILLED);
  return m;
}
std::string png(const cv::Mat& m) {
  std::vector<uint8_t> b;
  cv::imencode(".png", m, b);
  return std::string(b.begin(), b.end());
}

// The status, and that the body is exactly one line of {"error": "..."}.
void expect_error(const httplib::Result& r, int status) {
  ASSERT_TRUE(r) << "no response: " << httplib::to_string(r.error());
  EXPECT_EQ(r->status, status) << r->body;
  EXPECT_EQ(r->body.find('\n'), std::string::npos) << r->body;
  const auto j = json::parse(r->body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r->body;
  ASSERT_TRUE(j.contains("error") && j["error"].is_string()) << r->body;
  EXPECT_FALSE(j["error"].get<std::string>().empty());
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  // ...and the server still answers.
  auto h = client().Get("/v1/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
}

std::string upload_scene() {
  auto r = client().Post("/v1/images", png(scene()), "application/octet-stream");
  EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no response");
  return json::parse(r->body)["id"];
}

httplib::Result segment(const std::string& id, const json& body) {
  return client().Post("/v1/images/" + id + "/segment", body.dump(), "application/json");
}

cv::Mat rle_mask(const json& rle) {
  return data::rle_decode(data::rle_from_string(rle["counts"], rle["size"][0], rle["size"][1]));
}

TEST(ServeApi, ListensOnLoopbackAndAnswersHealth) {
  ASSERT_GT(g_server->port(), 0) << "no URL on stdout: " << g_server->stderr_text();
  EXPECT_EQ(g_server->url(), "http://127.0.0.1:" + std::to_string(g_server->port()) + "/");
  auto r = client().Get("/v1/health");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const auto j = json::parse(r->body);
  EXPECT_EQ(j["status"], "ok");
  EXPECT_EQ(j["adapter"], "gara");
  EXPECT_EQ(r->get_header_value("Access-Control-Allow-Origin"), "");  // CORS off by default
}

TEST(ServeApi, ServesThePage) {
  auto r = client("").Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("<canvas"), std::string::npos);
  EXPECT_EQ(r->get_header_value("Content-Type").rfind("text/html", 0), 0u);
  auto js = client("").Get("/app.js");
  ASSERT_TRUE(js);
  EXPECT_EQ(js->status, 200);
  EXPECT_NE(js->body.find("/v1/images"), std::string::npos);
}

TEST(ServeApi, UploadIsCachedByContent) {
  const std::string bytes = png(scene());
  auto a = client().Post("/v1/images", bytes, "application/octet-stream");
  ASSERT_TRUE(a);
  ASSERT_EQ(a->status, 200) << a->body;
  const auto ja = json::parse(a->body);
  EXPECT_EQ(ja["id"].get<std::string>().size(), 32u);
  EXPECT_EQ(ja["width"], 320);
  EXPECT_EQ(ja["height"], 240);
  auto b = client().Post("/v1/images", bytes, "application/octet-stream");
  ASSERT_TRUE(b);
  const auto jb = json::parse(b->body);
  EXPECT_EQ(jb["id"], ja["id"]);
  EXPECT_TRUE(jb["cached"].get<bool>());
  EXPECT_EQ(jb["encode_ms"].get<double>(), 0.0);
}

// The server's mask is the one `rsam segment` writes for the same image and
// point, with the adapter and without: the two variants share weights
// without leaking into each other.
TEST(ServeApi, SegmentMatchesTheCli) {
  const std::string id = upload_scene();
  const std::string dir = ::testing::TempDir() + "rsam_serve_cli_" + std::to_string(getpid());
  ASSERT_EQ(std::system(("mkdir -p '" + dir + "'").c_str()), 0);
  cv::imwrite(dir + "/scene.png", scene());
  for (bool adapter : {true, false}) {
    auto r = segment(id, {{"points", {{110, 120}}}, {"labels", {1}}, {"adapter", adapter}, {"format", "both"}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const auto j = json::parse(r->body);
    ASSERT_EQ(j["masks"].size(), 1u);
    EXPECT_EQ(j["picked_from"], 3);
    EXPECT_EQ(j["adapter"], adapter);
    const auto& m = j["masks"][0];
    const cv::Mat from_rle = rle_mask(m["rle"]);
    EXPECT_EQ(cv::countNonZero(from_rle), m["area"].get<int>());
    EXPECT_GT(m["area"].get<int>(), 0);
    const std::string png_b64 = m["png"];
    // The PNG holds the same mask as the RLE.
    std::string bin;
    {
      static const std::string abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
      unsigned acc = 0;
      int bits = 0;
      for (char c : png_b64) {
        if (c == '=') break;
        acc = acc << 6 | unsigned(abc.find(c));
        if ((bits += 6) >= 8) bin += char(acc >> (bits -= 8) & 0xff);
      }
    }
    const cv::Mat from_png = cv::imdecode(std::vector<uint8_t>(bin.begin(), bin.end()), cv::IMREAD_UNCHANGED);
    ASSERT_FALSE(from_png.empty());
    EXPECT_EQ(cv::countNonZero(from_png != from_rle * 255), 0);
    const std::string out = dir + "/cli_" + (adapter ? "a" : "p") + ".png";
    const std::string cmd = kBin + " segment --threads 2 --image '" + dir + "/scene.png' --point 110,120 --out '" + out +
                            "'" + (adapter ? "" : " --no-adapter") + " >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const cv::Mat cli = cv::imread(out, cv::IMREAD_GRAYSCALE);
    ASSERT_EQ(cli.size(), from_rle.size());
    EXPECT_EQ(cv::countNonZero((cli > 0) != (from_rle > 0)), 0) << "adapter " << adapter;
    EXPECT_GT(j["timings_ms"]["decode"].get<double>(), 0.0);
  }
}

// Each (image, variant) keeps the predictor its first decode made: later
// decodes skip preparing the decoder, concurrent first decodes store it
// once (counted in the cache), and the masks do not change.
TEST(ServeApi, KeepsOnePredictorPerImage) {
  cv::Mat m = scene();
  cv::circle(m, {40, 200}, 12, cv::Scalar(250, 250, 250), cv::FILLED);  // bytes no other test uploads
  auto up = client().Post("/v1/images", png(m), "application/octet-stream");
  ASSERT_TRUE(up);
  ASSERT_EQ(up->status, 200) << up->body;
  const std::string id = json::parse(up->body)["id"];
  const auto health = [] { return json::parse(client().Get("/v1/health")->body); };
  const json before = health();
  const json body = {{"points", {{110, 120}}}, {"labels", {1}}, {"adapter", true}};
  std::vector<json> answers(6);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < answers.size(); ++i)
    threads.emplace_back([&, i] {
      auto r = segment(id, body);
      if (r && r->status == 200) answers[i] = json::parse(r->body);
    });
  for (auto& t : threads) t.join();
  const json after = health();
  ASSERT_EQ(after["images"], before["images"]) << "an image was evicted: the cache is too small for this test";
  EXPECT_GT(after["decoder_state_bytes"].get<size_t>(), 0u);
  EXPECT_EQ(after["cache_bytes"].get<size_t>() - before["cache_bytes"].get<size_t>(),
            after["decoder_state_bytes"].get<size_t>());
  for (const auto& a : answers) {
    ASSERT_TRUE(a.is_object()) << "a concurrent decode failed";
    EXPECT_EQ(a["masks"][0]["rle"], answers[0]["masks"][0]["rle"]);
  }
  auto r = segment(id, body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const auto j = json::parse(r->body);
  EXPECT_EQ(j["timings_ms"]["prepare"].get<double>(), 0.0);
  EXPECT_EQ(j["masks"][0]["rle"], answers[0]["masks"][0]["rle"]);
  EXPECT_EQ(health()["cache_bytes"], after["cache_bytes"]);
}

TEST(ServeApi, MultimaskAndBox) {
  const std::string id = upload_scene();
  auto r = segment(id, {{"points", {{110, 120}}}, {"multimask", true}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto j = json::parse(r->body);
  ASSERT_EQ(j["masks"].size(), 3u);
  for (const auto& m : j["masks"]) {
    EXPECT_TRUE(m.contains("score") && m.contains("stability") && m.contains("rle"));
    EXPECT_GE(m["stability"].get<double>(), 0.0);
    EXPECT_LE(m["stability"].get<double>(), 1.0);
  }
  r = segment(id, {{"box", {215, 55, 295, 155}}, {"return_logits", true}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  j = json::parse(r->body);
  ASSERT_EQ(j["masks"].size(), 1u);
  // The logits go back in as the next request's mask input.
  r = segment(id, {{"points", {{250, 100}}}, {"mask_input", j["masks"][0]["logits"]}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

// Segment everything: the automatic mask generator on the cached embedding.
TEST(ServeApi, Everything) {
  const std::string id = upload_scene();
  const std::string path = "/v1/images/" + id + "/everything";
  auto r = client().Post(path, json{{"points_per_side", 8}, {"pred_iou_thresh", 0.5}, {"stability_score_thresh", 0.8}}.dump(),
                         "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const auto j = json::parse(r->body);
  EXPECT_EQ(j["points"], 64);
  ASSERT_GE(j["masks"].size(), 1u) << r->body.substr(0, 300);
  for (const auto& m : j["masks"]) {
    EXPECT_EQ(cv::countNonZero(rle_mask(m["rle"])), m["area"].get<int>());
    EXPECT_EQ(m["bbox"].size(), 4u);
  }
  EXPECT_EQ(j["timings_ms"]["encode"], 0.0);  // the upload's embedding, not a new encode
  expect_error(client().Post(path, "{\"points_per_side\": 0}", "application/json"), 400);
  expect_error(client().Post(path, "{\"points_per_side\": 1000}", "application/json"), 400);
  expect_error(client().Post(path, "{\"pred_iou_thresh\": 2}", "application/json"), 400);
  expect_error(client().Post(path, "{\"crop_n_layers\": 3}", "application/json"), 400);
  expect_error(client().Post("/v1/images/" + std::string(32, 'b') + "/everything", "{}", "application/json"), 404);
}

TEST(ServeApi, RefusesBadImages) {
  auto c = client();
  expect_error(c.Post("/v1/images", "hello, this is not a picture", "application/octet-stream"), 415);
  expect_error(c.Post("/v1/images", "", "application/octet-stream"), 400);
  const std::string good = png(scene());
  expect_error(c.Post("/v1/images", good.substr(0, good.size() / 2), "image/png"), 400);  // truncated
  // A real PNG whose header claims 30000 x 30000 pixels (a decompression
  // bomb): refused from the header, before decoding.
  std::string bomb = good;
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) bomb[at + i] = char(v >> (24 - 8 * i) & 0xff);
  };
  put32(16, 30000);
  put32(20, 30000);
  uint32_t crc = 0xffffffffu;  // the IHDR chunk's CRC, so only the size is wrong
  for (size_t i = 12; i < 29; ++i) {
    crc ^= uint8_t(bomb[i]);
    for (int k = 0; k < 8; ++k) crc = crc >> 1 ^ (0xedb88320u & (0u - (crc & 1)));
  }
  put32(29, ~crc);
  expect_error(c.Post("/v1/images", bomb, "image/png"), 413);
  // Over --max-upload-mb 1.
  cv::Mat noise(700, 700, CV_8UC3);
  cv::randu(noise, 0, 255);
  const std::string big = png(noise);
  ASSERT_GT(big.size(), size_t(1) << 20);
  expect_error(c.Post("/v1/images", big, "image/png"), 413);
}

// curl -d / --data-binary send application/x-www-form-urlencoded unless
// told otherwise: the bytes are still the image (and the prompt), not a form.
TEST(ServeApi, BodiesAreTheBytesWhateverTheirType) {
  auto c = client();
  cv::Mat noise(120, 160, CV_8UC3);
  cv::randu(noise, 0, 255);
  const std::string bytes = png(noise);
  ASSERT_GT(bytes.size(), size_t(16) << 10);
  auto r = c.Post("/v1/images", bytes, "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const std::string id = json::parse(r->body)["id"];
  auto s = c.Post("/v1/images/" + id + "/segment", json{{"points", {{80, 60}}}, {"labels", {1}}}.dump(),
                  "application/x-www-form-urlencoded");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->status, 200) << s->body;
  expect_error(c.Post("/v1/images", "--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nx\r\n--b--\r\n",
                      "multipart/form-data; boundary=b"),
               415);
}

TEST(ServeApi, RefusesBadPrompts) {
  const std::string id = upload_scene();
  auto c = client();
  const std::string path = "/v1/images/" + id + "/segment";
  expect_error(c.Post(path, "{\"points\": [[1, 2]", "application/json"), 400);       // not JSON
  expect_error(c.Post(path, "[1, 2, 3]", "application/json"), 400);                  // not an object
  expect_error(segment(id, json::object()), 400);                                     // no prompt
  expect_error(segment(id, {{"points", {{500, 120}}}}), 400);                         // outside the image
  expect_error(segment(id, {{"points", {{-3, 12}}}}), 400);
  expect_error(segment(id, {{"box", {10, 10, 400, 100}}}), 400);                      // box outside
  expect_error(segment(id, {{"points", {{10, 10}}}, {"labels", {2}}}), 400);          // bad label
  expect_error(segment(id, {{"points", {{10, 10}, {20, 20}}}, {"labels", {1}}}), 400);  // labels short
  expect_error(segment(id, {{"points", {{10, "a"}}}}), 400);
  expect_error(segment(id, {{"points", {{1e300, 10}}}}), 400);
  expect_error(segment(id, {{"points", {{10, 10}}}, {"path", "/etc/passwd"}}), 400);  // unknown field
  expect_error(segment(id, {{"points", {{10, 10}}}, {"mask_input", "AAAA"}}), 400);   // wrong size
  expect_error(segment(id, {{"points", {{10, 10}}}, {"mask_input", "!!"}}), 400);     // not base64
  expect_error(segment(id, {{"points", {{10, 10}}}, {"format", "tiff"}}), 400);
  json many = json::array();
  for (int i = 0; i < 300; ++i) many.push_back({5, 5});
  expect_error(segment(id, {{"points", many}}), 400);
}

TEST(ServeApi, UnknownIdsAndRoutes) {
  auto c = client();
  expect_error(segment(std::string(32, 'a'), {{"points", {{1, 1}}}}), 404);
  expect_error(segment("..%2f..%2fetc", {{"points", {{1, 1}}}}), 404);
  expect_error(c.Get("/v1/nothing"), 404);
  expect_error(c.Get("/etc/passwd"), 404);
  const std::string id = upload_scene();
  auto d = c.Delete("/v1/images/" + id);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->status, 200);
  expect_error(segment(id, {{"points", {{10, 10}}}}), 404);
  expect_error(c.Delete("/v1/images/" + id), 404);
}

TEST(ServeApi, NeedsTheToken) {
  expect_error(client("").Get("/v1/health"), 401);
  expect_error(client("wrong").Get("/v1/health"), 401);
  expect_error(client("wrong").Post("/v1/images", png(scene()), "image/png"), 401);
  expect_error(client("").Get("/metrics"), 401);
  expect_error(client(kToken + "x").Get("/v1/health"), 401);
}

TEST(ServeApi, Metrics) {
  upload_scene();
  auto r = client().Get("/metrics");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  for (const char* name : {"rsam_http_requests_total{route=\"upload\",code=\"200\"}", "rsam_cache_hits_total",
                           "rsam_encode_queue_depth", "rsam_model_seconds_bucket{kind=\"encode\"",
                           "rsam_http_request_duration_seconds_count{route=\"upload\"}"})
    EXPECT_NE(r->body.find(name), std::string::npos) << name;
}

// A separate server: SIGTERM ends it cleanly (exit 0) and promptly.
TEST(ServeProcess, StopsOnSigterm) {
  ServerProcess s({"--no-adapter"});
  ASSERT_GT(s.port(), 0) << s.stderr_text();
  httplib::Client c("127.0.0.1", s.port());
  auto r = c.Get("/v1/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["adapter"], nullptr);
  EXPECT_EQ(s.terminate(), 0) << s.stderr_text();
  EXPECT_NE(s.stderr_text().find("serve: stopped"), std::string::npos) << s.stderr_text();
}

// The enhancer toggle: with and without GleSAM, each the mask `rsam
// segment` gives with the same checkpoint and enhancer (fixture: tiny_a and
// its 32-channel enhancer).
TEST(ServeProcess, EnhancerToggleMatchesTheCli) {
  const std::string data = RSAM_TEST_DATA_DIR;
  ServerProcess s({"--checkpoint", data + "/sam/tiny_a.pth", "--no-adapter", "--enhancer",
                   data + "/glesam/enhancer.json"});
  ASSERT_GT(s.port(), 0) << s.stderr_text();
  httplib::Client c("127.0.0.1", s.port());
  c.set_read_timeout(120, 0);
  auto h = c.Get("/v1/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(json::parse(h->body)["enhancer"], "glesam");
  const std::string dir = ::testing::TempDir() + "rsam_serve_enh_" + std::to_string(getpid());
  ASSERT_EQ(std::system(("mkdir -p '" + dir + "'").c_str()), 0);
  cv::imwrite(dir + "/scene.png", scene());
  auto up = c.Post("/v1/images", png(scene()), "image/png");
  ASSERT_TRUE(up);
  ASSERT_EQ(up->status, 200) << up->body;
  EXPECT_TRUE(json::parse(up->body)["enhancer"].get<bool>());  // on by default when given
  const std::string id = json::parse(up->body)["id"];
  std::vector<int> areas;
  for (bool enhancer : {true, false}) {
    auto r = c.Post("/v1/images/" + id + "/segment",
                    json{{"points", {{110, 120}}}, {"enhancer", enhancer}}.dump(), "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const auto j = json::parse(r->body);
    EXPECT_EQ(j["enhancer"], enhancer);
    const cv::Mat mask = rle_mask(j["masks"][0]["rle"]);
    const std::string out = dir + "/cli_" + (enhancer ? "e" : "p") + ".png";
    const std::string cmd = kBin + " segment --threads 2 --checkpoint '" + data + "/sam/tiny_a.pth' --image '" + dir +
                            "/scene.png' --point 110,120 --out '" + out + "'" +
                            (enhancer ? " --enhancer '" + data + "/glesam/enhancer.json'" : "") + " >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const cv::Mat cli = cv::imread(out, cv::IMREAD_GRAYSCALE);
    ASSERT_EQ(cli.size(), mask.size());
    EXPECT_EQ(cv::countNonZero((cli > 0) != (mask > 0)), 0) << "enhancer " << enhancer;
  }
  auto bad = c.Post("/v1/images/" + id + "/segment", json{{"points", {{1, 1}}}, {"adapter", true}}.dump(),
                    "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);  // no adapter on this server
  EXPECT_EQ(s.terminate(), 0) << s.stderr_text();
}

TEST(ServeProcess, RefusesBadFlags) {
  for (const std::string flags : {"--port 70000", "--cache-mb 0", "--max-upload-mb -1", "--host 256.1.1.1"}) {
    const int rc = std::system((kBin + " serve --threads 1 " + flags + " >/dev/null 2>&1").c_str());
    EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) != 0) << flags;
  }
}

}  // namespace
}  // namespace rsam::serve_test
