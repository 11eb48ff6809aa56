#include "serve/server.h"

#include <c10/util/Exception.h>
#include <httplib.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <thread>

#include "error.h"
#include "log.h"
#include "model/runtime.h"
#include "serve/engine.h"
#include "serve/metrics.h"
#include "serve/web_assets.h"
#include "serve/wire.h"

namespace rsam::serve {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

void send_error(httplib::Response& res, int status, const std::string& message, int retry_after_s = 0) {
  res.status = status;
  std::string m = message;
  for (char& c : m)
    if (c == '\n' || c == '\r') c = ' ';  // one line, always
  if (retry_after_s > 0) res.set_header("Retry-After", std::to_string(retry_after_s));
  res.set_content(json{{"error", m}}.dump(), "application/json");
}

// Runs one route's handler: any exception becomes a JSON error (HttpError:
// its status; rsam::Error: 400, the input was refused; anything else: 500),
// and the request is counted with its latency.
void respond(Metrics& metrics, const std::string& route, httplib::Response& res, const std::function<json()>& fn) {
  const auto t0 = Clock::now();
  try {
    res.set_content(fn().dump(), "application/json");
    res.status = 200;
  } catch (const HttpError& e) {
    send_error(res, e.status, e.what(), e.retry_after_s);
  } catch (const Error& e) {
    send_error(res, 400, e.what());
  } catch (const std::bad_alloc&) {
    send_error(res, 503, "out of memory for this request", 5);
  } catch (const c10::Error& e) {
    send_error(res, 500, std::string("internal error: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    send_error(res, 500, std::string("internal error: ") + e.what());
  } catch (...) {
    send_error(res, 500, "internal error");
  }
  metrics.request(route, res.status, std::chrono::duration<double>(Clock::now() - t0).count());
}

httplib::Server::Handler guarded(Metrics& metrics, const std::string& route,
                                 std::function<json(const httplib::Request&)> fn) {
  return [&metrics, route, fn](const httplib::Request& req, httplib::Response& res) {
    respond(metrics, route, res, [&] { return fn(req); });
  };
}

// Routes with a body read it themselves: httplib's own reading parses
// application/x-www-form-urlencoded bodies (curl's default type) as a form
// and refuses those over a small compiled-in size. httplib still bounds the
// length (413) before anything is kept.
httplib::Server::HandlerWithContentReader guarded_body(
    Metrics& metrics, const std::string& route, std::function<json(const httplib::Request&, const std::string&)> fn) {
  return
      [&metrics, route, fn](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
        if (req.is_multipart_form_data()) {
          send_error(res, 415, "multipart forms are not accepted: send the bytes themselves as the body");
          metrics.request(route, 415, -1);
          return;
        }
        std::string body;
        // On failure httplib has set 413 or 400; the error handler words it.
        if (!reader([&body](const char* data, size_t n) {
              body.append(data, n);
              return true;
            }))
          return;
        respond(metrics, route, res, [&] { return fn(req, body); });
      };
}

std::optional<bool> bool_param(const httplib::Request& req, const std::string& name) {
  if (!req.has_param(name.c_str())) return std::nullopt;
  const auto v = req.get_param_value(name.c_str());
  if (v == "true" || v == "1") return true;
  if (v == "false" || v == "0") return false;
  throw HttpError(400, name + " must be true or false");
}

// SIGTERM and SIGINT set a flag (from whichever thread the kernel picks:
// torch's pool may predate the server) that a watcher thread polls, so the
// server stops from a normal thread and never inside a request. A signal
// that arrives while the models load stops the server as soon as it runs.
std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

class SignalWatch {
 public:
  SignalWatch() {
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, &old_term_);
    sigaction(SIGINT, &sa, &old_int_);
  }
  void start(httplib::Server& svr) {
    thread_ = std::thread([this, &svr] {
      while (!done_) {
        if (const int sig = g_stop_signal.load()) {
          log_info(std::string("serve: ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
                   ", finishing the requests in flight");
          // stop() does nothing before the accept loop runs: wait for it.
          while (!done_ && !svr.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
          svr.stop();
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  }
  // Before the server goes away.
  void finish() {
    done_ = true;
    if (thread_.joinable()) thread_.join();
  }
  ~SignalWatch() {
    finish();
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGINT, &old_int_, nullptr);
  }

 private:
  struct sigaction old_term_ {}, old_int_ {};
  std::atomic<bool> done_{false};
  std::thread thread_;
};

void add_routes(httplib::Server& svr, Engine& engine, Metrics& metrics, const ServeOptions& o) {
  size_t n = 0;
  const WebAsset* assets = web_assets(&n);
  for (size_t i = 0; i < n; ++i) {
    const WebAsset a = assets[i];
    auto handler = [a](const httplib::Request&, httplib::Response& res) {
      res.set_content(reinterpret_cast<const char*>(a.data), a.size, a.mime);
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Content-Type-Options", "nosniff");
    };
    svr.Get(a.path, handler);
    if (std::string(a.path) == "/index.html") svr.Get("/", handler);
  }
  using Req = const httplib::Request&;
  svr.Post("/v1/images", guarded_body(metrics, "upload", [&](Req req, const std::string& body) {
             return engine.upload(body, bool_param(req, "adapter"), bool_param(req, "enhancer"));
           }));
  svr.Post(R"(/v1/images/([^/]+)/segment)", guarded_body(metrics, "segment", [&](Req req, const std::string& body) {
             return engine.segment(req.matches[1], body);
           }));
  svr.Post(R"(/v1/images/([^/]+)/everything)",
           guarded_body(metrics, "everything",
                        [&](Req req, const std::string& body) { return engine.everything(req.matches[1], body); }));
  svr.Delete(R"(/v1/images/([^/]+))",
             guarded(metrics, "delete", [&](const httplib::Request& req) { return engine.remove(req.matches[1]); }));
  svr.Get("/v1/health", guarded(metrics, "health", [&](const httplib::Request&) { return engine.health(); }));
  svr.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.render(engine.gauges()), "text/plain; version=0.0.4");
    metrics.request("metrics", 200, -1);
  });
}

// Before routing (and before a body is read): the token, CORS.
httplib::Server::HandlerResponse pre_route(const ServeOptions& o, Metrics& metrics, const httplib::Request& req,
                                           httplib::Response& res) {
  if (!o.cors_origin.empty()) {
    res.set_header("Access-Control-Allow-Origin", o.cors_origin);
    res.set_header("Vary", "Origin");
    if (req.method == "OPTIONS") {
      res.set_header("Access-Control-Allow-Methods", "GET, POST, DELETE");
      res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
      res.status = 204;
      return httplib::Server::HandlerResponse::Handled;
    }
  }
  const bool api = req.path.rfind("/v1/", 0) == 0 || req.path == "/metrics";
  if (api && !o.token.empty()) {
    const std::string auth = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    const bool ok = auth.rfind(prefix, 0) == 0 && constant_time_equal(auth.substr(prefix.size()), o.token);
    if (!ok) {
      res.set_header("WWW-Authenticate", "Bearer");
      send_error(res, 401, auth.empty() ? "this server needs a token: Authorization: Bearer TOKEN" : "wrong token");
      metrics.request("auth", 401, -1);
      return httplib::Server::HandlerResponse::Handled;
    }
  }
  return httplib::Server::HandlerResponse::Unhandled;
}

void check_options(const ServeOptions& o) {
  if (o.port < 0 || o.port > 65535) throw Error("--port must be 0 (any free port) to 65535");
  if (o.http_threads < 2 || o.http_threads > 1024) throw Error("HTTP threads must be 2 to 1024");
  if (o.max_upload_bytes < 1024) throw Error("--max-upload-mb is too small");
  if (o.token.find_first_of(" \t\r\n") != std::string::npos) throw Error("--token must not contain spaces");
}

// glibc raises its mmap threshold each time a large block is freed, up to
// 32 MB; blocks below it then come from per-thread heaps, which keep what
// is freed. Under load that held tens of MB of freed upload bodies and
// tensors (docs/serve.md, Memory). A fixed threshold returns every large
// block to the system when freed (torch's tensors are reused by the caching
// CPU allocator, so they rarely reach malloc), and one heap per core
// bounds what the many HTTP threads' small allocations can keep.
void bound_malloc() {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 256 << 10);
  mallopt(M_ARENA_MAX, hardware_threads());
#endif
}

}  // namespace

void serve(const ServeOptions& o, const std::function<void(const std::string& url)>& on_listening) {
  check_options(o);
  bound_malloc();
  SignalWatch watch;
  Metrics metrics;
  Engine engine(o, metrics);
  httplib::Server svr;
  const int threads = o.http_threads;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  svr.set_payload_max_length(o.max_upload_bytes);
  svr.set_read_timeout(30, 0);
  svr.set_write_timeout(30, 0);
  svr.set_pre_routing_handler(
      [&](const httplib::Request& req, httplib::Response& res) { return pre_route(o, metrics, req, res); });
  // Whatever httplib refuses itself (no route, body too large, bad request
  // line) gets the same JSON error shape.
  svr.set_error_handler([&](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const int s = res.status;
    send_error(res, s,
               s == 404   ? "no such endpoint: " + req.method + " " + req.path.substr(0, 200)
               : s == 413 ? "request body too large: at most " + std::to_string(o.max_upload_bytes) + " bytes"
                          : "bad request (HTTP " + std::to_string(s) + ")");
    metrics.request("other", s, -1);
  });
  svr.set_exception_handler([&](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    send_error(res, 500, "internal error");
  });
  add_routes(svr, engine, metrics, o);
  const bool loopback = o.host == "127.0.0.1" || o.host == "localhost" || o.host == "::1";
  if (!loopback && o.token.empty())
    log_warning("serve: listening on " + o.host + " without --token: anyone who can reach it can use it");
  const int port = o.port == 0 ? svr.bind_to_any_port(o.host) : (svr.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port <= 0) throw Error("cannot listen on " + o.host + ":" + std::to_string(o.port));
  const std::string host = o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host;
  ::signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not end the server
  watch.start(svr);
  on_listening("http://" + host + ":" + std::to_string(port) + "/");
  svr.listen_after_bind();
  watch.finish();
  log_info("serve: stopped");
}

}  // namespace rsam::serve
