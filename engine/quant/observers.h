// Calibration observers: statistics of activation tensors across batches,
// and the clipping threshold (amax) each calibration method derives from them.
//
// A TensorObserver keeps, for one tensor:
//   - count, min, max, absmax of its finite values (NaN/Inf are counted apart
//     and never enter the statistics);
//   - a histogram of |x| with num_bins equal bins over [0, range]. The first
//     batch with a nonzero value sets range = its absmax; when a later batch
//     exceeds the range, the range doubles (as often as needed) and each run
//     of 2^k old bins merges into one new bin. Doubling keeps old bin edges on
//     new bin edges, so re-binning is exact (no interpolation) and the result
//     does not depend on how the data was split into batches, only on the
//     first batch's absmax. Memory stays fixed however wide the data gets.
// Bin k holds edge(k) <= |x| < edge(k+1), edge(k) = k * (range / num_bins)
// computed in double, the last bin closed: numpy.histogram's convention, so
// the counts can be checked against numpy exactly.
//
// Methods (amax(), all symmetric, for int8 with 127 positive levels):
//   minmax      absmax, exact.
//   percentile  the p-th percentile of |x|, interpolated linearly in its bin.
//   entropy     TensorRT's EntropyCalibration2 as NVIDIA's open tools
//               (pytorch-quantization, ModelOpt) implement it, made robust to
//               point masses: for each threshold bin i, the reference
//               distribution is bins [0, i) with everything beyond folded
//               into bin i-1; its 128-level quantized version spreads each
//               level's mass evenly over that level's nonempty bins; pick the
//               last i minimizing KL(reference || quantized). Before that:
//               - bin 0 is set to bin 1's count, so the spike of exact zeros
//                 after a ReLU does not dominate the divergence (as NVIDIA's
//                 tools do);
//               - so is every other point mass, at any magnitude: a bin
//                 k >= 1 holding more than 2x the median of its 32 nearest
//                 neighbours (fewer at the ends; numpy.median) and at least
//                 0.1% of the mass is set to that median, all such bins at
//                 once, then bin 0 is set to bin 1 again; and thresholds
//                 start above the last of them (i > k, and i >= 128), so a
//                 point mass is never clipped.
//               Point masses come from constant regions of the input: a
//               uniform background, mapped through the normalization and
//               the first convs, puts one per channel away from zero. Left
//               in, KL sees their levels as badly quantized at every wide
//               threshold and clips the foreground just above them.
//   mse         the bin center c_i (i >= 128) minimizing the expected squared
//               error sum_k n_k (c_k - fq(c_k; c_i))^2 over the histogram,
//               fq = quantize to 127 levels over [0, c_i] and back.
// Histogram-based thresholds are capped at absmax. Everything is
// deterministic: the same batches in the same order give the same amax.
//
// Integer-valued tensors override every method: when every finite value seen
// is an integer and absmax <= 127 (spikes and spike counts of a spiking
// network, masks, one-hot codes), amax = 127 * 2^-e with 2^e the largest power
// of two such that absmax * 2^e <= 127. Every value then quantizes to an
// integer multiple of the power-of-two scale and dequantizes to itself
// exactly, and nothing is clipped: no threshold does better. (A histogram
// threshold lands on a bin edge just below the top value: spikes of 1.0 came
// back as 0.99976, and a spike count of 1 with amax ~2 as 1.0042.)
//
// Thread-safety: TensorObserver has none; ObserverSet serializes updates and
// reads with a mutex (the executor calls it from the thread running run()).
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"
#include "ir/graph.h"

