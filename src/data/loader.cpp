#include "data/loader.h"

#include <algorithm>
#include <limits>

#include "degrade/corruption.h"
#include "degrade/rng.h"
#include "error.h"

namespace rsam::data {

namespace {

using degrade::derive_seed;

// Stream tags keep the permutation, corruption and prompt draws independent
// even though they all start from the one user seed.
constexpr uint64_t kPermTag = 0x7065726d75746174ULL;
constexpr uint64_t kCorruptTag = 0x636f7272757074ULL;

}  // namespace

int parse_severity(const std::string& s) {
  if (s == "random") return 0;
  if (s.size() == 1 && s[0] >= '1' && s[0] <= '5') return s[0] - '0';
  throw Error("severity '" + s + "' is not 1..5 or 'random'");
}

std::string severity_name(int severity) { return severity == 0 ? "random" : std::to_string(severity); }

Loader::Loader(const Dataset& data, LoaderOptions options) : data_(data), opt_(std::move(options)) {
  if (opt_.batch_size == 0) throw Error("loader: batch size must be at least 1");
  if (!(opt_.clean_ratio >= 0.0 && opt_.clean_ratio <= 1.0)) throw Error("loader: clean ratio must be in 0..1");
  if (opt_.severity < 0 || opt_.severity > degrade::kMaxSeverity)
    throw Error("loader: severity must be 1..5, or 0 for random");
  if (opt_.workers < 0 || opt_.workers > 256) throw Error("loader: workers must be in 0..256");
  // "none" entries (or an empty spec) contribute no corruption.
  size_t b = 0;
  const std::string& spec = opt_.corruptions;
  while (b <= spec.size()) {
    const size_t e = std::min(spec.find(',', b), spec.size());
    const std::string item = spec.substr(b, e - b);
    if (!item.empty() && item != "none" && item != "clean")
      for (auto& n : degrade::expand(item))
        if (std::find(names_.begin(), names_.end(), n) == names_.end()) names_.push_back(n);
    b = e + 1;
  }
  // Corruption objects are immutable after create(): build each once, share
  // them across workers.
  for (const auto& n : names_)
    for (int s = degrade::kMinSeverity; s <= degrade::kMaxSeverity; ++s)
      if (opt_.severity == 0 || s == opt_.severity) corruptions_[{n, s}] = degrade::create(n, s);

  n_ = data_.size();
  end_seq_ = opt_.epochs == 0 || n_ == 0 || opt_.epochs > std::numeric_limits<uint64_t>::max() / n_
                 ? (n_ == 0 ? 0 : std::numeric_limits<uint64_t>::max())
                 : opt_.epochs * n_;
  window_ = opt_.prefetch ? opt_.prefetch : 2 * opt_.batch_size * static_cast<size_t>(std::max(opt_.workers, 1));
}

Loader::~Loader() { stop_workers(); }

std::shared_ptr<const std::vector<size_t>> Loader::permutation(uint64_t epoch) const {
  std::lock_guard<std::mutex> lk(perm_mu_);
  auto it = perms_.find(epoch);
  if (it != perms_.end()) return it->second;
  auto p = std::make_shared<std::vector<size_t>>(n_);
  for (size_t i = 0; i < n_; ++i) (*p)[i] = i;
  if (opt_.shuffle) {
    degrade::Rng rng(derive_seed(opt_.seed ^ kPermTag, epoch));
    for (size_t i = n_; i > 1; --i) std::swap((*p)[i - 1], (*p)[rng.next() % i]);  // Fisher-Yates
  }
  // Workers straddle at most an epoch boundary or two: keep a few epochs.
  while (perms_.size() >= 3) perms_.erase(perms_.begin());
  perms_.emplace(epoch, p);
  return p;
}

Loader::Produced Loader::produce(uint64_t seq) const {
  Produced out;
  const uint64_t epoch = seq / n_, pos = seq % n_;
  Item& it = out.item;
  it.index = seq;
  it.dataset_index = (*permutation(epoch))[pos];
  try {
    it.sample = data_.get(it.dataset_index);
    if (cv::countNonZero(it.sample.mask) == 0) {
      out.error = "sample " + std::to_string(it.dataset_index) + " (" + it.sample.id + "): empty mask";
      return out;
    }
    // The same draws in the same order whatever is chosen, so changing the
    // clean ratio does not reshuffle which corruption an item gets.
    degrade::Rng rng(derive_seed(derive_seed(opt_.seed ^ kCorruptTag, epoch), pos));
    const bool clean = rng.uniform() < opt_.clean_ratio || names_.empty();
    const uint64_t pick = rng.next();
    const size_t which = names_.empty() ? 0 : static_cast<size_t>(pick % names_.size());
    const int severity = opt_.severity ? opt_.severity : rng.uniform_int(degrade::kMinSeverity, degrade::kMaxSeverity);
    const uint64_t cseed = rng.next();
    if (clean) {
      it.image = it.sample.image;
      it.corruption = "clean";
      it.severity = 0;
    } else {
      const degrade::Corruption& c = *corruptions_.at({names_[which], severity});
      degrade::Result r = c.run(it.sample.image, cseed, opt_.warp_mask ? it.sample.mask : cv::Mat());
      it.image = std::move(r.image);
      if (opt_.warp_mask) it.sample.mask = std::move(r.mask);
      it.corruption = c.name();
      it.severity = c.severity();
    }
    for (size_t s = 0; s < opt_.prompts.size(); ++s)
      it.prompts.push_back(sample_prompt(it.sample.mask, opt_.prompts[s], opt_.seed, derive_seed(it.dataset_index, s)));
    if (!it.prompts.empty()) it.prompt = it.prompts.front();
    out.ok = true;
  } catch (const std::exception& e) {
    out.error = "sample " + std::to_string(it.dataset_index) + ": " + e.what();
  } catch (...) {
    out.error = "sample " + std::to_string(it.dataset_index) + ": unknown failure";
  }
  if (!out.ok) it = Item();
  return out;
}

void Loader::worker_loop() {
  for (;;) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_work_.wait(lk, [&] { return stop_ || (next_claim_ < end_seq_ && next_claim_ < consumed_ + window_); });
    if (stop_) return;
    const uint64_t seq = next_claim_++;
    lk.unlock();
    Produced p = produce(seq);
    lk.lock();
    ready_.emplace(seq, std::move(p));
    cv_ready_.notify_all();
  }
}

