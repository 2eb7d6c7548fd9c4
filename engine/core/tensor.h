// Tensor: a dtype, a shape and a pointer to contiguous row-major storage.
//
// Storage is shared (std::shared_ptr<void> keeps it alive): copying a Tensor
// copies the handle, not the data. A tensor either owns a 64-byte aligned
// allocation, or borrows memory kept alive by an opaque holder (a numpy array
// handed in from Python, a slice of the executor's arena, a mapped plan file).
// Thread-safety: a Tensor is a value type; concurrent readers are fine.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace engine {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);   // product of dims; 1 for a scalar
std::string shape_str(const Shape& s); // "[1,3,224,224]", -1 printed as "?"

constexpr size_t kTensorAlignment = 64;

// Aligned, uninitialized storage of `bytes` bytes (at least one cache line).
std::shared_ptr<void> aligned_storage(size_t bytes);

class Tensor {
 public:
  Tensor() = default;
  // Allocates aligned, uninitialized storage.
  Tensor(DType dtype, Shape shape);
  // Borrows `data`; `holder` keeps it alive (may be null for memory that
  // outlives the tensor, e.g. the executor's arena during a run).
  static Tensor borrow(DType dtype, Shape shape, void* data, std::shared_ptr<void> holder);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  bool defined() const { return dtype_ != DType::kUndefined; }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <typename T> T* data() { return static_cast<T*>(data_); }
  template <typename T> const T* data() const { return static_cast<const T*>(data_); }
  const std::shared_ptr<void>& holder() const { return holder_; }

  // A deep copy in fresh owned storage.
  Tensor clone() const;
  // Same storage, new shape of equal element count.
  Tensor reshaped(Shape shape) const;
  // Reads element i (any numeric dtype) as int64 / double; for shape tensors
  // and attributes-as-inputs (Reshape's shape, Slice's starts, ...).
  int64_t int_at(int64_t i) const;
  double float_at(int64_t i) const;
  std::vector<int64_t> to_int_vector() const;

 private:
  DType dtype_ = DType::kUndefined;
  Shape shape_;
  int64_t numel_ = 0;
  std::shared_ptr<void> holder_;
  void* data_ = nullptr;
};

// fp16 <-> fp32 conversion (IEEE binary16, round to nearest even).
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);

}  // namespace engine
