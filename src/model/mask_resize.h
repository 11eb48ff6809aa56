// SAM's postprocess_masks (bilinear to the model's square input size, crop
// to the resized image, bilinear to the original size) as one separable
// pass: the two interpolations compose into one linear map per axis with at
// most four taps per output, so the 1024x1024 intermediate is never made.
// The two-step torch formulation (SamImpl::postprocess_masks_reference)
// stays beside it; tests hold the two together.
#pragma once

#include <torch/torch.h>

#include <utility>

namespace rsam {

// masks [..., h, w] float on the CPU -> [..., out_h, out_w]: upsampled to
// side x side, cropped to crop = (rows, cols), resized to out = (h, w).
torch::Tensor resize_masks_composed(const torch::Tensor& masks, int64_t side, std::pair<int64_t, int64_t> crop,
                                    std::pair<int64_t, int64_t> out);

}  // namespace rsam
