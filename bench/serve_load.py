#!/usr/bin/env python3
"""Load bench of `rsam serve` on loopback (python3 standard library only).

N clients send segment requests (1-3 random points) on a few cached images
while U uploaders stream new images (every one distinct, so each is an
encode). The encoder is bounded (--max-encodes 1, --encode-queue Q), so with
more uploaders than slots + queue some uploads get 503 + Retry-After on
purpose; every other error counts as a failure. Reports segment requests/s,
client and server-side decode latency (p50/p99), uploads, 503s, errors, and
the server's peak RSS against a bound, and where the memory was (the
server's /metrics sampled every 0.2 s). The bound, checked (exit 1 when
over): warm + cache bound + max-decodes x decode allowance + uploaders x
body size, where warm is the server's peak RSS after the warm-up uploads
(the model plus one encode's working memory).

  bench/serve_load.py --rsam build/rsam --clients 16 --seconds 60
"""
import argparse
import http.client
import json
import random
import subprocess
import sys
import threading
import time


def ppm(w, h, seed):
    """A distinct picture: random rectangles on a random background (P6)."""
    rng = random.Random(seed)
    px = bytearray(bytes([rng.randrange(256) for _ in range(3)]) * (w * h))
    for _ in range(6):
        x0, y0 = rng.randrange(w - 40), rng.randrange(h - 40)
        x1, y1 = x0 + rng.randrange(20, min(200, w - x0)), y0 + rng.randrange(20, min(200, h - y0))
        c = bytes([rng.randrange(256) for _ in range(3)])
        row = c * (x1 - x0)
        for y in range(y0, y1):
            px[(y * w + x0) * 3:(y * w + x1) * 3] = row
    return b"P6\n%d %d\n255\n" % (w, h) + bytes(px)


def rss_kb(pid, field):
    for line in open("/proc/%d/status" % pid):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


MEMORY = ("rsam_process_resident_bytes", "rsam_cpu_allocator_cached_bytes", 'rsam_malloc_bytes{state="in_use"}',
          'rsam_malloc_bytes{state="free"}', "rsam_cache_bytes")


def memory(text):
    """The memory gauges of a /metrics answer, in MB."""
    out = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in MEMORY:
            out[name] = round(float(value) / 2**20, 1)
    return out


