// pyengine: the C++ API for embedding the CPU runtime without Python.
//
// A plan file written by Python (`pyengine.build(model).save("m.plan")`) is
// loaded here and run on caller-owned buffers:
//
//   #include <pyengine/engine.h>
//   pyengine::Engine engine = pyengine::Engine::load("m.plan", {/*num_threads=*/2});
//   const pyengine::TensorSpec& in = engine.inputs()[0];      // name, dtype, shape (-1: dynamic)
//   std::vector<float> x(...);                                // batch 4, filled by the caller
//   pyengine::ConstTensorView xv{in.dtype, {4, 3, 224, 224}, x.data(), x.size() * sizeof(float)};
//   std::vector<pyengine::Shape> shapes = engine.output_shapes({xv});
//   std::vector<float> y(pyengine::numel(shapes[0]));
//   engine.run({xv}, {{engine.outputs()[0].dtype, shapes[0], y.data(), y.size() * sizeof(float)}});
//
// This header needs only the C++ standard library (C++14 or later); link
// with the installed CMake package:
//   find_package(pyengine REQUIRED)
//   target_link_libraries(app PRIVATE pyengine::pyengine)
//
// Ownership: an Engine owns its weights and memory; TensorViews never own
// their memory, and the engine keeps no pointer to a view after run()
// returns. Tensors (from the allocating run()) own theirs.
//
// Thread-safety: an Engine may be used from several threads at once.
// run() and output_shapes() calls on one Engine are serialized (one
// activation arena per engine; a call waits for the one in progress), and
// each run uses the engine's own thread pool (num_threads). For parallel
// streams, load one Engine per stream. Specs, metadata and the other const
// accessors never change after load and need no locking. Engine::load is
// safe to call from several threads.
//
// Errors: every failure throws a pyengine::Error subclass with a message
// naming the file, input or output at fault. The subclasses are the kinds
// of Python's pyengine.errors: PlanFormatError, ShapeError, DTypeError,
// InvalidArgumentError, InvalidModelError, UnsupportedOperatorError,
// BackendUnavailableError and InternalError (a bug in pyengine). Running out
// of memory is a ShapeError, as in Python. Nothing else is thrown.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "pyengine/export.h"

namespace pyengine {

// Element types; the numeric codes are ONNX's TensorProto.DataType codes
// (and the C API's pyengine_dtype values).
enum class DType : int32_t {
  kUndefined = 0,
  kFloat32 = 1,
  kUInt8 = 2,
  kInt8 = 3,
  kUInt16 = 4,
  kInt16 = 5,
  kInt32 = 6,
  kInt64 = 7,
  kBool = 9,
  kFloat16 = 10,
  kFloat64 = 11,
  kUInt32 = 12,
  kUInt64 = 13,
};

PYENGINE_API std::size_t dtype_size(DType dtype);  // bytes per element; 0 for kUndefined
PYENGINE_API const char* dtype_name(DType dtype);  // "float32", "uint8", ... (numpy's names)

using Shape = std::vector<int64_t>;

// Elements in a shape (1 for a scalar). Throws ShapeError for a negative dim
// or an element count that overflows int64.
PYENGINE_API int64_t numel(const Shape& shape);
PYENGINE_API std::string shape_str(const Shape& shape);  // "[1,3,224,224]", -1 as "?"

// ---------------------------------------------------------------------------
// Errors (see the header comment).

enum class ErrorKind {
  kInvalidModel,
  kUnsupportedOperator,
  kShape,
  kDType,
  kPlanFormat,
  kInvalidArgument,
  kBackendUnavailable,
  kInternal,
};

class PYENGINE_API Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message);
  ~Error() override;
  ErrorKind kind() const noexcept { return kind_; }
  // The Python class name of this kind: "ShapeError", "PlanFormatError", ...
  const char* kind_name() const noexcept;

 private:
  ErrorKind kind_;
};

#define PYENGINE_DECLARE_ERROR(Name, Kind)                                \
  class PYENGINE_API Name : public Error {                                \
   public:                                                                \
    explicit Name(const std::string& message) : Error(Kind, message) {}   \
    ~Name() override;                                                     \
  };
// The model file is missing, unreadable or malformed.
PYENGINE_DECLARE_ERROR(InvalidModelError, ErrorKind::kInvalidModel)
// The model uses operators (or variants of them) pyengine cannot run.
PYENGINE_DECLARE_ERROR(UnsupportedOperatorError, ErrorKind::kUnsupportedOperator)
// An input or output buffer has the wrong shape or size; out of memory.
PYENGINE_DECLARE_ERROR(ShapeError, ErrorKind::kShape)
// An input or output buffer has the wrong element type.
PYENGINE_DECLARE_ERROR(DTypeError, ErrorKind::kDType)
// A plan file (or buffer) is corrupt, truncated, or from an incompatible version.
PYENGINE_DECLARE_ERROR(PlanFormatError, ErrorKind::kPlanFormat)
// Bad API usage: wrong number of buffers, unknown name, null pointer, bad option.
PYENGINE_DECLARE_ERROR(InvalidArgumentError, ErrorKind::kInvalidArgument)
// The plan is for a backend this runtime does not run (a TensorRT plan).
PYENGINE_DECLARE_ERROR(BackendUnavailableError, ErrorKind::kBackendUnavailable)
// A broken invariant inside pyengine: a bug, please report the message.
PYENGINE_DECLARE_ERROR(InternalError, ErrorKind::kInternal)
#undef PYENGINE_DECLARE_ERROR

