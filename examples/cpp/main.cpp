// The smallest rsam program: one click on a red rectangle, segmented by the
// bundled rsam-tiny (with its GaRA adapter). Prints the model file it used,
// the best of the three candidate masks, its score and its area.
#include <rsam/rsam.h>

#include <cstdio>

int main() try {
  const rsam::Model model = rsam::Model::load();  // a checkpoint path, or the bundled model
  rsam::Predictor predictor(model);

  rsam::Image img{320, 240, std::vector<uint8_t>(320 * 240 * 3, 40)};  // RGB, row-major
  for (int y = 80; y < 160; ++y)
    for (int x = 100; x < 220; ++x) img.data[(y * 320 + x) * 3] = 230;  // a red rectangle
  predictor.set_image(img);

  rsam::SegmentPrompt prompt;
  prompt.points.push_back({160, 120});  // x, y; label 1 (foreground)
  const rsam::Masks m = predictor.predict(prompt);

  const int best = m.best();
  long area = 0;
  for (int i = 0; i < m.width * m.height; ++i) area += m.mask(best)[i];
  std::printf("rsam %s, %s\nbest of %d masks: score %.3f, %ld pixels (the rectangle: %d)\n", rsam::version().c_str(),
              model.checkpoint().c_str(), m.count, m.scores[best], area, 120 * 80);
} catch (const rsam::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