def pct(v, q):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rsam", default="build/rsam")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--uploaders", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--images", type=int, default=4, help="cached images the clients segment")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--cache-mb", type=int, default=64)
    ap.add_argument("--encode-queue", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    ap.add_argument("--max-decodes", type=int, default=1, help="the server's decodes at once")
    ap.add_argument("--decode-allowance-mb", type=float, default=32,
                    help="memory per concurrent decode in the bound (docs/serve.md, Memory: rsam-tiny, 512x512)")
    ap.add_argument("--json", help="write the figures here too")
    a = ap.parse_args()

    server = subprocess.Popen([a.rsam, "serve", "--port", "0", "--threads", str(a.threads), "--cache-mb",
                               str(a.cache_mb), "--max-encodes", "1", "--max-decodes", str(a.max_decodes), "--encode-queue", str(a.encode_queue),
                               "--encode-wait-ms", "3000", "--http-threads", str(a.clients + a.uploaders + 8)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = server.stdout.readline().strip()
        port = int(url.rsplit(":", 1)[1].strip("/"))
        conn = lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        c = conn()
        c.request("GET", "/v1/health")
        c.getresponse().read()
        rss_model_kb = rss_kb(server.pid, "VmRSS")
        ids = []
        for i in range(a.images):
            c.request("POST", "/v1/images", body=ppm(a.size, a.size, i))
            ids.append(json.loads(c.getresponse().read())["id"])

        # After the first encodes: the model plus one encode's working memory
        # (activations, allocator caches), the base the cache bound adds to.
        rss_warm_kb = rss_kb(server.pid, "VmHWM")
        c.request("GET", "/metrics")
        warm_memory = memory(c.getresponse().read().decode())
        stop = time.time() + a.seconds
        lock = threading.Lock()
        seg_lat, dec_ms, work_ms, up_lat, enc_ms, errors, busy = [], [], [], [], [], [], [0]

        def client(k):
            rng, h = random.Random(k), conn()
            while time.time() < stop:
                pts = [[rng.uniform(0, a.size - 1), rng.uniform(0, a.size - 1)] for _ in range(rng.randint(1, 3))]
                body = json.dumps({"points": pts, "multimask": len(pts) == 1})
                t = time.perf_counter()
                try:
                    h.request("POST", "/v1/images/%s/segment" % rng.choice(ids), body=body,
                              headers={"Content-Type": "application/json"})
                    r = h.getresponse()
                    data = r.read()
                    dt = time.perf_counter() - t
                    with lock:
                        if r.status == 200:
                            seg_lat.append(dt)
                            tm = json.loads(data)["timings_ms"]
                            dec_ms.append(tm["decode"])
                            work_ms.append(tm["total"] - tm["wait"])
                        else:
                            errors.append("segment %d %s" % (r.status, data[:120]))
                except Exception as e:  # noqa: BLE001 - every failure is counted
                    with lock:
                        errors.append("segment %r" % e)
                    h = conn()

        def uploader(k):
            h, n = conn(), 0
            while time.time() < stop:
                n += 1
                body = ppm(a.size, a.size, 1000003 * (k + 1) + n)
                t = time.perf_counter()
                try:
                    h.request("POST", "/v1/images", body=body)
                    r = h.getresponse()
                    data = r.read()
                    with lock:
                        if r.status == 200:
                            up_lat.append(time.perf_counter() - t)
                            enc_ms.append(json.loads(data)["encode_ms"])
                        elif r.status == 503 and r.getheader("Retry-After"):
                            busy[0] += 1
                        else:
                            errors.append("upload %d %s" % (r.status, data[:120]))
                    if r.status == 503:
                        time.sleep(float(r.getheader("Retry-After") or 1))
                except Exception as e:  # noqa: BLE001
                    with lock:
                        errors.append("upload %r" % e)
                    h = conn()

        samples = []

        def sampler():
            # Where the memory is while the load runs: /metrics every 0.2 s.
            h = conn()
            while time.time() < stop:
                try:
                    h.request("GET", "/metrics")
                    samples.append(memory(h.getresponse().read().decode()))
                except Exception:  # noqa: BLE001 - a missed sample is no failure of the server
                    h = conn()
                time.sleep(0.2)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
        threads.append(threading.Thread(target=sampler))
        threads += [threading.Thread(target=uploader, args=(k,)) for k in range(a.uploaders)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.time() - t0
        c = conn()
        c.request("GET", "/metrics")
        metrics = c.getresponse().read().decode()
        peak_kb = rss_kb(server.pid, "VmHWM")
    finally:
        server.terminate()
        code = server.wait(timeout=60)

    # The bound (docs/serve.md, Memory): the warm server, the cache bound,
    # each decode running at once, each upload body being received.
    body_mb = len(ppm(a.size, a.size, 0)) / 2**20
    bound_mb = rss_warm_kb / 1024 + a.cache_mb + a.max_decodes * a.decode_allowance_mb + a.uploaders * body_mb
    within = peak_kb / 1024 <= bound_mb
    out = {
        "clients": a.clients, "uploaders": a.uploaders, "seconds": round(wall, 1), "image_size": a.size,
        "segment_requests": len(seg_lat), "segment_per_s": round(len(seg_lat) / wall, 1),
        "segment_latency_ms_p50": round(1000 * pct(seg_lat, 0.5), 1),
        "segment_latency_ms_p99": round(1000 * pct(seg_lat, 0.99), 1),
        "decode_ms_p50": round(pct(dec_ms, 0.5), 1), "decode_ms_p99": round(pct(dec_ms, 0.99), 1),
        "server_work_ms_p50": round(pct(work_ms, 0.5), 1), "server_work_ms_p99": round(pct(work_ms, 0.99), 1),
        "uploads": len(up_lat), "upload_latency_ms_p50": round(1000 * pct(up_lat, 0.5), 1),
        "encode_ms_p50": round(pct(enc_ms, 0.5), 1), "uploads_503": busy[0], "errors": len(errors),
        "rss_after_model_mb": round(rss_model_kb / 1024, 1), "cache_mb": a.cache_mb,
        "peak_rss_after_warmup_encodes_mb": round(rss_warm_kb / 1024, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "peak_within_warm_plus_cache": peak_kb / 1024 <= rss_warm_kb / 1024 + a.cache_mb,
        "max_decodes": a.max_decodes, "decode_allowance_mb": a.decode_allowance_mb,
        "rss_bound_mb": round(bound_mb, 1), "peak_within_bound": within,
        "server_exit_on_sigterm": code,
    }
    out["memory_warm_mb"] = warm_memory
    if samples:
        out["memory_samples"] = len(samples)
        out["memory_max_mb"] = {k: max(x.get(k, 0) for x in samples) for k in MEMORY}
        out["memory_at_highest_rss_sample_mb"] = max(samples, key=lambda x: x.get(MEMORY[0], 0))
    for line in metrics.splitlines():
        if line.startswith(("rsam_cache_hits_total", "rsam_cache_misses_total", "rsam_encode_rejected_total")):
            out[line.split()[0]] = int(float(line.split()[1]))
    print(json.dumps(out, indent=1))
    print("peak RSS %.1f MB %s the bound %.1f MB = warm %.1f + cache %d + %d decode(s) x %g + %d upload(s) x %.2f" %
          (peak_kb / 1024, "within" if within else "OVER", bound_mb, rss_warm_kb / 1024, a.cache_mb, a.max_decodes,
           a.decode_allowance_mb, a.uploaders, body_mb))
    for e in errors[:10]:
        print("error:", e, file=sys.stderr)
    if a.json:
        open(a.json, "w").write(json.dumps(out, indent=1) + "\n")
    return 0 if not errors and code == 0 and within else 1


if __name__ == "__main__":
    sys.exit(main())