// ---------------------------------------------------------------------------
// Tensors.

// An input or output of an engine. Dynamic dims (the batch axis) are -1.
struct TensorSpec {
  std::string name;
  DType dtype = DType::kUndefined;
  Shape shape;
  bool has_shape = true;  // false: not even the rank is known (shape is empty)
};

// Caller-owned memory seen as a dense, row-major tensor. `nbytes` is the
// size of the buffer at `data`; it must equal numel(shape) * dtype_size(dtype)
// (checked: ShapeError). `data` must be aligned to the element size.
struct TensorView {
  DType dtype = DType::kFloat32;
  Shape shape;
  void* data = nullptr;
  std::size_t nbytes = 0;
};

// As TensorView, for inputs: read in place, never written.
struct ConstTensorView {
  DType dtype = DType::kFloat32;
  Shape shape;
  const void* data = nullptr;
  std::size_t nbytes = 0;

  ConstTensorView() = default;
  ConstTensorView(DType dtype_, Shape shape_, const void* data_, std::size_t nbytes_)
      : dtype(dtype_), shape(std::move(shape_)), data(data_), nbytes(nbytes_) {}
  ConstTensorView(const TensorView& v)  // NOLINT: implicit, a view is readable
      : dtype(v.dtype), shape(v.shape), data(v.data), nbytes(v.nbytes) {}
};

// A tensor that owns its (64-byte aligned) storage; copies share it.
class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, Shape shape, std::shared_ptr<void> storage, void* data)
      : dtype_(dtype), shape_(std::move(shape)), storage_(std::move(storage)), data_(data) {}

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t numel() const { return pyengine::numel(shape_); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  void* data() { return data_; }
  const void* data() const { return data_; }
  template <typename T> T* data_as() { return static_cast<T*>(data_); }
  template <typename T> const T* data_as() const { return static_cast<const T*>(data_); }
  TensorView view() { return TensorView{dtype_, shape_, data_, nbytes()}; }
  ConstTensorView view() const { return ConstTensorView(dtype_, shape_, data_, nbytes()); }

 private:
  DType dtype_ = DType::kUndefined;
  Shape shape_;
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
};

// Allocates an uninitialized, 64-byte aligned tensor (e.g. an input to fill).
PYENGINE_API Tensor allocate_tensor(DType dtype, const Shape& shape);

// ---------------------------------------------------------------------------
// The engine.

struct EngineOptions {
  // Threads of the engine's pool; 0: PYENGINE_NUM_THREADS when set, else one
  // per physical core the process may run on, within its cgroup CPU quota
  // (see default_threads in engine/cpu/thread_pool.h). Results are
  // bitwise reproducible for a given thread count (and ISA tier).
  int num_threads = 0;
  // Bytes one run may allocate (activation arena, plus outputs for the
  // allocating run()); a run that needs more throws ShapeError before
  // allocating. 0: no limit. Same as Python's engine.memory_limit.
  int64_t memory_limit = 0;
};

class PYENGINE_API Engine {
 public:
  // Loads a CPU plan file. Throws PlanFormatError naming the file when it is
  // missing, corrupt, truncated or from another format version;
  // BackendUnavailableError for a TensorRT plan.
  static Engine load(const std::string& path, const EngineOptions& options = EngineOptions());
  // Loads a plan from memory (copied: the buffer may be freed after this
  // returns). `source` names the buffer in error messages.
  static Engine load_from_memory(const void* data, std::size_t size, const EngineOptions& options = EngineOptions(),
                                 const std::string& source = "<memory>");

  // Movable, not copyable; a moved-from Engine may only be destroyed or
  // assigned to.
  Engine(Engine&&) noexcept;
  Engine& operator=(Engine&&) noexcept;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  ~Engine();

  const std::vector<TensorSpec>& inputs() const;
  const std::vector<TensorSpec>& outputs() const;
  // Index of the input / output called `name`; InvalidArgumentError if none.
  std::size_t input_index(const std::string& name) const;
  std::size_t output_index(const std::string& name) const;
  // The plan's metadata (JSON text: precision, backend, versions, passes).
  const std::string& metadata_json() const;
  int num_threads() const;
  void set_memory_limit(int64_t bytes);  // 0: no limit

  // The shapes of the outputs for these inputs (in the order of outputs()).
  // Only inputs that the model reads as values (shape tensors) are read;
  // the others need only dtype and shape (data may be null).
  std::vector<Shape> output_shapes(const std::vector<ConstTensorView>& inputs);

  // Runs on caller-owned buffers without copying: inputs (in the order of
  // inputs()) are read in place, output i is written into outputs[i], whose
  // dtype and shape must be exactly those output_shapes() gives (checked:
  // DTypeError / ShapeError naming the output). Buffers must not overlap
  // (InvalidArgumentError).
  void run(const std::vector<ConstTensorView>& inputs, const std::vector<TensorView>& outputs);
  // As above, allocating the outputs (no copy: the engine writes into them).
  std::vector<Tensor> run(const std::vector<ConstTensorView>& inputs);

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// pyengine's version ("0.1.0").
PYENGINE_API const char* version();

}  // namespace pyengine
