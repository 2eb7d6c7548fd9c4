// Calibration observers and thresholds; the methods and the histogram
// convention are specified in observers.h.
#include "quant/observers.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "quant/qparams.h"

namespace engine {
namespace {

constexpr int kLevels = kInt8Max + 1;  // quantization levels of |x|: 0..127
// Point-mass detection for entropy (see point_masses()).
constexpr int kSpikeWindow = 16;
constexpr double kSpikeRatio = 2.0;
constexpr double kSpikeMinShare = 1e-3;

double amax_percentile(const std::vector<int64_t>& hist, double range, double percentile) {
  ENGINE_ENFORCE(percentile > 0 && percentile <= 100, kInvalidArgument,
                 "percentile must be in (0, 100], got ", percentile);
  const int n = static_cast<int>(hist.size());
  double total = 0;
  for (int64_t c : hist) total += static_cast<double>(c);
  if (total == 0) return 0;
  if (percentile >= 100) {
    int last = n - 1;
    while (last > 0 && hist[last] == 0) --last;
    return range * (last + 1) / n;
  }
  // The p-th percentile sits in the first bin whose cumulative count reaches
  // p% of the total; values are taken as uniform within a bin.
  const double target = total * percentile / 100.0;
  const double width = range / n;
  double cum = 0;
  for (int k = 0; k < n; ++k) {
    const double c = static_cast<double>(hist[k]);
    if (c > 0 && cum + c >= target) return width * (k + (target - cum) / c);
    cum += c;
  }
  return range;
}

// Point masses in a histogram of |x|: bins k >= 1 holding more than
// kSpikeRatio times the median of their neighbours (up to kSpikeWindow on
// each side, fewer at the ends) and at least kSpikeMinShare of the mass.
// Returns the neighbour medians of those bins (the counts they are replaced
// with), -1 elsewhere. h[0] is not a candidate: entropy() treats it apart.
std::vector<double> point_masses(const std::vector<double>& h) {
  const int n = static_cast<int>(h.size());
  double total = 0;
  for (double c : h) total += c;
  std::vector<double> median(n, -1.0), window;
  window.reserve(2 * kSpikeWindow);
  for (int k = 1; k < n; ++k) {
    if (h[k] < kSpikeMinShare * total) continue;
    window.clear();
    for (int m = std::max(0, k - kSpikeWindow); m <= std::min(n - 1, k + kSpikeWindow); ++m)
      if (m != k) window.push_back(h[m]);
    // numpy.median: the mean of the two middle values for an even count.
    const size_t mid = window.size() / 2;
    std::nth_element(window.begin(), window.begin() + mid, window.end());
    double med = window[mid];
    if (window.size() % 2 == 0) med = 0.5 * (med + *std::max_element(window.begin(), window.begin() + mid));
    if (h[k] > kSpikeRatio * std::max(med, 1.0)) median[k] = med;
  }
  return median;
}

double amax_entropy(const std::vector<int64_t>& hist, double range) {
  const int n = static_cast<int>(hist.size());
  std::vector<double> h(hist.begin(), hist.end());
  // The zero spike of rectified tensors would otherwise decide the divergence.
  if (n > 1) h[0] = h[1];
  // So would a point mass anywhere else (a uniform background through the
  // normalization and the first convs puts one per channel at a nonzero
  // magnitude): KL spreads each level's mass over its bins, so a level
  // holding a point mass looks badly quantized at every wide threshold,
  // and the minimum lands just above the spikes, clipping everything
  // beyond them. A point mass quantizes to one level with at most half a
  // step of error like any value; it is flattened to its neighbours'
  // median, and thresholds below it (which would clip it) are not tried.
  const std::vector<double> spike_median = point_masses(h);
  int first = kLevels;
  for (int k = 1; k < n; ++k)
    if (spike_median[k] >= 0) {
      h[k] = spike_median[k];
      first = std::max(first, k + 1);
    }
  if (n > 1) h[0] = h[1];  // bin 1 may have been a point mass
  // Prefix sums make each threshold O(levels) instead of O(bins):
  // mass[k] = sum h[<k], nonempty[k] = #{m < k: h[m] > 0}, hlogh[k] = sum h log h.
  std::vector<double> mass(n + 1, 0.0), hlogh(n + 1, 0.0);
  std::vector<int> nonempty(n + 1, 0);
  for (int k = 0; k < n; ++k) {
    mass[k + 1] = mass[k] + h[k];
    hlogh[k + 1] = hlogh[k] + (h[k] > 0 ? h[k] * std::log(h[k]) : 0.0);
    nonempty[k + 1] = nonempty[k] + (h[k] > 0 ? 1 : 0);
  }
  const double total = mass[n];
  if (total == 0) return first > kLevels ? range * first / n : 0;

  double best = std::numeric_limits<double>::infinity();
  int best_i = n;
  for (int i = first; i <= n; ++i) {
    // Reference p: bins [0, i), the mass beyond folded into bin i-1.
    // Quantized q: level j takes bins k with j <= 128 k / i < j + 1, i.e.
    // k in [ceil(j i / 128), ceil((j + 1) i / 128)); its mass is spread
    // evenly over its nonempty bins, so empty bins stay empty.
    // With P = sum p, Q = sum q (= mass[i]):
    //   KL(p/P || q/Q) = (sum p log p - sum p log q) / P + log Q - log P.
    const int last = i - 1;
    const double outliers = total - mass[i];
    const double p_last = h[last] + outliers;
    const double q_total = mass[i];
    double kl = std::numeric_limits<double>::infinity();
    if (q_total > 0 && !(h[last] == 0 && p_last > 0)) {
      const double p_log_p = hlogh[last] + (p_last > 0 ? p_last * std::log(p_last) : 0.0);
      double p_log_q = 0;
      for (int j = 0; j < kLevels; ++j) {
        const int begin = static_cast<int>((static_cast<int64_t>(j) * i + kLevels - 1) / kLevels);
        const int end = static_cast<int>((static_cast<int64_t>(j + 1) * i + kLevels - 1) / kLevels);
        const int bins = nonempty[end] - nonempty[begin];
        if (bins == 0) continue;
        const double level_mass = mass[end] - mass[begin];
        const double log_q = std::log(level_mass / bins);
        // Bin i-1 belongs to level 127 (i >= 128): the outliers share its q.
        p_log_q += (j == kLevels - 1 ? level_mass + outliers : level_mass) * log_q;
      }
      kl = (p_log_p - p_log_q) / total + std::log(q_total) - std::log(total);
    }
    if (kl <= best) {  // ties: the last (widest) threshold, as TensorRT's tools do
      best = kl;
      best_i = i;
    }
  }
  return range * best_i / n;
}

double amax_mse(const std::vector<int64_t>& hist, double range) {
  const int n = static_cast<int>(hist.size());
  const double width = range / n;
  std::vector<int> used;  // nonempty bins
  for (int k = 0; k < n; ++k)
    if (hist[k] > 0) used.push_back(k);
  double best = std::numeric_limits<double>::infinity();
  int best_i = n - 1;
  for (int i = std::min(kLevels, n - 1); i < n; ++i) {
    const double amax = (i + 0.5) * width;
    const double scale = amax / kInt8Max;
    // Bin k (center (k + 1/2) w) quantizes to level round((2k+1) 127 / (2i+1)):
    // never a tie (the numerator of its distance to a half level is odd), so
    // the first bin of level l >= 1 is exact in integers:
    //   k >= ceil(q / 2),  q = floor((2l - 1)(2i + 1) / 254),
    // and walking the bins in order needs no division or rounding per bin.
    auto first_bin = [i](int64_t level) {
      const int64_t q = (2 * level - 1) * (2 * static_cast<int64_t>(i) + 1) / (2 * kInt8Max);
      return (q + 1) / 2;
    };
    int64_t level = 0, next = first_bin(1);
    double err = 0;
    for (int k : used) {
      while (level < kInt8Max && k >= next) {
        ++level;
        if (level < kInt8Max) next = first_bin(level + 1);
      }
      const double d = (k + 0.5) * width - static_cast<double>(level) * scale;
      err += static_cast<double>(hist[k]) * d * d;
    }
    if (err < best) {
      best = err;
      best_i = i;
    }
  }
  return (best_i + 0.5) * width;
}

}  // namespace

CalibMethod calib_method_from_name(const std::string& name) {
  if (name == "minmax" || name == "max") return CalibMethod::kMinMax;
  if (name == "percentile") return CalibMethod::kPercentile;
  if (name == "entropy") return CalibMethod::kEntropy;
  if (name == "mse") return CalibMethod::kMse;
  fail(ErrorKind::kInvalidArgument, "unknown calibration method '", name,
       "'; choose one of 'entropy', 'percentile', 'mse', 'minmax'");
}

const char* calib_method_name(CalibMethod m) {
  switch (m) {
    case CalibMethod::kMinMax: return "minmax";
    case CalibMethod::kPercentile: return "percentile";
    case CalibMethod::kEntropy: return "entropy";
    case CalibMethod::kMse: return "mse";
  }
  return "?";
}

double amax_from_histogram(const std::vector<int64_t>& hist, double range, CalibMethod m, double percentile) {
  ENGINE_ENFORCE(static_cast<int>(hist.size()) >= kMinNumBins, kInvalidArgument, "a calibration histogram needs at least ",
                 kMinNumBins, " bins, got ", hist.size());
  if (!(range > 0)) return 0;
  switch (m) {
    case CalibMethod::kMinMax: return range;
    case CalibMethod::kPercentile: return amax_percentile(hist, range, percentile);
    case CalibMethod::kEntropy: return amax_entropy(hist, range);
    case CalibMethod::kMse: return amax_mse(hist, range);
  }
  return range;
}

TensorObserver::TensorObserver(int num_bins) {
  ENGINE_ENFORCE(num_bins >= kMinNumBins, kInvalidArgument, "num_bins must be at least ", kMinNumBins, ", got ",
                 num_bins);
  hist_.assign(num_bins, 0);
}

void TensorObserver::set_range(double range) {
  range_ = range;
  const int n = num_bins();
  // numpy.linspace(0, range, n + 1): k * step, the last edge exactly `range`.
  const double step = range / n;
  edges_.resize(n + 1);
  for (int k = 0; k < n; ++k) edges_[k] = k * step;
  edges_[n] = range;
}

void TensorObserver::grow_to(double absmax) {
  if (range_ == 0) {
    set_range(absmax);
    return;
  }
  int64_t factor = 1;
  double range = range_;
  while (range < absmax) {
    range *= 2;
    factor *= 2;
  }
  const int n = num_bins();
  std::vector<int64_t> merged(n, 0);
  for (int k = 0; k < n; ++k) merged[k / factor] += hist_[k];
  hist_.swap(merged);
  set_range(range);
}

namespace {

// Independent accumulators: the per-lane loops below vectorize without
// reassociating a sum (observers.cc is compiled with -fno-trapping-math so
// that the compiler may if-convert the float compares: CMakeLists.txt).
constexpr int kLanes = 8;

// The power of the finite values of x and of their quantization error at
// `scale` (x - fake_quantize(x, scale)), added to *signal and *noise; NaN
// and Inf contribute nothing. Per lane in double, in order, then the lanes.
void add_noise(const float* x, int64_t n, float scale, double* signal, double* noise) {
  double s[kLanes] = {}, e[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float v = x[i + j];
      const float f = v - v == 0.f ? v : 0.f;  // non-finite -> 0: no signal, no error
      const double d = static_cast<double>(f) - fake_quantize(f, scale);
      s[j] += static_cast<double>(f) * f;
      e[j] += d * d;
    }
  }
  for (int j = 0; i < n; ++i, ++j) {
    const float v = x[i];
    const float f = v - v == 0.f ? v : 0.f;
    const double d = static_cast<double>(f) - fake_quantize(f, scale);
    s[j] += static_cast<double>(f) * f;
    e[j] += d * d;
  }
  for (int j = 0; j < kLanes; ++j) {
    *signal += s[j];
    *noise += e[j];
  }
}

}  // namespace

