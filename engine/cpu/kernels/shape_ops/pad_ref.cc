// Pad: y[o] = x[m_0(o_0), ..., m_k(o_k)], where per axis
//   m(o) = o - pad_begin                        inside the input,
//   otherwise by mode: constant -> the constant value (no source),
//   edge -> clamp, reflect -> mirror without repeating the edge, wrap -> mod.
// Pads may be negative (cropping). pads come as an input (opset >= 11, with
// optional axes since 18) or as an attribute (older), the constant as input
// or as the 'value' attribute.
// Each output row (last axis) is: a left border done element by element,
// one memcpy of the interior, a right border; rows whose source falls in the
// constant region are filled. The per-axis maps are built once per run.
// Works for every dtype by element size; rank 1 to kMaxRank.
#include <algorithm>
#include <cstring>

#include "cpu/kernels/shape_ops/shape_ops.h"

namespace engine {
namespace shape_ops {
namespace {

enum class PadMode { kConstant, kReflect, kEdge, kWrap };

// Writes v converted to dtype t (for the old float 'value' attribute).
void scalar_as(double v, DType t, unsigned char* out) {
  switch (t) {
    case DType::kFloat32: { float f = static_cast<float>(v); std::memcpy(out, &f, 4); break; }
    case DType::kFloat64: std::memcpy(out, &v, 8); break;
    case DType::kFloat16: { uint16_t h = float_to_half(static_cast<float>(v)); std::memcpy(out, &h, 2); break; }
    case DType::kInt8: { int8_t x = static_cast<int8_t>(v); std::memcpy(out, &x, 1); break; }
    case DType::kUInt8: { uint8_t x = static_cast<uint8_t>(v); std::memcpy(out, &x, 1); break; }
    case DType::kBool: { uint8_t x = v != 0; std::memcpy(out, &x, 1); break; }
    case DType::kInt16: { int16_t x = static_cast<int16_t>(v); std::memcpy(out, &x, 2); break; }
    case DType::kUInt16: { uint16_t x = static_cast<uint16_t>(v); std::memcpy(out, &x, 2); break; }
    case DType::kInt32: { int32_t x = static_cast<int32_t>(v); std::memcpy(out, &x, 4); break; }
    case DType::kUInt32: { uint32_t x = static_cast<uint32_t>(v); std::memcpy(out, &x, 4); break; }
    case DType::kInt64: { int64_t x = static_cast<int64_t>(v); std::memcpy(out, &x, 8); break; }
    case DType::kUInt64: { uint64_t x = static_cast<uint64_t>(v); std::memcpy(out, &x, 8); break; }
    default: std::memset(out, 0, 8);
  }
}

int64_t source_index(int64_t o, int64_t pad_begin, int64_t d, PadMode mode) {
  int64_t i = o - pad_begin;
  if (i >= 0 && i < d) return i;
  switch (mode) {
    case PadMode::kConstant: return -1;
    case PadMode::kEdge: return i < 0 ? 0 : d - 1;
    case PadMode::kWrap: return ((i % d) + d) % d;
    case PadMode::kReflect: {
      if (d == 1) return 0;
      const int64_t period = 2 * (d - 1);
      i = ((i % period) + period) % period;
      return i < d ? i : period - i;
    }
  }
  return -1;
}

class Pad final : public Kernel {
 public:
  Pad(const Node& node, PadMode mode)
      : what_(node.describe()),
        mode_(mode),
        from_inputs_(node.num_inputs() > 1),
        pads_(node.attr_ints("pads")),
        value_attr_(node.attr_float("value", 0.f)) {}

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    const int r = x.rank();
    check_rank(what_, r);
    const size_t esize = dtype_size(x.dtype());
    const int64_t es = static_cast<int64_t>(esize);
    if (y.numel() == 0) return;
    if (r == 0) {
      std::memcpy(y.raw(), x.raw(), esize);
      return;
    }
    if (from_inputs_) {
      pads_.clear();
      for (int64_t i = 0; i < in[1]->numel(); ++i) pads_.push_back(in[1]->int_at(i));
    }
    int64_t pb[kMaxRank] = {}, axes[kMaxRank];
    int n = r;
    if (in.size() > 3 && in[3]) {
      n = static_cast<int>(in[3]->numel());
      ENGINE_ENFORCE(n <= r, kInvalidModel, what_, ": too many axes");
      for (int i = 0; i < n; ++i) {
        int64_t a = in[3]->int_at(i);
        axes[i] = a < 0 ? a + r : a;
      }
    } else {
      for (int i = 0; i < r; ++i) axes[i] = i;
    }
    ENGINE_ENFORCE(static_cast<int>(pads_.size()) == 2 * n, kInvalidModel, what_, ": pads has ", pads_.size(),
                   " entries, expected ", 2 * n);
    for (int i = 0; i < n; ++i) pb[axes[i]] = pads_[i];

