#include "passes/util.h"

#include <cstring>
#include <limits>

namespace engine {

std::optional<std::vector<float>> float_values(const Value* v) {
  if (!v || !v->is_constant()) return std::nullopt;
  const Tensor& t = *v->constant();
  std::vector<float> out(static_cast<size_t>(t.numel()));
  switch (t.dtype()) {
    case DType::kFloat32:
      if (t.numel()) std::memcpy(out.data(), t.raw(), t.nbytes());
      return out;
    case DType::kFloat64:
      for (int64_t i = 0; i < t.numel(); ++i) out[i] = static_cast<float>(t.data<double>()[i]);
      return out;
    case DType::kFloat16:
      for (int64_t i = 0; i < t.numel(); ++i) out[i] = half_to_float(t.data<uint16_t>()[i]);
      return out;
    default:
      return std::nullopt;
  }
}

std::optional<std::vector<int64_t>> int_values(const Value* v) {
  if (!v || !v->is_constant()) return std::nullopt;
  const Tensor& t = *v->constant();
  if (!dtype_is_integer(t.dtype())) return std::nullopt;
  return t.to_int_vector();
}

bool is_float32_constant(const Value* v) { return v && v->is_constant() && v->dtype() == DType::kFloat32; }

Tensor float_tensor(const Shape& shape, const std::vector<float>& data) {
  Tensor t(DType::kFloat32, shape);
  ENGINE_CHECK(static_cast<size_t>(t.numel()) == data.size(), "float_tensor: ", data.size(), " values for ",
               shape_str(shape));
  if (!data.empty()) std::memcpy(t.raw(), data.data(), t.nbytes());
  return t;
}

Tensor int64_tensor(const Shape& shape, const std::vector<int64_t>& data) {
  Tensor t(DType::kInt64, shape);
  ENGINE_CHECK(static_cast<size_t>(t.numel()) == data.size(), "int64_tensor: size mismatch");
  if (!data.empty()) std::memcpy(t.raw(), data.data(), t.nbytes());
  return t;
}

bool static_shape(const Value* v) {
  if (!v || !v->has_shape()) return false;
  for (int64_t d : v->shape())
    if (d < 0) return false;
  return true;
}

bool same_shape(const Value* a, const Value* b) {
  return a->has_shape() && b->has_shape() && a->shape() == b->shape();
}

std::optional<ConvGeometry> conv_geometry(const Node& conv, std::string* why) {
  ConvGeometry geo;
  const Value* w = conv.input(1);
  if (!w || !w->has_shape() || w->shape().size() < 3) {
    *why = "weight shape unknown";
    return std::nullopt;
  }
  const Shape& ws = w->shape();
  geo.rank = static_cast<int>(ws.size()) - 2;
  geo.out_channels = ws[0];
  geo.in_channels_per_group = ws[1];
  geo.kernel.assign(ws.begin() + 2, ws.end());
  for (int64_t k : geo.kernel)
    if (k < 0) {
      *why = "weight shape unknown";
      return std::nullopt;
    }
  auto ks = conv.attr_ints("kernel_shape");
  if (!ks.empty() && ks != geo.kernel) {
    *why = "kernel_shape attribute disagrees with the weight";
    return std::nullopt;
  }
  geo.strides = conv.attr_ints("strides", std::vector<int64_t>(geo.rank, 1));
  geo.dilations = conv.attr_ints("dilations", std::vector<int64_t>(geo.rank, 1));
  geo.pads = conv.attr_ints("pads", std::vector<int64_t>(2 * geo.rank, 0));
  geo.group = conv.attr_int("group", 1);
  geo.auto_pad = conv.attr_string("auto_pad", "NOTSET");
  if (static_cast<int>(geo.strides.size()) != geo.rank || static_cast<int>(geo.dilations.size()) != geo.rank ||
      static_cast<int>(geo.pads.size()) != 2 * geo.rank) {
    *why = "attribute lengths do not match the kernel rank";
    return std::nullopt;
  }
  if (geo.auto_pad == "VALID") {
    geo.pads.assign(2 * geo.rank, 0);
    geo.auto_pad = "NOTSET";
  } else if (geo.auto_pad != "NOTSET" && !geo.auto_pad.empty()) {
    *why = str_cat("auto_pad=", geo.auto_pad, " (pads depend on the input size)");
    return std::nullopt;
  }
  geo.auto_pad = "NOTSET";
  return geo;
}

Attributes conv_attrs(const ConvGeometry& geo) {
  Attributes a;
  a["kernel_shape"] = Attribute::of_ints(geo.kernel);
  a["strides"] = Attribute::of_ints(geo.strides);
  a["dilations"] = Attribute::of_ints(geo.dilations);
  a["pads"] = Attribute::of_ints(geo.pads);
  a["group"] = Attribute::of_int(geo.group);
  return a;
}

bool activation_keeps_zero(const Node& act) {
  switch (act.kind()) {
    case OpKind::kRelu:
    case OpKind::kLeakyRelu:
    case OpKind::kTanh:
    case OpKind::kHardSwish:
    case OpKind::kGelu:
    case OpKind::kElu:
    case OpKind::kSelu:
    case OpKind::kSoftsign:
    case OpKind::kMish:
    case OpKind::kNeg:
    case OpKind::kAbs:
      return true;
    case OpKind::kClip: {
      float lo = act.attr_float("min", -std::numeric_limits<float>::infinity());
      float hi = act.attr_float("max", std::numeric_limits<float>::infinity());
      if (act.num_inputs() > 1 && act.input(1)) {
        auto v = float_values(act.input(1));
        if (!v || v->size() != 1) return false;
        lo = (*v)[0];
      }
      if (act.num_inputs() > 2 && act.input(2)) {
        auto v = float_values(act.input(2));
        if (!v || v->size() != 1) return false;
        hi = (*v)[0];
      }
      return lo <= 0.f && 0.f <= hi;
    }
    default:
      return false;
  }
}

bool non_negative(const Value* x, int depth) {
  const Node* p = producer_of(x);
  if (!p) return false;
  switch (p->kind()) {
    case OpKind::kMaxPool:
    case OpKind::kGlobalMaxPool:
    case OpKind::kAveragePool:
    case OpKind::kGlobalAveragePool:
      return depth < 8 && non_negative(p->input(0), depth + 1);
    case OpKind::kRelu:
    case OpKind::kSigmoid:
    case OpKind::kHardSigmoid:
    case OpKind::kAbs:
    case OpKind::kSoftplus:
      return true;
    case OpKind::kClip: {
      float lo = p->attr_float("min", -std::numeric_limits<float>::infinity());
      if (p->num_inputs() > 1 && p->input(1)) {
        auto v = float_values(p->input(1));
        if (!v || v->size() != 1) return false;
        lo = (*v)[0];
      }
      return lo >= 0.f;
    }
    case OpKind::kFusedConv:
    case OpKind::kFusedGemm: {
      std::string act = p->attr_string("activation", "");
      if (act == "Relu" || act == "Sigmoid" || act == "HardSigmoid") return true;
      if (act == "Clip") {
        auto params = p->attr_floats("activation_params");
        return !params.empty() && params[0] >= 0.f;
      }
      return false;
    }
    default:
      return false;
  }
}

}  // namespace engine
