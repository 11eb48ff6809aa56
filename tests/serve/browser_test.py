#!/usr/bin/env python3
"""The rsam serve page in a real browser: headless chromium driven through
chromedriver's W3C WebDriver protocol (python3 standard library only).

Loads the page, uploads a synthetic scene (rsam synth, with ground-truth
masks), clicks on its largest object, waits for the overlay, keeps the
screenshot (OUT/serve_page.png) and checks that the overlay covers the
object: in the page's state (the mask against the ground truth) and in the
screenshots (the pixels the overlay tinted). Then a burst of clicks: the
page keeps one request in flight and sends only the latest prompt after it. Exit 77 (ctest: skipped) with a
message when chromium or chromedriver is missing.
"""
import argparse
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib

SKIP = 77


def read_png(data):
    """8-bit, non-interlaced PNG (grey, RGB, RGBA) -> (w, h, channels, rows)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and ctype in (0, 2, 6), "unsupported PNG"
            ch = {0: 1, 2: 3, 6: 4}[ctype]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, rows, prev = zlib.decompress(idat), w * ch, [], bytearray(w * ch)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - ch] if i >= ch else 0
            b, c = prev[i], (prev[i - ch] if i >= ch else 0)
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return w, h, ch, rows


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class WebDriver:
    def __init__(self, port):
        self.base = "http://127.0.0.1:%d" % port

    def call(self, method, path, body=None, timeout=60):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError("webdriver %s %s: %s" % (method, path, e.read()[:500]))

    def start(self, chromium, size):
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=%d,%d" % size, "--force-device-scale-factor=1", "--hide-scrollbars"]}}}}
        self.sid = self.call("POST", "/session", caps, timeout=120)["sessionId"]
        self.s = "/session/" + self.sid

    def js(self, script, *args):
        return self.call("POST", self.s + "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script, what, timeout=120):
        end = time.time() + timeout
        while time.time() < end:
            v = self.js(script)
            if v:
                return v
            time.sleep(0.1)
        raise RuntimeError("timed out waiting for " + what + "; status: " +
                           str(self.js("return document.getElementById('status').textContent")))

    def screenshot(self):
        return base64.b64decode(self.call("GET", self.s + "/screenshot"))


def largest_object(mask_png):
    """The largest instance of an 8-bit instance-id mask: (id, its pixel set,
    and an inner point: the pixel deepest inside it by city-block distance)."""
    w, h, ch, rows = read_png(mask_png)
    counts = {}
    for row in rows:
        for v in row[::ch]:
            if v:
                counts[v] = counts.get(v, 0) + 1
    obj = max(counts, key=counts.get)
    inside = [[rows[y][x * ch] == obj for x in range(w)] for y in range(h)]
    big = w + h
    d = [[0 if not inside[y][x] else big for x in range(w)] for y in range(h)]
    for y in range(h):
        for x in range(w):
            if d[y][x]:
                d[y][x] = min(d[y][x], (d[y - 1][x] + 1) if y else 1, (d[y][x - 1] + 1) if x else 1)
    for y in reversed(range(h)):
        for x in reversed(range(w)):
            if d[y][x]:
                d[y][x] = min(d[y][x], (d[y + 1][x] + 1) if y + 1 < h else 1, (d[y][x + 1] + 1) if x + 1 < w else 1)
    best = max(((d[y][x], x, y) for y in range(h) for x in range(w)))
    return w, h, inside, (best[1] + 0.5, best[2] + 0.5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rsam", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=384, help="scene size")
    ap.add_argument("--window", default="1000,640")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        print("SKIPPED: the browser test needs chromium and chromedriver (Debian: chromium chromium-driver; "
              "scripts/install-deps.sh installs them)")
        return SKIP
    os.makedirs(a.out, exist_ok=True)
    scene_dir = os.path.join(a.out, "synth")
    shutil.rmtree(scene_dir, ignore_errors=True)
    subprocess.run([a.rsam, "synth", "--out", scene_dir, "--count", "1", "--size", str(a.size), "--photos", "none",
                    "--seed", str(a.seed)], check=True, stdout=subprocess.DEVNULL)
    image_path = os.path.join(scene_dir, "images", sorted(os.listdir(os.path.join(scene_dir, "images")))[0])
    mask_path = os.path.join(scene_dir, "masks", os.path.basename(image_path))
    w, h, inside, (px, py) = largest_object(open(mask_path, "rb").read())

    procs = []
    wd = None
    try:
        server = subprocess.Popen([a.rsam, "serve", "--port", "0", "--threads", "2"], stdout=subprocess.PIPE,
                                  stderr=open(os.path.join(a.out, "serve.log"), "w"), text=True)
        procs.append(server)
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), "no URL from rsam serve: " + url
        dport = free_port()
        procs.append(subprocess.Popen([driver, "--port=%d" % dport], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wd = WebDriver(dport)
        for _ in range(100):
            try:
                wd.call("GET", "/status", timeout=2)
                break
            except Exception:
                time.sleep(0.1)
        wd.start(chromium, tuple(int(v) for v in a.window.split(",")))
        wd.call("POST", wd.s + "/url", {"url": url})
        wd.wait("return window.rsamState && window.rsamState.health", "the page to reach the server")
        # The file input, as a user's "Open image" would fill it.
        el = wd.call("POST", wd.s + "/element", {"using": "css selector", "value": "#file"})
        eid = list(el.values())[0]
        wd.call("POST", wd.s + "/element/%s/value" % eid, {"text": os.path.abspath(image_path)})
        wd.wait("return document.body.dataset.state === 'ready'", "the image to be encoded")
        before = wd.screenshot()
        geo = wd.js("const r = document.getElementById('overlay').getBoundingClientRect();"
                    "return [r.left, r.top, window.rsamState.scale, window.rsamState.width, window.rsamState.height];")
        left, top, scale = geo[0], geo[1], geo[2]
        assert (geo[3], geo[4]) == (w, h), "page image size %s != scene %s" % (geo[3:], (w, h))
        cx, cy = int(left + px * scale), int(top + py * scale)
        wd.call("POST", wd.s + "/actions", {"actions": [{"type": "pointer", "id": "mouse",
                "parameters": {"pointerType": "mouse"}, "actions": [
                    {"type": "pointerMove", "duration": 0, "origin": "viewport", "x": cx, "y": cy},
                    {"type": "pointerDown", "button": 0}, {"type": "pointerUp", "button": 0}]}]})
        wd.wait("return document.body.dataset.state === 'mask' && window.rsamState.mask !== null", "the overlay")
        time.sleep(0.3)  # one frame for the canvas to reach the screenshot
        after = wd.screenshot()
        shot = os.path.join(a.out, "serve_page.png")
        open(shot, "wb").write(after)
        page = wd.js("const s = window.rsamState; return {mask: Array.from(s.mask).join(''),"
                     "candidates: document.querySelectorAll('#candidate-buttons button').length,"
                     "status: document.getElementById('status').textContent, error: s.error};")
        # A burst of clicks while a request is in flight: the page sends the
        # first, then only the latest prompt, and shows the answer to it.
        # Dispatched in one script, so all clicks land before any answer.
        burst = wd.js("const s = window.rsamState, o = document.getElementById('overlay'), n0 = s.sent;"
                      "for (let k = 0; k < 5; k++) for (const type of ['mousedown', 'mouseup'])"
                      "  o.dispatchEvent(new MouseEvent(type, {clientX: arguments[0] + k % 2, clientY: arguments[1],"
                      "                                        button: 0, bubbles: true}));"
                      "return {sent: s.sent - n0, points: s.points.length};", cx, cy)
        wd.wait("const s = window.rsamState; return !s.inFlight && !s.pending && s.shownPrompt !== null &&"
                " s.shownPrompt.points.length === s.points.length", "the answer to the latest prompt")
        queued = wd.js("const s = window.rsamState; return {sent: s.sent, shown: s.shownPrompt.points.length,"
                       "points: s.points.length, error: s.error};")
    finally:
        # Ending the session makes chromedriver close the browser; killed
        # without it, chromedriver would leave chromium running.
        if wd is not None and getattr(wd, "s", None):
            try:
                wd.call("DELETE", wd.s, timeout=20)
            except Exception:
                pass
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    if server.returncode != 0:
        print("FAIL: rsam serve exited with %s on SIGTERM" % server.returncode)
        return 1

    # The page's mask against the ground truth.
    m = page["mask"]
    inter = sum(1 for y in range(h) for x in range(w) if inside[y][x] and m[y * w + x] == "1")
    union = sum(1 for y in range(h) for x in range(w) if inside[y][x] or m[y * w + x] == "1")
    iou = inter / max(union, 1)
    # The screenshots: the share of the object's pixels the overlay tinted,
    # and of the pixels away from it (2 px margin left out at the edges).
    bw, bh, bch, brows = read_png(before)
    aw, ah, ach, arows = read_png(after)
    tin, tout, nin, nout = 0, 0, 0, 0
    for y in range(2, h - 2, 2):
        for x in range(2, w - 2, 2):
            sx, sy = int(left + (x + 0.5) * scale), int(top + (y + 0.5) * scale)
            if abs(sx - cx) < 10 and abs(sy - cy) < 10:
                continue  # the point marker
            near = any(inside[yy][xx] != inside[y][x] for yy in (y - 2, y + 2) for xx in (x - 2, x + 2))
            if near:
                continue
            diff = sum(abs(brows[sy][sx * bch + c] - arows[sy][sx * ach + c]) for c in range(3))
            if inside[y][x]:
                nin += 1
                tin += diff > 30
            else:
                nout += 1
                tout += diff > 30
    fin, fout = tin / max(nin, 1), tout / max(nout, 1)
    print("page: %s; candidates %d; mask IoU with the object %.3f; screenshot: %.0f%% of the object tinted, "
          "%.0f%% of the rest; screenshot %s" % (page["status"], page["candidates"], iou, 100 * fin, 100 * fout, shot))
    # 1 click, then 5 in a burst: 2 requests for the burst (the first click's
    # and the latest prompt's), the shown answer for all 6 points.
    burst_sent = queued["sent"] - 1
    print("burst of 5 clicks: %d sent at once, %d in all; answer shown for %d of %d points" %
          (burst["sent"], burst_sent, queued["shown"], queued["points"]))
    queue_ok = burst["sent"] == 1 and burst_sent == 2 and queued["shown"] == queued["points"] == 6 \
        and not queued["error"]
    ok = page["candidates"] == 3 and not page["error"] and iou >= 0.5 and fin >= 0.6 and fout <= 0.25 and queue_ok
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
