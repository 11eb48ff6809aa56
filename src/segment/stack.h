// A SAM as a method runs it: a checkpoint, optionally an adapter on its
// encoder, optionally a GleSAM enhancer between encoder and decoder. One
// assembly (and one order of assembly) for `rsam segment`, the demo and the
// C++ API.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>

#include "adapt/adapter.h"
#include "glesam/enhancer.h"
#include "model/predictor.h"

namespace rsam::segment {

struct Stack {
  Sam base{nullptr};                          // the checkpoint's model
  Sam sam{nullptr};                           // what runs: the base, or the base with the adapter
  std::optional<adapt::AdaptedSam> adapted;   // keeps the adapter's modules alive
  std::shared_ptr<const glesam::Enhancer> enhancer;

  Stack() = default;
  explicit Stack(Sam model) : base(model), sam(model) {}

  // The adapter file on the base's encoder. rsam::Error when it was trained
  // on another base, or after add_enhancer (the enhancer's decoder would be
  // lost).
  void add_adapter(const std::string& path);
  // The enhancer of an E.json: widened to the model's embedding, its decoder
  // (if any) loaded into the running model.
  void add_enhancer(const std::string& json_path);
  // A predictor over the running model with the enhancer attached.
  SamPredictor predictor(Precision precision, bool flip = false) const;
  // The embedding `encoder` computed (a predictor over this stack's
  // encoder) set on `pred`, through the enhancer as predictor()'s would be:
  // a method and its enhanced twin then share one encode per image.
  void set_embedding(SamPredictor& pred, const SamPredictor& encoder) const;
  // What runs, for summaries: {"model", ["adapter"], ["enhancer"]}.
  nlohmann::json describe() const;
};

// The checkpoint (loaded on `device`), then the adapter and the enhancer
// when given (empty: none).
Stack load_stack(const std::string& checkpoint, const std::string& adapter = "", const std::string& enhancer = "",
                 const torch::Device& device = torch::kCPU);

}  // namespace rsam::segment
