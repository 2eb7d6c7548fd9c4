// Portable helpers of the conv_gemm family: attribute parsing, conv geometry
// and the packing routines that lay out GEMM operands in panels (used both
// to pre-pack constant weights once in create() and to pack at run time).
//
// Panel layout (see conv_gemm.h): K is cut into blocks of gemm_kc(K); the
// panel of rows [p*MR, p*MR+MR) of block k0 is at k0*Mpad + p*MR*kc, k-major.
// Keeping a whole K block of a panel contiguous lets the micro-kernel stream
// it with unit stride, and blocking K keeps an A panel (kc x 6 floats) in L1
// and a task's packed B block (kc x nc) in L2 (see sgemm_avx2.cc).
#include <cstring>
#include <limits>

#include "cpu/kernels/conv_gemm/conv_gemm.h"

namespace engine {
namespace conv_gemm {

Activation parse_activation(const Node& node) {
  Activation a;
  const std::string name = node.attr_string("activation", "");
  const std::vector<float> p = node.attr_floats("activation_params");
  auto param = [&](size_t i, float def) { return i < p.size() ? p[i] : def; };
  if (name.empty() || name == "None" || name == "Identity") {
    a.kind = Act::kNone;
  } else if (name == "Relu") {
    a.kind = Act::kRelu;
  } else if (name == "Clip") {
    a.kind = Act::kClip;
    a.p0 = param(0, -std::numeric_limits<float>::infinity());
    a.p1 = param(1, std::numeric_limits<float>::infinity());
  } else if (name == "LeakyRelu") {
    a.kind = Act::kLeakyRelu;
    a.p0 = param(0, 0.01f);
  } else if (name == "Sigmoid") {
    a.kind = Act::kSigmoid;
  } else if (name == "HardSwish") {
    a.kind = Act::kHardSwish;
  } else if (name == "SiLU" || name == "Silu" || name == "Swish") {
    a.kind = Act::kSiLU;
  } else if (name == "Gelu") {
    a.kind = Act::kGelu;
  } else if (name == "GeluTanh") {
    a.kind = Act::kGeluTanh;
  } else if (name == "HardSigmoid") {
    a.kind = Act::kHardSigmoid;
    a.p0 = param(0, 0.2f);
    a.p1 = param(1, 0.5f);
  } else {
    fail(ErrorKind::kUnsupportedOperator, node.describe(), ": activation '", name, "' is not supported");
  }
  return a;
}

const char* activation_name(Act a) {
  switch (a) {
    case Act::kNone: return "";
    case Act::kRelu: return "Relu";
    case Act::kClip: return "Clip";
    case Act::kLeakyRelu: return "LeakyRelu";
    case Act::kSigmoid: return "Sigmoid";
    case Act::kHardSwish: return "HardSwish";
    case Act::kSiLU: return "SiLU";
    case Act::kGelu: return "Gelu";
    case Act::kHardSigmoid: return "HardSigmoid";
    case Act::kGeluTanh: return "GeluTanh";
  }
  return "";
}

ConvAttrs ConvAttrs::from_node(const Node& node) {
  ConvAttrs a;
  a.where = node.describe();
  a.group = node.attr_int("group", 1);
  a.kernel = node.attr_ints("kernel_shape");
  a.strides = node.attr_ints("strides");
  a.dilations = node.attr_ints("dilations");
  a.pads = node.attr_ints("pads");
  const std::string ap = node.attr_string("auto_pad", "NOTSET");
  if (ap == "VALID") a.auto_pad = AutoPad::kValid;
  else if (ap == "SAME_UPPER") a.auto_pad = AutoPad::kSameUpper;
  else if (ap == "SAME_LOWER") a.auto_pad = AutoPad::kSameLower;
  else if (ap == "NOTSET" || ap.empty()) a.auto_pad = AutoPad::kNotSet;
  else fail(ErrorKind::kInvalidModel, a.where, ": unknown auto_pad '", ap, "'");
  for (int64_t v : a.strides)
    if (v < 1) fail(ErrorKind::kInvalidModel, a.where, ": strides must be >= 1");
  for (int64_t v : a.dilations)
    if (v < 1) fail(ErrorKind::kInvalidModel, a.where, ": dilations must be >= 1");
  for (int64_t v : a.pads)
    if (v < 0) fail(ErrorKind::kInvalidModel, a.where, ": pads must be >= 0");
  if (a.group < 1) fail(ErrorKind::kInvalidModel, a.where, ": group must be >= 1");
  return a;
}

ConvGeom ConvAttrs::resolve(const Shape& x, const Shape& w, const Shape& y) const {
  const int nsp = static_cast<int>(x.size()) - 2;
  if (nsp < 1 || nsp > 3)
    fail(ErrorKind::kUnsupportedOperator, where, ": only 1-D, 2-D and 3-D convolutions are supported, got input ",
         shape_str(x));
  auto sized = [&](const std::vector<int64_t>& v, size_t n, int64_t def, const char* what) {
    if (v.empty()) return std::vector<int64_t>(n, def);
    if (v.size() != n) fail(ErrorKind::kInvalidModel, where, ": ", what, " must have ", n, " entries");
    return v;
  };
  const std::vector<int64_t> strides = sized(this->strides, nsp, 1, "strides");
  const std::vector<int64_t> dilations = sized(this->dilations, nsp, 1, "dilations");
  const std::vector<int64_t> pads = sized(this->pads, 2 * nsp, 0, "pads");
  ConvGeom g;
  g.batch = x[0];
  g.cin = x[1];
  g.cout = w[0];
  g.group = group;
  if (w.size() != x.size() || g.cin != w[1] * group || g.cout % group != 0)
    fail(ErrorKind::kShape, where, ": X ", shape_str(x), " and W ", shape_str(w), " do not match for group ", group);
  // Spatial axis i of the ONNX op becomes axis (3 - nsp + i) of the 3-D geometry.
  int64_t* in[3] = {&g.id, &g.ih, &g.iw};
  int64_t* out[3] = {&g.od, &g.oh, &g.ow};
  int64_t* ker[3] = {&g.kd, &g.kh, &g.kw};
  int64_t* str[3] = {&g.sd, &g.sh, &g.sw};
  int64_t* dil[3] = {&g.dd, &g.dh, &g.dw};
  int64_t* pad[3] = {&g.pd, &g.ph, &g.pw};
  for (int i = 0; i < nsp; ++i) {
    const int j = 3 - nsp + i;
    *in[j] = x[2 + i];
    *out[j] = y[2 + i];
    *ker[j] = w[2 + i];
    *str[j] = strides[i];
    *dil[j] = dilations[i];
    const int64_t ek = (w[2 + i] - 1) * dilations[i] + 1;
    if (auto_pad == AutoPad::kNotSet) {
      *pad[j] = pads[i];
    } else if (auto_pad == AutoPad::kValid) {
      *pad[j] = 0;
    } else {
      const int64_t total = std::max<int64_t>(0, (y[2 + i] - 1) * strides[i] + ek - x[2 + i]);
      *pad[j] = auto_pad == AutoPad::kSameUpper ? total / 2 : total - total / 2;
    }
  }
  return g;
}

int64_t gemm_kc(int64_t k) {
  // Equal blocks of at most kKcMax: an A panel (6 KB at 256) stays in L1, a
  // B block of kc x 256 columns (256 KB) in L2, and each micro-kernel call
  // runs long enough to amortize its epilogue.
  constexpr int64_t kKcMax = 256;
  const int64_t blocks = (k + kKcMax - 1) / kKcMax;
  return blocks == 0 ? 1 : (k + blocks - 1) / blocks;
}

void pack_a(const float* a, int64_t rs, int64_t cs, int64_t m, int64_t k, float* dst) {
  const int64_t kc_max = gemm_kc(k);
  const int64_t mpad = round_up(m, kMR);
  for (int64_t k0 = 0; k0 < k; k0 += kc_max) {
    const int64_t kc = std::min(kc_max, k - k0);
    for (int64_t p = 0; p * kMR < m; ++p) {
      float* d = dst + k0 * mpad + p * kMR * kc;
      for (int64_t kk = 0; kk < kc; ++kk)
        for (int r = 0; r < kMR; ++r) {
          const int64_t i = p * kMR + r;
          d[kk * kMR + r] = i < m ? a[i * rs + (k0 + kk) * cs] : 0.f;
        }
    }
  }
}

void pack_b(const float* b, int64_t rs, int64_t cs, int64_t k, int64_t n, float* dst) {
  const int64_t kc_max = gemm_kc(k);
  const int64_t npad = round_up(n, kNR);
  for (int64_t k0 = 0; k0 < k; k0 += kc_max) {
    const int64_t kc = std::min(kc_max, k - k0);
    for (int64_t q = 0; q * kNR < n; ++q) {
      float* d = dst + k0 * npad + q * kNR * kc;
      for (int64_t kk = 0; kk < kc; ++kk)
        for (int c = 0; c < kNR; ++c) {
          const int64_t j = q * kNR + c;
          d[kk * kNR + c] = j < n ? b[(k0 + kk) * rs + j * cs] : 0.f;
        }
    }
  }
}

void winograd_pack_weights(const float* w, int64_t m, int64_t c, float* dst) {
  // U = G g G^T with G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
  std::vector<float> u(static_cast<size_t>(16 * m * c));
  for (int64_t mi = 0; mi < m; ++mi)
    for (int64_t ci = 0; ci < c; ++ci) {
      const float* g = w + (mi * c + ci) * 9;
      float t[4][3];  // G g
      for (int j = 0; j < 3; ++j) {
        t[0][j] = g[j];
        t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
        t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
        t[3][j] = g[6 + j];
      }
      for (int r = 0; r < 4; ++r) {
        const float v[4] = {t[r][0], 0.5f * (t[r][0] + t[r][1] + t[r][2]), 0.5f * (t[r][0] - t[r][1] + t[r][2]),
                            t[r][2]};
        for (int s = 0; s < 4; ++s) u[((r * 4 + s) * m + mi) * c + ci] = v[s];
      }
    }
  for (int i = 0; i < 16; ++i) pack_a(u.data() + i * m * c, c, 1, m, c, dst + i * packed_a_size(m, c));
}

void grouped_pack_weights(const float* w, int64_t group, int64_t mg, int64_t cg, int64_t ks, float* dst,
                          int64_t block) {
  const int64_t stride = grouped_group_stride(mg, cg, ks, block);
  std::memset(dst, 0, static_cast<size_t>(stride * group) * sizeof(float));
  for (int64_t grp = 0; grp < group; ++grp)
    for (int64_t m = 0; m < mg; ++m)
      for (int64_t c = 0; c < cg; ++c)
        for (int64_t t = 0; t < ks; ++t)
          dst[grp * stride + (((m / block) * cg + c) * ks + t) * block + m % block] =
              w[((grp * mg + m) * cg + c) * ks + t];
}

namespace {
template <typename T>
void pack_depthwise(const T* w, int64_t channels, int64_t ks, float* dst) {
  constexpr int64_t kBlock = 16;
  std::memset(dst, 0, static_cast<size_t>(depthwise_packed_size(channels, ks)) * sizeof(float));
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t t = 0; t < ks; ++t)
      dst[((c / kBlock) * ks + t) * kBlock + c % kBlock] = static_cast<float>(w[c * ks + t]);
}
}  // namespace

void depthwise_pack_weights(const float* w, int64_t channels, int64_t ks, float* dst) {
  pack_depthwise(w, channels, ks, dst);
}
void depthwise_pack_weights_s8(const int8_t* w, int64_t channels, int64_t ks, float* dst) {
  pack_depthwise(w, channels, ks, dst);
}

}  // namespace conv_gemm
}  // namespace engine
