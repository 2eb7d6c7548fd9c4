// Concat and Split along one axis.
//
//   Concat: y[o, :] = [x_0[o, :] | x_1[o, :] | ...]    o over dims before axis
//   Split:  the inverse, x[o, :] cut into y_0[o, :], y_1[o, :], ...
// Each "row" o of the joined tensor is the concatenation of one contiguous
// chunk per part (dims from `axis` on), so both are plain memcpys. For the
// pool, the joined tensor's bytes are cut into equal ranges and each range is
// mapped back to (row, part, offset): DenseNet's channel concat at batch 1
// has a single row of a few large chunks, and this still splits it evenly
// across threads. Works for every dtype by element size.
#include <algorithm>
#include <cstring>

#include "cpu/kernels/shape_ops/shape_ops.h"

namespace engine {
namespace shape_ops {
namespace {

// The bytes of the joined tensor: `rows` rows of `row_bytes`, part p holding
// [prefix[p], prefix[p+1]) of each row; part p's own storage is row-major
// with chunk[p] = prefix[p+1] - prefix[p] bytes per row.
struct Joined {
  char* const* parts;      // one pointer per part (mutable for Split)
  const int64_t* prefix;   // n + 1 entries
  int n;
  int64_t rows, row_bytes;
};

// Copies joined bytes [lo, hi) to or from the parts.
void copy_range(const Joined& j, char* joined, int64_t lo, int64_t hi, bool to_joined) {
  int64_t row = lo / j.row_bytes, off = lo % j.row_bytes;
  int p = static_cast<int>(std::upper_bound(j.prefix, j.prefix + j.n + 1, off) - j.prefix) - 1;
  while (lo < hi) {
    while (j.prefix[p + 1] <= off) ++p;  // skip empty parts
    const int64_t chunk = j.prefix[p + 1] - j.prefix[p];
    const int64_t in_part = off - j.prefix[p];
    const int64_t len = std::min(hi - lo, chunk - in_part);
    char* part = j.parts[p] + row * chunk + in_part;
    if (to_joined) std::memcpy(joined + lo, part, static_cast<size_t>(len));
    else std::memcpy(part, joined + lo, static_cast<size_t>(len));
    lo += len;
    off += len;
    if (off == j.row_bytes) {
      off = 0;
      p = 0;
      ++row;
    }
  }
}

void run_joined(KernelContext& ctx, const Joined& j, char* joined, bool to_joined) {
  const int64_t total = j.rows * j.row_bytes;
  if (total == 0) return;
  if (static_cast<size_t>(total) < kParallelBytes || ctx.pool().num_threads() <= 1) {
    copy_range(j, joined, 0, total, to_joined);
    return;
  }
  constexpr int64_t kBlock = 32 * 1024;
  const int64_t blocks = (total + kBlock - 1) / kBlock;
  ctx.pool().parallel_for(blocks, [&](int64_t b, int64_t e) {
    copy_range(j, joined, b * kBlock, std::min(total, e * kBlock), to_joined);
  });
}

// Fills prefix/parts for the tensors `ts` joined along `axis` of `rank`.
template <typename TensorPtr>
Joined describe_parts(const std::vector<TensorPtr>& ts, const Shape& joined_shape, int64_t axis,
                      std::vector<char*>& parts, std::vector<int64_t>& prefix) {
  const size_t esize = dtype_size(ts.front()->dtype());
  int64_t rows = 1;
  for (int64_t d = 0; d < axis; ++d) rows *= joined_shape[d];
  parts.clear();
  prefix.assign(1, 0);
  for (const auto& t : ts) {
    int64_t chunk = static_cast<int64_t>(esize);
    for (int64_t d = axis; d < t->rank(); ++d) chunk *= t->shape()[d];
    parts.push_back(const_cast<char*>(static_cast<const char*>(t->raw())));
    prefix.push_back(prefix.back() + chunk);
  }
  return Joined{parts.data(), prefix.data(), static_cast<int>(ts.size()), rows, prefix.back()};
}

class Concat final : public Kernel {
 public:
  explicit Concat(const Node& node) : axis_(node.attr_int("axis", 0)) {}
  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    inputs_.clear();
    for (const Tensor* t : in)
      if (t) inputs_.push_back(t);
    const int64_t r = out[0]->rank();
    const int64_t axis = axis_ < 0 ? axis_ + r : axis_;
    Joined j = describe_parts(inputs_, out[0]->shape(), axis, parts_, prefix_);
    if (j.row_bytes == 0) return;
    run_joined(ctx, j, static_cast<char*>(out[0]->raw()), true);
  }
  std::string describe() const override { return "concat_memcpy"; }

 private:
  int64_t axis_;
  std::vector<const Tensor*> inputs_;
  std::vector<char*> parts_;
  std::vector<int64_t> prefix_;
};

class Split final : public Kernel {
 public:
  explicit Split(const Node& node) : axis_(node.attr_int("axis", 0)) {}
  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const int64_t r = in[0]->rank();
    const int64_t axis = axis_ < 0 ? axis_ + r : axis_;
    Joined j = describe_parts(out, in[0]->shape(), axis, parts_, prefix_);
    if (j.row_bytes == 0) return;
    run_joined(ctx, j, const_cast<char*>(static_cast<const char*>(in[0]->raw())), false);
  }
  std::string describe() const override { return "split_memcpy"; }

 private:
  int64_t axis_;
  std::vector<char*> parts_;
  std::vector<int64_t> prefix_;
};

}  // namespace

std::unique_ptr<Kernel> create_concat(const Node& node) {
  if (!node.has_attr("axis")) fail(ErrorKind::kInvalidModel, node.describe(), ": the 'axis' attribute is required");
  return std::make_unique<Concat>(node);
}

std::unique_ptr<Kernel> create_split(const Node& node) {
  for (int i = 0; i < node.num_outputs(); ++i)
    if (!node.output(i))
      fail(ErrorKind::kUnsupportedOperator, node.describe(), ": omitted Split outputs are not supported");
  return std::make_unique<Split>(node);
}

}  // namespace shape_ops
}  // namespace engine
