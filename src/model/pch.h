// Precompiled header for every LibTorch translation unit: torch's headers
// dominate build time, so they are parsed once per target.
#pragma once
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
