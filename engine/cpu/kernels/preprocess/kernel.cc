// The Preprocess kernel driver (preprocess.h describes the algorithm):
// tables per frame size, bands of output rows claimed by the pool's threads,
// and the choice of row passes (ref, AVX2 or AVX-512) made once at create().
#include <algorithm>
#include <atomic>
#include <cstring>

#include "cpu/dispatch.h"
#include "cpu/kernel_table.h"
#include "cpu/kernels/preprocess/preprocess.h"
#include "ir/preprocess.h"

namespace engine {
namespace preprocess {
namespace {

// Output rows per band: enough to amortize the window overlap between bands
// (taps - step input rows are converted twice), few enough that a band's
// converted rows stay in L2 (a 4x downscale to 224 columns: ~80 rows, 210 KB).
constexpr int64_t kBandRows = 16;
// Below this many output floats a run stays on the calling thread.
constexpr int64_t kParallelFloats = 32 * 1024;
// Bytes the SIMD horizontal passes may read past a row's last used pixel.
constexpr int64_t kRowSlack = 16;

using HPass = decltype(&hpass_u8_ref);
using VPass = decltype(&vpass_f32_ref);
using Nv12Row = decltype(&nv12_row_to_rgb_ref);

class Preprocess final : public Kernel {
 public:
  // hpass_narrow serves two-tap windows (stride 2), hpass the rest.
  Preprocess(const Node& node, const char* symbol, HPass hpass, HPass hpass_narrow, VPass vpass, Nv12Row nv12)
      : what_(str_cat(node.describe(), ": input '", node.input(0)->name(), "'")),
        spec_(preprocess_spec(node)),
        symbol_(symbol),
        simd_(std::string(symbol) != "preprocess_u8_ref"),
        hpass_(hpass),
        hpass_narrow_(hpass_narrow),
        nv12_(nv12),
        vpass_(vpass) {
    for (int c = 0; c < 3; ++c) {
      scale_[c] = 1.0f / (255.0f * spec_.std[c]);
      bias_[c] = -spec_.mean[c] / spec_.std[c];
    }
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& f = *in[0];
    Tensor& y = *out[0];
    ENGINE_ENFORCE(f.dtype() == DType::kUInt8, kDType, what_, " must be uint8 frames, got ", dtype_name(f.dtype()));
    const FrameDims fd = frame_dims(spec_, f.shape(), what_);
    const int64_t h = fd.h, w = fd.w;
    const int64_t images = spec_.video ? f.shape()[0] * f.shape()[1] : f.shape()[0];
    const int64_t frames_per_clip = spec_.video ? f.shape()[1] : 1;
    if (h != cached_h_ || w != cached_w_) prepare(h, w);
    const int64_t oh = geom_.out_h, ow = geom_.out_w;
    if (images == 0 || oh == 0 || ow == 0) return;
    const int yr = y.rank();
    ENGINE_CHECK(yr == (spec_.video ? 5 : 4) && y.shape()[yr - 2] == oh && y.shape()[yr - 1] == ow);
    const int64_t ld = (ow + 15) / 16 * 16;
    const int64_t row_floats = 3 * ld;
    const int64_t bands = (oh + kBandRows - 1) / kBandRows;
    const int64_t units = images * bands;
    const int64_t row_bytes = 3 * w;                                  // an RGB row (NV12: after conversion)
    const int64_t image_bytes = spec_.nv12 ? h * w * 3 / 2 : h * row_bytes;
    const int64_t pad_bytes = (row_bytes + kRowSlack + 63) / 64 * 64;
    const int64_t slot_floats = max_band_rows_ * row_floats + pad_bytes / 4;
    int threads = ctx.pool().num_threads();
    if (y.numel() < kParallelFloats) threads = 1;
    threads = static_cast<int>(std::min<int64_t>(threads, units));
    float* scratch = static_cast<float*>(ctx.scratch(static_cast<size_t>(threads * slot_floats) * sizeof(float)));
    const uint8_t* src = f.data<uint8_t>();
    const uint8_t* src_end = src + f.numel();
    float* dst = y.data<float>();
    const HPass hpass = xt_.stride <= 2 ? hpass_narrow_ : hpass_;
    const VPass vpass = vpass_;
    const AxisTable& xt = xt_;
    const AxisTable& yt = yt_;
    std::atomic<int64_t> next{0};
    auto body = [&](int slot, int) {
      if (slot >= threads) return;
      float* hbuf = scratch + slot * slot_floats;
      uint8_t* pad = reinterpret_cast<uint8_t*>(hbuf + max_band_rows_ * row_floats);
      for (int64_t u = next.fetch_add(1); u < units; u = next.fetch_add(1)) {
        const int64_t img = u / bands, oy0 = (u % bands) * kBandRows, oy1 = std::min(oy0 + kBandRows, oh);
        const int64_t r0 = yt.start[oy0];
        const uint8_t* image = src + img * image_bytes;
        const int64_t n = img / frames_per_clip, t = img % frames_per_clip;
        // Convert input rows as output rows first need them; rows no window
        // touches (a two-tap downscale skips most) are never read.
        int64_t done = r0;  // rows [r0, done) are converted
        for (int64_t oy = oy0; oy < oy1; ++oy) {
          for (int64_t iy = std::max<int64_t>(done, yt.start[oy]); iy < yt.start[oy] + yt.taps; ++iy) {
            const uint8_t* row = image + iy * row_bytes;
            if (spec_.nv12) {  // convert the columns the windows read into the slot's row buffer
              nv12_(image + iy * w, image + (h + iy / 2) * w, x_lo_, x_hi_, pad);
              row = pad;
            } else if (simd_ && row + row_bytes + kRowSlack > src_end) {  // the vector loads would leave the buffer
              std::memcpy(pad, row, static_cast<size_t>(row_bytes));
              std::memset(pad + row_bytes, 0, kRowSlack);
              row = pad;
            }
            hpass(row, xt.start.data(), xt.w.data(), xt.taps, xt.stride, ow, spec_.bgr,
                  hbuf + (iy - r0) * row_floats, ld);
          }
          done = std::max<int64_t>(done, yt.start[oy] + yt.taps);
          // Output planes: [N, 3, H, W] or [N, 3, T, H, W].
          float* planes[3];
          for (int p = 0; p < 3; ++p) planes[p] = dst + (((n * 3 + p) * frames_per_clip + t) * oh + oy) * ow;
          vpass(hbuf + (yt.start[oy] - r0) * row_floats, row_floats, yt.w.data() + oy * yt.stride, yt.taps, ow, ld,
                scale_, bias_, planes);
        }
      }
    };
    if (threads == 1) body(0, 1);
    else ctx.pool().run_any(body);
  }