void TensorObserver::update(const float* x, int64_t n) {
  if (eval_only_) {
    int64_t finite = 0;
    for (int64_t i = 0; i < n; ++i) finite += x[i] - x[i] == 0.f;
    nonfinite_ += n - finite;
    count_ += finite;
    add_noise(x, n, eval_scale_, &signal_, &noise_);
    return;
  }
  // Pass 1: extremes (the range must cover the batch before binning), per lane.
  constexpr float kInf = std::numeric_limits<float>::infinity();
  float lo_lane[kLanes], hi_lane[kLanes];
  int64_t finite_lane[kLanes] = {};
  for (int j = 0; j < kLanes; ++j) lo_lane[j] = kInf, hi_lane[j] = -kInf;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const float v = x[i + j];
      const bool ok = v - v == 0.f;  // finite
      lo_lane[j] = ok && v < lo_lane[j] ? v : lo_lane[j];
      hi_lane[j] = ok && v > hi_lane[j] ? v : hi_lane[j];
      finite_lane[j] += ok;
    }
  for (int j = 0; i < n; ++i, ++j) {
    const float v = x[i];
    const bool ok = v - v == 0.f;
    lo_lane[j] = ok && v < lo_lane[j] ? v : lo_lane[j];
    hi_lane[j] = ok && v > hi_lane[j] ? v : hi_lane[j];
    finite_lane[j] += ok;
  }
  float lo = kInf, hi = -kInf;
  int64_t finite = 0;
  for (int j = 0; j < kLanes; ++j) {
    lo = std::min(lo, lo_lane[j]);
    hi = std::max(hi, hi_lane[j]);
    finite += finite_lane[j];
  }
  nonfinite_ += n - finite;
  if (finite == 0) return;
  if (count_ == 0) {
    min_ = lo;
    max_ = hi;
  } else {
    min_ = std::min(min_, lo);
    max_ = std::max(max_, hi);
  }
  count_ += finite;
  const float batch_absmax = std::max(std::fabs(lo), std::fabs(hi));
  absmax_ = std::max(absmax_, batch_absmax);
  if (batch_absmax > range_) grow_to(batch_absmax);
  // Integer-valued so far? (Stops looking at the first fraction.)
  for (int64_t i = 0; integral_ && i < n; ++i)
    if (std::isfinite(x[i]) && std::floor(x[i]) != x[i]) integral_ = false;

  // Pass 2: bin |x|. While the range is 0 every value seen is 0 (bin 0).
  const int bins = num_bins();
  if (range_ == 0) {
    hist_[0] += finite;
  } else {
    const double per_unit = bins / range_;  // (an estimate: the edges decide)
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(x[i])) continue;
      const double a = std::fabs(static_cast<double>(x[i]));
      int k = static_cast<int>(a * per_unit);
      if (k >= bins) k = bins - 1;
      // The float estimate can land one bin off next to an edge; the edges
      // decide, as in numpy.histogram.
      if (a < edges_[k]) --k;
      else if (k < bins - 1 && a >= edges_[k + 1]) ++k;
      ++hist_[k];
    }
  }
  if (eval_scale_ > 0) add_noise(x, n, eval_scale_, &signal_, &noise_);
}

