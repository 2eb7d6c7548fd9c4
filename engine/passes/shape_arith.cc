#include "passes/shape_arith.h"

#include <algorithm>

#include "passes/util.h"

namespace engine {
namespace {

// Shape vectors are short; anything longer is data, not a shape.
constexpr size_t kMaxElems = 64;
constexpr int kMaxDepth = 32;

// Evaluation budget per query: residual graphs are DAGs with many paths, so
// an unbounded walk through Add/Mul could take exponential time.
thread_local int g_budget = 0;

std::optional<SymTensor> eval(const Value* v, int depth);

std::optional<std::vector<int64_t>> const_ints(const Value* v) {
  auto iv = int_values(v);
  if (!iv || iv->size() > kMaxElems) return std::nullopt;
  return iv;
}

// Axes of Squeeze/Unsqueeze: input 1 (opset 13+) or attribute (older).
std::optional<std::vector<int64_t>> axes_of(const Node& n) {
  if (n.num_inputs() > 1 && n.input(1)) return const_ints(n.input(1));
  return n.attr_ints("axes");
}

SymDim combine(OpKind k, const SymDim& a, const SymDim& b) {
  if (!a.is_known() || !b.is_known()) return SymDim();
  switch (k) {
    case OpKind::kAdd: return SymDim::known(a.value + b.value);
    case OpKind::kSub: return SymDim::known(a.value - b.value);
    case OpKind::kMul: return SymDim::known(a.value * b.value);
    case OpKind::kDiv: {
      if (b.value == 0) return SymDim();
      // ONNX integer Div truncates toward zero, like C++.
      return SymDim::known(a.value / b.value);
    }
    default: return SymDim();
  }
}

std::optional<SymTensor> eval_node(const Node& n, const Value* out, int depth) {
  switch (n.kind()) {
    case OpKind::kShape: {
      const Value* x = n.input(0);
      if (!x || !x->has_shape() || out != n.output(0)) return std::nullopt;
      int64_t r = static_cast<int64_t>(x->shape().size());
      int64_t start = n.attr_int("start", 0), end = n.attr_int("end", r);
      if (start < 0) start += r;
      if (end < 0) end += r;
      start = std::clamp<int64_t>(start, 0, r);
      end = std::clamp<int64_t>(end, 0, r);
      SymTensor t;
      for (int64_t a = start; a < end; ++a) {
        int64_t d = x->shape()[a];
        t.elems.push_back(d >= 0 ? SymDim::known(d) : SymDim::dim_of(x, a));
      }
      return t;
    }
    case OpKind::kIdentity:
      return eval(n.input(0), depth + 1);
    case OpKind::kCast: {
      auto to = static_cast<DType>(n.attr_int("to", 0));
      if (to != DType::kInt64 && to != DType::kInt32) return std::nullopt;
      return eval(n.input(0), depth + 1);
    }
    case OpKind::kGather: {
      if (n.attr_int("axis", 0) != 0) return std::nullopt;
      auto data = eval(n.input(0), depth + 1);
      auto idx = const_ints(n.input(1));
      if (!data || data->scalar || !idx) return std::nullopt;
      SymTensor t;
      t.scalar = n.input(1)->shape().empty();
      int64_t len = static_cast<int64_t>(data->elems.size());
      for (int64_t i : *idx) {
        if (i < 0) i += len;
        if (i < 0 || i >= len) return std::nullopt;
        t.elems.push_back(data->elems[i]);
      }
      return t;
    }
    case OpKind::kUnsqueeze: {
      auto data = eval(n.input(0), depth + 1);
      auto axes = axes_of(n);
      if (!data || !data->scalar || !axes || axes->size() != 1 || ((*axes)[0] != 0 && (*axes)[0] != -1))
        return std::nullopt;
      data->scalar = false;
      return data;
    }
    case OpKind::kSqueeze: {
      auto data = eval(n.input(0), depth + 1);
      auto axes = axes_of(n);
      if (!data || data->scalar || data->elems.size() != 1 || !axes) return std::nullopt;
      if (!(axes->empty() || (axes->size() == 1 && ((*axes)[0] == 0 || (*axes)[0] == -1)))) return std::nullopt;
      data->scalar = true;
      return data;
    }
    case OpKind::kConcat: {
      SymTensor t;
      for (const Value* in : n.inputs()) {
        if (!in) continue;
        auto part = eval(in, depth + 1);
        if (!part || part->scalar) return std::nullopt;
        t.elems.insert(t.elems.end(), part->elems.begin(), part->elems.end());
      }
      if (t.elems.size() > kMaxElems) return std::nullopt;
      return t;
    }
    case OpKind::kSlice: {
      auto data = eval(n.input(0), depth + 1);
      if (!data || data->scalar || n.num_inputs() < 3) return std::nullopt;
      auto starts = const_ints(n.input(1)), ends = const_ints(n.input(2));
      if (!starts || !ends || starts->size() != 1 || ends->size() != 1) return std::nullopt;
      if (n.num_inputs() > 3 && n.input(3)) {
        auto axes = const_ints(n.input(3));
        if (!axes || axes->size() != 1 || ((*axes)[0] != 0 && (*axes)[0] != -1)) return std::nullopt;
      }
      int64_t step = 1;
      if (n.num_inputs() > 4 && n.input(4)) {
        auto steps = const_ints(n.input(4));
        if (!steps || steps->size() != 1) return std::nullopt;
        step = (*steps)[0];
      }
      if (step != 1) return std::nullopt;
      int64_t len = static_cast<int64_t>(data->elems.size());
      int64_t s = (*starts)[0], e = (*ends)[0];
      if (s < 0) s += len;
      if (e < 0) e += len;
      s = std::clamp<int64_t>(s, 0, len);
      e = std::clamp<int64_t>(e, 0, len);
      SymTensor t;
      for (int64_t i = s; i < e; ++i) t.elems.push_back(data->elems[i]);
      return t;
    }
    case OpKind::kAdd:
    case OpKind::kSub:
    case OpKind::kMul:
    case OpKind::kDiv: {
      auto a = eval(n.input(0), depth + 1), b = eval(n.input(1), depth + 1);
      if (!a || !b) return std::nullopt;
      size_t na = a->elems.size(), nb = b->elems.size();
      if (na != nb && na != 1 && nb != 1) return std::nullopt;
      SymTensor t;
      t.scalar = a->scalar && b->scalar;
      for (size_t i = 0; i < std::max(na, nb); ++i)
        t.elems.push_back(combine(n.kind(), a->elems[na == 1 ? 0 : i], b->elems[nb == 1 ? 0 : i]));
      return t;
    }
    default:
      return std::nullopt;
  }
}

std::optional<SymTensor> eval(const Value* v, int depth) {
  if (!v || depth > kMaxDepth || --g_budget < 0) return std::nullopt;
  if (dtype_is_float(v->dtype()) || v->dtype() == DType::kBool) return std::nullopt;
  if (v->is_constant()) {
    const Tensor& c = *v->constant();
    if (c.rank() > 1 || !dtype_is_integer(c.dtype())) return std::nullopt;
    auto iv = const_ints(v);
    if (!iv) return std::nullopt;
    SymTensor t;
    t.scalar = c.rank() == 0;
    for (int64_t x : *iv) t.elems.push_back(SymDim::known(x));
    return t;
  }
  const Node* p = v->producer();
  if (!p) return std::nullopt;
  return eval_node(*p, v, depth);
}

}  // namespace

bool SymTensor::all_known() const {
  for (const SymDim& d : elems)
    if (!d.is_known()) return false;
  return true;
}

std::optional<SymTensor> symbolic_value(const Value* v) {
  g_budget = 256;
  return eval(v, 0);
}

}  // namespace engine