    alignas(8) unsigned char cval[8] = {};
    if (mode_ == PadMode::kConstant) {
      if (from_inputs_ && in.size() > 2 && in[2] && in[2]->numel() > 0) {
        ENGINE_ENFORCE(in[2]->dtype() == x.dtype(), kInvalidModel, what_, ": constant_value must have the data's type");
        std::memcpy(cval, in[2]->raw(), esize);
      } else {
        scalar_as(value_attr_, x.dtype(), cval);
      }
    }

    // Per-axis maps from output to input index (-1: constant).
    map_offset_[0] = 0;
    for (int a = 0; a < r; ++a) map_offset_[a + 1] = map_offset_[a] + y.shape()[a];
    maps_.resize(static_cast<size_t>(map_offset_[r]));
    for (int a = 0; a < r; ++a) {
      const int64_t d = x.shape()[a];
      ENGINE_ENFORCE(d > 0 || mode_ == PadMode::kConstant, kInvalidArgument, what_,
                     ": cannot pad an empty axis in this mode");
      for (int64_t o = 0; o < y.shape()[a]; ++o) maps_[map_offset_[a] + o] = source_index(o, pb[a], d, mode_);
    }
    int64_t in_stride[kMaxRank];
    in_stride[r - 1] = 1;
    for (int a = r - 2; a >= 0; --a) in_stride[a] = in_stride[a + 1] * x.shape()[a + 1];

    const int64_t w = y.shape()[r - 1], dw = x.shape()[r - 1];
    const int64_t begin_out = std::max<int64_t>(pb[r - 1], 0), src_begin = std::max<int64_t>(-pb[r - 1], 0);
    const int64_t cnt = std::max<int64_t>(0, std::min(dw - src_begin, w - begin_out));
    const int64_t rows = y.numel() / w;
    const int64_t* lmap = maps_.data() + map_offset_[r - 1];
    const auto* src = static_cast<const char*>(x.raw());
    auto* dst = static_cast<char*>(y.raw());
    const Shape& ys = y.shape();
    auto body = [&](int64_t begin, int64_t end) {
      int64_t idx[kMaxRank];
      int64_t rem = begin;
      for (int a = r - 2; a >= 0; --a) {
        idx[a] = rem % ys[a];
        rem /= ys[a];
      }
      for (int64_t row = begin; row < end; ++row) {
        char* d = dst + row * w * es;
        int64_t off = 0;
        bool constant_row = false;
        for (int a = 0; a < r - 1 && !constant_row; ++a) {
          const int64_t m = maps_[map_offset_[a] + idx[a]];
          if (m < 0) constant_row = true;
          off += m * in_stride[a];
        }
        if (constant_row) {
          fill_elements(d, w, cval, esize);
        } else {
          const char* s = src + off * es;
          auto border = [&](int64_t lo, int64_t hi) {
            for (int64_t o = lo; o < hi; ++o) {
              const int64_t m = lmap[o];
              std::memcpy(d + o * es, m < 0 ? static_cast<const void*>(cval) : s + m * es, esize);
            }
          };
          border(0, begin_out);
          if (cnt > 0) std::memcpy(d + begin_out * es, s + src_begin * es, static_cast<size_t>(cnt * es));
          border(begin_out + cnt, w);
        }
        for (int a = r - 2; a >= 0; --a) {
          if (++idx[a] < ys[a]) break;
          idx[a] = 0;
        }
      }
    };
    if (y.nbytes() < kParallelBytes) body(0, rows);
    else ctx.pool().parallel_for(rows, body);
  }
  std::string describe() const override { return "pad_rows"; }

 private:
  std::string what_;
  PadMode mode_;
  bool from_inputs_;
  std::vector<int64_t> pads_;
  float value_attr_;
  std::vector<int64_t> maps_;
  int64_t map_offset_[kMaxRank + 1] = {};
};

}  // namespace

std::unique_ptr<Kernel> create_pad(const Node& node) {
  std::string mode = node.attr_string("mode", "constant");
  PadMode m;
  if (mode == "constant") m = PadMode::kConstant;
  else if (mode == "reflect") m = PadMode::kReflect;
  else if (mode == "edge") m = PadMode::kEdge;
  else if (mode == "wrap") m = PadMode::kWrap;
  else fail(ErrorKind::kUnsupportedOperator, node.describe(), ": mode '", mode, "' is not supported");
  return std::make_unique<Pad>(node, m);
}

}  // namespace shape_ops
}  // namespace engine
