// The web page's files (web/), embedded into the binary at build time by
// embed_web.cmake, so `rsam serve` needs no files beside it.
#pragma once

#include <cstddef>

namespace rsam::serve {

struct WebAsset {
  const char* path;  // "/index.html"
  const char* mime;
  const unsigned char* data;
  size_t size;
};
const WebAsset* web_assets(size_t* count);

}  // namespace rsam::serve