void TensorObserver::update(const Tensor& t) {
  ENGINE_ENFORCE(t.dtype() == DType::kFloat32, kDType, "calibration observes float32 tensors, got ",
                 dtype_name(t.dtype()));
  update(t.data<float>(), t.numel());
}

float TensorObserver::amax(CalibMethod method, double percentile) const {
  if (count_ == 0 || absmax_ == 0) return 0;
  if (integral_ && absmax_ <= 127.f) {  // the exact power-of-two grid (observers.h)
    float scale = 1.f;
    while (absmax_ / (scale * 0.5f) <= 127.f) scale *= 0.5f;
    return 127.f * scale;
  }
  if (method == CalibMethod::kMinMax) return absmax_;
  const double a = amax_from_histogram(hist_, range_, method, percentile);
  return static_cast<float>(std::min<double>(a, absmax_));
}

double TensorObserver::sqnr_db() const {
  if (noise_ == 0) return std::numeric_limits<double>::infinity();
  if (signal_ == 0) return -std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(signal_ / noise_);
}

ObserverSet::ObserverSet(const std::vector<std::string>& names, int num_bins) {
  for (const std::string& name : names) {
    if (index_.count(name)) continue;
    index_[name] = observers_.size();
    names_.push_back(name);
    observers_.emplace_back(num_bins);
  }
}