  std::string describe() const override { return symbol_; }

 private:
  // Tables for frames of h x w; kept until the frame size changes (a video
  // stream keeps one size, so a run builds nothing).
  void prepare(int64_t h, int64_t w) {
    geom_ = preprocess_geometry(spec_, h, w, what_);
    const bool aa = spec_.antialias && !spec_.nearest;
    build_axis_table(spec_.nearest, aa, w, geom_.resized_w, geom_.left, geom_.out_w, &xt_);
    build_axis_table(spec_.nearest, aa, h, geom_.resized_h, geom_.top, geom_.out_h, &yt_);
    max_band_rows_ = 0;
    for (int64_t oy0 = 0; oy0 < geom_.out_h; oy0 += kBandRows) {
      const int64_t oy1 = std::min(oy0 + kBandRows, geom_.out_h);
      max_band_rows_ = std::max<int64_t>(max_band_rows_, yt_.start[oy1 - 1] + yt_.taps - yt_.start[oy0]);
    }
    x_lo_ = xt_.start.front();
    x_hi_ = xt_.start.back() + xt_.taps;
    cached_h_ = h;
    cached_w_ = w;
  }

  std::string what_;
  PreprocessSpec spec_;
  std::string symbol_;
  bool simd_;  // a SIMD variant: its loads need kRowSlack bytes past a row
  HPass hpass_, hpass_narrow_;
  Nv12Row nv12_;
  VPass vpass_;
  float scale_[3], bias_[3];
  int64_t cached_h_ = -1, cached_w_ = -1;
  PreprocessGeometry geom_;
  AxisTable xt_, yt_;
  int64_t max_band_rows_ = 0;
  int64_t x_lo_ = 0, x_hi_ = 0;  // input columns the horizontal windows read
};

}  // namespace

std::unique_ptr<Kernel> create_preprocess(const Node& node) {
  // ENGINE_FORCE_REF builds leave the *_avx2.cc files out.
#if !defined(ENGINE_FORCE_REF)
  if (kernel_usable("preprocess_u8_avx512"))
    // Two-tap windows fill half a zmm: there the AVX2 pass is faster
    // (0.93x with AVX-512 at 1080p -> 224, measured).
    return std::make_unique<Preprocess>(node, "preprocess_u8_avx512", hpass_u8_avx512, hpass_u8_avx2,
                                        vpass_f32_avx512, nv12_row_to_rgb_avx2);
  if (kernel_usable("preprocess_u8_avx2"))
    return std::make_unique<Preprocess>(node, "preprocess_u8_avx2", hpass_u8_avx2, hpass_u8_avx2, vpass_f32_avx2,
                                        nv12_row_to_rgb_avx2);
#endif
  return std::make_unique<Preprocess>(node, "preprocess_u8_ref", hpass_u8_ref, hpass_u8_ref, vpass_f32_ref,
                                      nv12_row_to_rgb_ref);
}

}  // namespace preprocess

void register_preprocess_kernels(KernelRegistry& r) {
  r.add(OpKind::kPreprocess, KernelInfo{preprocess::create_preprocess, false});
}

}  // namespace engine