namespace engine {

enum class CalibMethod { kMinMax, kPercentile, kEntropy, kMse };

// "minmax" (or "max"), "percentile", "entropy", "mse"; throws kInvalidArgument.
CalibMethod calib_method_from_name(const std::string& name);
const char* calib_method_name(CalibMethod m);

constexpr int kDefaultNumBins = 2048;
constexpr int kMinNumBins = 128;  // the entropy method needs one bin per level
constexpr double kDefaultPercentile = 99.99;

// The threshold a histogram-based method picks for a histogram of |x| with
// equal bins over [0, range] (not capped at absmax). kMinMax is not
// histogram-based and returns `range`. percentile is in (0, 100].
double amax_from_histogram(const std::vector<int64_t>& hist, double range, CalibMethod m,
                           double percentile = kDefaultPercentile);

class TensorObserver {
 public:
  // num_bins >= kMinNumBins, else kInvalidArgument.
  explicit TensorObserver(int num_bins = kDefaultNumBins);

  // Adds n values. Also accumulates quantization noise when an evaluation
  // scale is set (see set_eval_scale).
  void update(const float* x, int64_t n);
  // Float32 tensors only (kDType otherwise).
  void update(const Tensor& t);

  int64_t count() const { return count_; }          // finite values seen
  int64_t nonfinite() const { return nonfinite_; }  // NaN and +-Inf values seen
  float absmax() const { return absmax_; }
  float min() const { return min_; }
  float max() const { return max_; }
  int num_bins() const { return static_cast<int>(hist_.size()); }
  double range() const { return range_; }
  const std::vector<int64_t>& histogram() const { return hist_; }
  // Whether every finite value seen so far is an integer (true before any).
  bool integral() const { return integral_; }

  // The clipping threshold of `method` (0 before any nonzero value).
  float amax(CalibMethod method, double percentile = kDefaultPercentile) const;

  // From now on, update() also accumulates the power of x and of the
  // quantization error x - fake_quantize(x, scale): the tensor's signal to
  // quantization-noise ratio at that scale, on the data seen afterwards.
  // With `statistics` false it does only that (and counts values): the
  // range, histogram and extremes stop updating (an evaluation pass after
  // calibration reads only the SQNR).
  void set_eval_scale(float scale, bool statistics = true) {
    eval_scale_ = scale;
    eval_only_ = scale > 0 && !statistics;
  }
  double signal_power() const { return signal_; }
  double noise_power() const { return noise_; }
  // 10 log10(signal / noise) in dB; +inf for noiseless data.
  double sqnr_db() const;

 private:
  void grow_to(double absmax);
  void set_range(double range);

  std::vector<int64_t> hist_;
  std::vector<double> edges_;  // num_bins + 1 bin edges for range_
  double range_ = 0;
  int64_t count_ = 0, nonfinite_ = 0;
  float absmax_ = 0, min_ = 0, max_ = 0;
  float eval_scale_ = 0;
  bool eval_only_ = false;
  double signal_ = 0, noise_ = 0;
  bool integral_ = true;
};

// The observers of a set of named tensors, fed by the executor's node
// observer hook (on_output) or directly (update).
class ObserverSet {
 public:
  ObserverSet(const std::vector<std::string>& names, int num_bins = kDefaultNumBins);

  // The executor's NodeObserver: updates the observer of the node's output
  // if it is one of ours and float32; ignores everything else.
  void on_output(const Node& node, int index, const Tensor& t);
  // Updates the observer named `name` (kInvalidArgument if there is none).
  void update(const std::string& name, const Tensor& t);

  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // A copy of one observer (kInvalidArgument for an unknown name).
  TensorObserver get(const std::string& name) const;
  // amax per tensor, for tensors that received at least one finite value.
  std::map<std::string, float> amax(CalibMethod method, double percentile = kDefaultPercentile) const;
  // Tensors that received NaN or Inf values, with their counts.
  std::map<std::string, int64_t> nonfinite() const;
  // Sets evaluation scales (see TensorObserver::set_eval_scale) by name;
  // unknown names are ignored.
  void set_eval_scales(const std::map<std::string, float>& scales, bool statistics = true);
  // SQNR in dB per tensor that has an evaluation scale and saw data.
  std::map<std::string, double> sqnr_db() const;

 private:
  TensorObserver& at(const std::string& name);

  mutable std::mutex mu_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, size_t> index_;
  std::vector<TensorObserver> observers_;
};

}  // namespace engine