void Loader::start_workers() {
  if (opt_.workers == 0 || !threads_.empty()) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = false;
    next_claim_ = consumed_ = consume_;
    ready_.clear();
  }
  for (int i = 0; i < opt_.workers; ++i) threads_.emplace_back([this] { worker_loop(); });
}

void Loader::stop_workers() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
  ready_.clear();
}

Loader::Produced Loader::take(uint64_t seq) {
  if (opt_.workers == 0) return produce(seq);
  std::unique_lock<std::mutex> lk(mu_);
  cv_ready_.wait(lk, [&] { return ready_.count(seq) > 0; });
  Produced p = std::move(ready_.at(seq));
  ready_.erase(seq);
  consumed_ = seq + 1;
  lk.unlock();
  cv_work_.notify_all();
  return p;
}

bool Loader::next(Batch& batch) {
  batch.clear();
  if (n_ == 0 || (opt_.steps && step_ >= opt_.steps)) return false;
  start_workers();
  uint64_t batch_epoch = consume_ / n_;
  while (batch.size() < opt_.batch_size) {
    if (consume_ >= end_seq_) break;
    if (consume_ / n_ != batch_epoch) {
      if (!batch.empty() && !opt_.drop_last) break;  // a short last batch for the epoch
      batch.clear();
      batch_epoch = consume_ / n_;
    }
    Produced p = take(consume_);
    ++consume_;
    if (p.ok) {
      run_of_skips_ = 0;
      batch.push_back(std::move(p.item));
      continue;
    }
    ++skipped_;
    last_skip_ = p.error;
    if (opt_.on_skip) opt_.on_skip(p.error);
    if (++run_of_skips_ >= n_) throw Error("loader: no readable sample in " + data_.describe() + " (last: " + p.error + ")");
  }
  if (batch.empty() || (opt_.drop_last && batch.size() < opt_.batch_size)) {
    batch.clear();
    return false;
  }
  ++step_;
  return true;
}

LoaderState Loader::state() const { return {n_ ? consume_ / n_ : 0, n_ ? consume_ % n_ : 0, step_}; }

void Loader::set_state(const LoaderState& s) {
  stop_workers();
  if (n_ && s.position >= n_) throw Error("loader: resume position " + std::to_string(s.position) + " is past the dataset's " + std::to_string(n_) + " samples");
  consume_ = s.epoch * n_ + s.position;
  step_ = s.step;
  run_of_skips_ = 0;
}

uint64_t Loader::skipped() const { return skipped_; }
std::string Loader::last_skip() const { return last_skip_; }

}  // namespace rsam::data
