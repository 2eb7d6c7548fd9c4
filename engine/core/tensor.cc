#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "core/checked_math.h"
#include "core/error.h"

namespace engine {

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s)
    if (!checked_mul(n, d, &n)) fail(ErrorKind::kShape, "shape ", shape_str(s), " has more than 2**63 elements");
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) os << ",";
    if (s[i] < 0) os << "?"; else os << s[i];
  }
  os << "]";
  return os.str();
}

std::shared_ptr<void> aligned_storage(size_t bytes) {
  // Round up so the allocation is a whole number of alignment units and SIMD
  // kernels may read a little past the last element of small tensors.
  // A user can ask for too much (a huge batch): that is a ShapeError, not a
  // bug; sizes near SIZE_MAX must not wrap into a small allocation.
  if (bytes > SIZE_MAX - 2 * kTensorAlignment)
    fail(ErrorKind::kShape, "cannot allocate ", bytes, " bytes: the size does not fit in memory");
  size_t size = (bytes + kTensorAlignment) / kTensorAlignment * kTensorAlignment;
  // Large buffers (activation arena, scratch, packed weights) start on a 2 MB
  // boundary and ask Linux for transparent huge pages: the GEMM tiles read
  // and write a dozen rows a plane apart, and with 4 KB pages each of them
  // costs a TLB entry (measured: ResNet-50's conv body at batch 8 on one
  // thread, 2% less CPU time). Where THP is "madvise" (the common default)
  // this is the only way to get them; elsewhere madvise is a no-op.
  constexpr size_t kHugePage = size_t{2} << 20;
  const bool huge = size >= kHugePage;
  if (huge) size = (size + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(huge ? kHugePage : kTensorAlignment, size);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p && huge) madvise(p, size, MADV_HUGEPAGE);
#endif
  if (!p) fail(ErrorKind::kShape, "out of memory allocating ", bytes, " bytes");
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

Tensor::Tensor(DType dtype, Shape shape)
    : dtype_(dtype), shape_(std::move(shape)) {
  for (int64_t d : shape_)
    ENGINE_ENFORCE(d >= 0, kShape, "cannot allocate a tensor of shape ", shape_str(shape_));
  check_tensor_size(shape_, dtype_, "allocating a tensor");
  numel_ = shape_numel(shape_);
  holder_ = aligned_storage(nbytes());
  data_ = holder_.get();
}

Tensor Tensor::borrow(DType dtype, Shape shape, void* data, std::shared_ptr<void> holder) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.numel_ = shape_numel(t.shape_);
  t.holder_ = std::move(holder);
  t.data_ = data;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t(dtype_, shape_);
  if (nbytes()) std::memcpy(t.data_, data_, nbytes());
  return t;
}

Tensor Tensor::reshaped(Shape shape) const {
  ENGINE_CHECK(shape_numel(shape) == numel_, "reshape ", shape_str(shape_), " to ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

int64_t Tensor::int_at(int64_t i) const {
  switch (dtype_) {
    case DType::kInt64: return data<int64_t>()[i];
    case DType::kInt32: return data<int32_t>()[i];
    case DType::kInt16: return data<int16_t>()[i];
    case DType::kInt8: return data<int8_t>()[i];
    case DType::kUInt64: return static_cast<int64_t>(data<uint64_t>()[i]);
    case DType::kUInt32: return data<uint32_t>()[i];
    case DType::kUInt16: return data<uint16_t>()[i];
    case DType::kUInt8: return data<uint8_t>()[i];
    case DType::kBool: return data<bool>()[i] ? 1 : 0;
    case DType::kFloat32: return static_cast<int64_t>(data<float>()[i]);
    case DType::kFloat64: return static_cast<int64_t>(data<double>()[i]);
    case DType::kFloat16: return static_cast<int64_t>(half_to_float(data<uint16_t>()[i]));
    default: fail(ErrorKind::kInternal, "int_at on undefined tensor");
  }
}

double Tensor::float_at(int64_t i) const {
  switch (dtype_) {
    case DType::kFloat32: return data<float>()[i];
    case DType::kFloat64: return data<double>()[i];
    case DType::kFloat16: return half_to_float(data<uint16_t>()[i]);
    default: return static_cast<double>(int_at(i));
  }
}

std::vector<int64_t> Tensor::to_int_vector() const {
  std::vector<int64_t> v(static_cast<size_t>(numel_));
  for (int64_t i = 0; i < numel_; ++i) v[i] = int_at(i);
  return v;
}

float half_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do { mant <<= 1; ++e; } while (!(mant & 0x400));
      mant &= 0x3ff;
      bits = sign | ((127 - 15 - e) << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow to inf
  if (absx < 0x38800000u) {  // subnormal or zero in half
    if (absx < 0x33000000u) return static_cast<uint16_t>(sign);
    uint32_t e = absx >> 23;
    uint32_t m = (absx & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e;  // 14 + (113 - e)
    uint32_t half_m = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half_m & 1))) ++half_m;
    return static_cast<uint16_t>(sign | half_m);
  }
  uint32_t h = ((absx - 0x38000000u) >> 13);
  uint32_t rem = absx & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(sign | h);
}

}  // namespace engine