TensorObserver& ObserverSet::at(const std::string& name) {
  auto it = index_.find(name);
  ENGINE_ENFORCE(it != index_.end(), kInvalidArgument, "tensor '", name, "' is not being calibrated");
  return observers_[it->second];
}

void ObserverSet::on_output(const Node& node, int index, const Tensor& t) {
  const Value* v = node.output(index);
  if (!v || t.dtype() != DType::kFloat32) return;
  auto it = index_.find(v->name());
  if (it == index_.end()) return;
  std::lock_guard<std::mutex> lock(mu_);
  observers_[it->second].update(t);
}

void ObserverSet::update(const std::string& name, const Tensor& t) {
  std::lock_guard<std::mutex> lock(mu_);
  at(name).update(t);
}

TensorObserver ObserverSet::get(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  return const_cast<ObserverSet*>(this)->at(name);
}

std::map<std::string, float> ObserverSet::amax(CalibMethod method, double percentile) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, float> out;
  for (size_t i = 0; i < observers_.size(); ++i)
    if (observers_[i].count() > 0) out[names_[i]] = observers_[i].amax(method, percentile);
  return out;
}

std::map<std::string, int64_t> ObserverSet::nonfinite() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, int64_t> out;
  for (size_t i = 0; i < observers_.size(); ++i)
    if (observers_[i].nonfinite() > 0) out[names_[i]] = observers_[i].nonfinite();
  return out;
}

void ObserverSet::set_eval_scales(const std::map<std::string, float>& scales, bool statistics) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, scale] : scales) {
    auto it = index_.find(name);
    if (it != index_.end()) observers_[it->second].set_eval_scale(scale, statistics);
  }
}

std::map<std::string, double> ObserverSet::sqnr_db() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, double> out;
  for (size_t i = 0; i < observers_.size(); ++i)
    if (observers_[i].count() > 0 && observers_[i].signal_power() + observers_[i].noise_power() > 0)
      out[names_[i]] = observers_[i].sqnr_db();
  return out;
}

}  // namespace engine
