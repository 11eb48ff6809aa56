// `rsam convert`: a checkpoint between .pth and .safetensors, optionally
// re-sized, deepened or widened (model/surgery.h), its adapter carried over.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "adapt/adapter.h"
#include "app/commands.h"
#include "error.h"
#include "io/fs.h"
#include "model/checkpoint.h"
#include "model/surgery.h"

namespace rsam::app {

namespace {

bool ends_with(const std::string& s, const std::string& e) {
  return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
}

struct ConvertArgs {
  std::string in, out, adapter, adapter_out;
  int img_size = 0, encoder_depth = 0, decoder_width = 0;
};

void run_convert(const ConvertArgs& a) {
  // Goes through the model so the output is known to load, and carries the
  // full config (including the decoder head count) into safetensors.
  if (a.adapter.empty() != a.adapter_out.empty()) throw Error("--adapter and --adapter-out go together");
  // Deepening moves blocks and widening changes shapes: only a re-size keeps
  // every adapter tensor meaningful.
  if (!a.adapter.empty() && (!a.img_size || a.encoder_depth || a.decoder_width))
    throw Error("--adapter carries an adapter over --img-size only");
  if (!ends_with(a.out, ".safetensors") && !ends_with(a.out, ".pth"))
    throw Error("output must end in .safetensors or .pth");
  for (const auto& o : {a.out, a.adapter_out}) io::prepare_output(o);
  io::check_outputs({{"the output", a.out}, {"--adapter-out", a.adapter_out}},
                    {{"the input", a.in}, {"--adapter", a.adapter}});
  auto loaded = load_sam(a.in);
  const Sam source = loaded.model;
  if (a.img_size) loaded.model = resize_input(loaded.model, a.img_size);  // validates the new config
  if (a.encoder_depth) loaded.model = deepen_encoder(loaded.model, a.encoder_depth);
  if (a.decoder_width) loaded.model = widen_decoder(loaded.model, a.decoder_width);
  save_sam(loaded.model, a.out);
  const int64_t params = parameter_count(*loaded.model);  // a new input size, depth or width changes it
  std::printf("wrote %s (%s, %lld parameters, %d px input)\n", a.out.c_str(), loaded.model->config.type_name().c_str(),
              (long long)params, loaded.model->config.img_size);
  if (!a.adapter.empty()) {
    // After save_sam: this attaches the adapters to both models.
    adapt::rebase_adapter(source, loaded.model, a.adapter, a.adapter_out);
    std::printf("wrote %s (%s carried over to the converted model)\n", a.adapter_out.c_str(), a.adapter.c_str());
  }
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto a = std::make_shared<ConvertArgs>();
  auto* c = app.add_subcommand("convert", "Convert a checkpoint between .pth and .safetensors");
  c->add_option("input", a->in, "Input checkpoint")->required();
  c->add_option("output", a->out, "Output (.safetensors or .pth)")->required();
  c->add_option("--img-size", a->img_size,
                "Re-size the model's input: resamples the position embedding and the global blocks' "
                "rel-pos tables (start of a fine-tune at that size)");
  c->add_option("--encoder-depth", a->encoder_depth,
                "Deepen the image encoder to this many blocks: new windowed blocks with zero output "
                "projections (the identity) spread between the old ones, so the model is unchanged until "
                "trained (start of a fine-tune with more capacity)");
  c->add_option("--decoder-width", a->decoder_width,
                "Widen the prompt encoder and mask decoder to this many channels (a multiple of the current "
                "width): every channel copied, the readers' weights split unevenly between the copies, so "
                "the masks are unchanged until trained (start of a fine-tune with a larger decoder)");
  c->add_option("--adapter", a->adapter,
                "With --img-size: an adapter trained on the input checkpoint, carried over to the re-sized "
                "model (same tensors, the new model's fingerprint), written to --adapter-out");
  c->add_option("--adapter-out", a->adapter_out, "Where --adapter's carried-over file goes (.safetensors)");
  c->callback([a] { run_convert(*a); });
}

}  // namespace rsam::app
