// pyengine::Engine (include/pyengine/engine.h): plan -> CPU executor, for
// C++ embedders. This file is the boundary between the public types and the
// internal ones: views become borrowed engine::Tensors (no copy), and every
// internal exception leaves as a pyengine::Error of the matching kind (the
// same mapping as bindings/module.cc uses for Python).
#include "pyengine/engine.h"

#include <cstring>
#include <new>

#include "core/checked_math.h"
#include "core/error.h"
#include "core/tensor.h"
#include "cpu/executor.h"
#include "plan/plan.h"

#ifndef PYENGINE_VERSION_STRING
#define PYENGINE_VERSION_STRING "unknown"
#endif

namespace pyengine {

// The public codes are the internal (ONNX) ones.
static_assert(static_cast<int>(DType::kFloat32) == static_cast<int>(engine::DType::kFloat32), "dtype codes");
static_assert(static_cast<int>(DType::kFloat16) == static_cast<int>(engine::DType::kFloat16), "dtype codes");
static_assert(static_cast<int>(DType::kUInt64) == static_cast<int>(engine::DType::kUInt64), "dtype codes");

Error::Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
Error::~Error() = default;  // the key function: typeinfo and vtable live in libpyengine
InvalidModelError::~InvalidModelError() = default;
UnsupportedOperatorError::~UnsupportedOperatorError() = default;
ShapeError::~ShapeError() = default;
DTypeError::~DTypeError() = default;
PlanFormatError::~PlanFormatError() = default;
InvalidArgumentError::~InvalidArgumentError() = default;
BackendUnavailableError::~BackendUnavailableError() = default;
InternalError::~InternalError() = default;

const char* Error::kind_name() const noexcept {
  switch (kind_) {
    case ErrorKind::kInvalidModel: return "InvalidModelError";
    case ErrorKind::kUnsupportedOperator: return "UnsupportedOperatorError";
    case ErrorKind::kShape: return "ShapeError";
    case ErrorKind::kDType: return "DTypeError";
    case ErrorKind::kPlanFormat: return "PlanFormatError";
    case ErrorKind::kInvalidArgument: return "InvalidArgumentError";
    case ErrorKind::kBackendUnavailable: return "BackendUnavailableError";
    case ErrorKind::kInternal: return "InternalError";
  }
  return "Error";
}

namespace {

[[noreturn]] void throw_error(ErrorKind kind, const std::string& msg) {
  switch (kind) {
    case ErrorKind::kInvalidModel: throw InvalidModelError(msg);
    case ErrorKind::kUnsupportedOperator: throw UnsupportedOperatorError(msg);
    case ErrorKind::kShape: throw ShapeError(msg);
    case ErrorKind::kDType: throw DTypeError(msg);
    case ErrorKind::kPlanFormat: throw PlanFormatError(msg);
    case ErrorKind::kInvalidArgument: throw InvalidArgumentError(msg);
    case ErrorKind::kBackendUnavailable: throw BackendUnavailableError(msg);
    case ErrorKind::kInternal: break;
  }
  throw InternalError(msg);
}

ErrorKind public_kind(engine::ErrorKind k) {
  switch (k) {
    case engine::ErrorKind::kInvalidModel: return ErrorKind::kInvalidModel;
    case engine::ErrorKind::kUnsupportedOperator: return ErrorKind::kUnsupportedOperator;
    case engine::ErrorKind::kShape: return ErrorKind::kShape;
    case engine::ErrorKind::kDType: return ErrorKind::kDType;
    case engine::ErrorKind::kPlanFormat: return ErrorKind::kPlanFormat;
    case engine::ErrorKind::kInvalidArgument: return ErrorKind::kInvalidArgument;
    case engine::ErrorKind::kInternal: return ErrorKind::kInternal;
  }
  return ErrorKind::kInternal;
}

// Called in a catch block: rethrows the exception in flight as a public
// pyengine::Error. Out of memory is a ShapeError, as in Python (a user can
// ask for a batch that does not fit).
[[noreturn]] void rethrow_public() {
  try {
    throw;
  } catch (const Error&) {
    throw;
  } catch (const engine::Error& e) {
    throw_error(public_kind(e.kind()), e.what());
  } catch (const std::bad_alloc&) {
    throw ShapeError("pyengine: out of memory (a tensor or buffer of this model does not fit)");
  } catch (const std::length_error& e) {
    throw ShapeError(std::string("pyengine: a size does not fit in memory (") + e.what() + ")");
  } catch (const std::exception& e) {
    throw InternalError(std::string("pyengine: unexpected error: ") + e.what());
  } catch (...) {
    throw InternalError("pyengine: unexpected non-standard exception");
  }
}

#define PYENGINE_GUARD_BEGIN try {
#define PYENGINE_GUARD_END \
  }                        \
  catch (...) {            \
    rethrow_public();      \
  }

// The top-level "backend" string of the plan's metadata JSON ("cpu" when
// absent). Metadata is written by Python's json.dumps; nested objects may
// hold their own "backend" keys, so only depth 1 counts.
std::string metadata_backend(const std::string& json) {
  int depth = 0;
  std::string last_string;
  bool in_string = false, want_value = false;
  std::string cur;
  for (size_t i = 0; i < json.size(); ++i) {
    char c = json[i];
    if (in_string) {
      if (c == '\\' && i + 1 < json.size()) {
        cur += json[++i];
      } else if (c == '"') {
        in_string = false;
        if (want_value) return cur;
        last_string = cur;
      } else {
        cur += c;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
      cur.clear();
    } else if (c == '{' || c == '[') {
      ++depth;
      want_value = false;
    } else if (c == '}' || c == ']') {
      --depth;
    } else if (c == ':') {
      want_value = depth == 1 && last_string == "backend";
    } else if (c == ',') {
      want_value = false;
      last_string.clear();
    } else if (want_value && c != ' ' && c != '\n' && c != '\t' && c != '\r') {
      want_value = false;  // a non-string value: not a backend we know
    }
  }
  return "cpu";
}

Shape to_public(const engine::Shape& s) { return Shape(s.begin(), s.end()); }

}  // namespace

// ---------------------------------------------------------------------------

std::size_t dtype_size(DType dtype) { return engine::dtype_size(static_cast<engine::DType>(dtype)); }

const char* dtype_name(DType dtype) {
  if (!engine::dtype_is_valid(static_cast<int32_t>(dtype))) return "undefined";
  return engine::dtype_name(static_cast<engine::DType>(dtype));
}

int64_t numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw ShapeError("shape " + shape_str(shape) + " has a negative or unknown dim");
    if (!engine::checked_mul(n, d, &n)) throw ShapeError("shape " + shape_str(shape) + ": element count overflows");
  }
  return n;
}

std::string shape_str(const Shape& shape) { return engine::shape_str(engine::Shape(shape.begin(), shape.end())); }

Tensor allocate_tensor(DType dtype, const Shape& shape) {
  PYENGINE_GUARD_BEGIN
  if (dtype_size(dtype) == 0)
    throw DTypeError(std::string("allocate_tensor: dtype code ") + std::to_string(static_cast<int>(dtype)) +
                     " is not a pyengine dtype");
  engine::Tensor t(static_cast<engine::DType>(dtype), engine::Shape(shape.begin(), shape.end()));
  return Tensor(dtype, shape, t.holder(), t.raw());
  PYENGINE_GUARD_END
}

const char* version() { return PYENGINE_VERSION_STRING; }

// ---------------------------------------------------------------------------

struct Engine::Impl {
  std::shared_ptr<engine::Executor> executor;
  std::vector<TensorSpec> inputs, outputs;
  std::string metadata;
  std::string source;

  // A view as a borrowed engine::Tensor, after checking what the executor
  // cannot: the dtype code, the buffer size against the shape, alignment.
  // The executor then checks dtype and shape against the model.
  // `shape_only`: output_shapes() of an input read only for its shape.
  static engine::Tensor borrow(DType dtype, const Shape& shape, const void* data, std::size_t nbytes,
                               const std::string& what, bool shape_only = false) {
    if (dtype_size(dtype) == 0)
      throw DTypeError(what + ": dtype code " + std::to_string(static_cast<int>(dtype)) + " is not a pyengine dtype");
    for (int64_t d : shape)
      if (d < 0) throw ShapeError(what + ": shape " + shape_str(shape) + " has a negative dim");
    const engine::Shape s(shape.begin(), shape.end());
    const int64_t need = engine::checked_nbytes(s, static_cast<engine::DType>(dtype));
    if (need < 0) throw ShapeError(what + ": a " + shape_str(shape) + " tensor does not fit in memory");
    if (shape_only && data == nullptr)
      return engine::Tensor::borrow(static_cast<engine::DType>(dtype), s, nullptr, nullptr);
    if (static_cast<uint64_t>(need) != nbytes)
      throw ShapeError(what + ": the buffer holds " + std::to_string(nbytes) + " bytes, but a " + dtype_name(dtype) +
                       " tensor of shape " + shape_str(shape) + " needs " + std::to_string(need));
    if (data == nullptr && need > 0) throw InvalidArgumentError(what + ": the buffer is null");
    if (reinterpret_cast<uintptr_t>(data) % dtype_size(dtype) != 0)
      throw InvalidArgumentError(what + ": the buffer is not aligned to its " + std::to_string(dtype_size(dtype)) +
                                 "-byte elements");
    // The executor reads inputs through const pointers only.
    return engine::Tensor::borrow(static_cast<engine::DType>(dtype), s, const_cast<void*>(data), nullptr);
  }

  static std::unique_ptr<Impl> create(engine::PlanContents c, const std::string& source,
                                      const EngineOptions& options) {
    if (options.num_threads < 0)
      throw InvalidArgumentError("num_threads must be >= 0 (0: one per physical core), got " +
                                 std::to_string(options.num_threads));
    if (options.memory_limit < 0)
      throw InvalidArgumentError("memory_limit must be >= 0 (0: no limit), got " + std::to_string(options.memory_limit));
    // CPU plans only, as pyengine.load decides: a TensorRT plan is run by the
    // Python backend; anything else is not a plan this version can run.
    const std::string backend = metadata_backend(c.metadata_json);
    if (backend == "tensorrt")
      throw BackendUnavailableError("'" + source + "' is a TensorRT plan; the C++ runtime runs CPU plans");
    if (backend != "cpu" || !c.engine_blob.empty())
      throw PlanFormatError("plan '" + source + "' is for backend '" + backend + "', which this pyengine cannot run");
    auto impl = std::unique_ptr<Impl>(new Impl());
    impl->metadata = std::move(c.metadata_json);
    impl->source = source;
    std::shared_ptr<const engine::Graph> g(std::move(c.graph));
    for (auto* v : g->inputs())
      impl->inputs.push_back({v->name(), static_cast<DType>(v->dtype()), to_public(v->shape()), v->has_shape()});
    for (auto* v : g->outputs())
      impl->outputs.push_back({v->name(), static_cast<DType>(v->dtype()), to_public(v->shape()), v->has_shape()});
    engine::ExecutorOptions opts;
    opts.num_threads = options.num_threads;
    opts.memory_limit = options.memory_limit;
    try {
      impl->executor = std::make_shared<engine::Executor>(g, opts);
    } catch (const engine::Error& err) {
      // The reader validated the graph; a plan whose graph still cannot be
      // compiled was edited or corrupted (format.md: a PlanFormatError).
      if (err.kind() == engine::ErrorKind::kPlanFormat) throw;
      throw PlanFormatError("plan '" + source + "' holds a graph that cannot be compiled: " + err.what());
    }
    impl->executor->set_memory_limit(options.memory_limit);
    return impl;
  }

  std::string input_what(size_t i) const { return "input '" + inputs[i].name + "'"; }
  std::string output_what(size_t i) const { return "output '" + outputs[i].name + "'"; }

  std::vector<engine::Tensor> borrow_inputs(const std::vector<ConstTensorView>& views, bool shape_only) const {
    if (views.size() != inputs.size()) {
      std::string names;
      for (const TensorSpec& s : inputs) names += (names.empty() ? "'" : ", '") + s.name + "'";
      throw InvalidArgumentError("the model has " + std::to_string(inputs.size()) + " inputs (" + names + "), but " +
                                 std::to_string(views.size()) + " were given");
    }
    std::vector<engine::Tensor> out;
    out.reserve(views.size());
    for (size_t i = 0; i < views.size(); ++i) {
      const ConstTensorView& v = views[i];
      out.push_back(borrow(v.dtype, v.shape, v.data, v.nbytes, input_what(i),
                           shape_only && !executor->input_is_value(i)));
    }
    return out;
  }
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;
Engine::~Engine() = default;

Engine Engine::load(const std::string& path, const EngineOptions& options) {
  PYENGINE_GUARD_BEGIN
  return Engine(Impl::create(engine::load_plan(path), path, options));
  PYENGINE_GUARD_END
}

Engine Engine::load_from_memory(const void* data, std::size_t size, const EngineOptions& options,
                                const std::string& source) {
  PYENGINE_GUARD_BEGIN
  if (data == nullptr && size > 0) throw InvalidArgumentError("load_from_memory: data is null");
  // Constant tensors borrow from the plan buffer: keep an aligned copy, so
  // weights are 64-byte aligned and the caller may free its buffer.
  std::shared_ptr<void> buf = engine::aligned_storage(size);
  if (size > 0) std::memcpy(buf.get(), data, size);
  return Engine(Impl::create(engine::read_plan(buf, size, source), source, options));
  PYENGINE_GUARD_END
}


const std::vector<TensorSpec>& Engine::inputs() const { return impl_->inputs; }
const std::vector<TensorSpec>& Engine::outputs() const { return impl_->outputs; }
const std::string& Engine::metadata_json() const { return impl_->metadata; }
int Engine::num_threads() const { return impl_->executor->num_threads(); }

void Engine::set_memory_limit(int64_t bytes) {
  if (bytes < 0) throw InvalidArgumentError("memory_limit must be >= 0 (0: no limit), got " + std::to_string(bytes));
  impl_->executor->set_memory_limit(bytes);
}

static std::size_t find_spec(const std::vector<TensorSpec>& specs, const std::string& name, const char* what) {
  for (std::size_t i = 0; i < specs.size(); ++i)
    if (specs[i].name == name) return i;
  std::string names;
  for (const TensorSpec& s : specs) names += (names.empty() ? "'" : ", '") + s.name + "'";
  throw InvalidArgumentError(std::string("the model has no ") + what + " '" + name + "'; its " + what + "s are " +
                             names);
}

std::size_t Engine::input_index(const std::string& name) const { return find_spec(impl_->inputs, name, "input"); }
std::size_t Engine::output_index(const std::string& name) const { return find_spec(impl_->outputs, name, "output"); }

std::vector<Shape> Engine::output_shapes(const std::vector<ConstTensorView>& inputs) {
  PYENGINE_GUARD_BEGIN
  std::vector<engine::Tensor> in = impl_->borrow_inputs(inputs, /*shape_only=*/true);
  std::vector<Shape> shapes;
  for (const engine::Shape& s : impl_->executor->output_shapes(in)) shapes.push_back(to_public(s));
  return shapes;
  PYENGINE_GUARD_END
}

void Engine::run(const std::vector<ConstTensorView>& inputs, const std::vector<TensorView>& outputs) {
  PYENGINE_GUARD_BEGIN
  std::vector<engine::Tensor> in = impl_->borrow_inputs(inputs, /*shape_only=*/false);
  if (outputs.size() != impl_->outputs.size())
    throw InvalidArgumentError("the model has " + std::to_string(impl_->outputs.size()) + " outputs, but " +
                               std::to_string(outputs.size()) + " output buffers were given");
  std::vector<engine::Tensor> out;
  out.reserve(outputs.size());
  for (size_t i = 0; i < outputs.size(); ++i) {
    const TensorView& v = outputs[i];
    out.push_back(Impl::borrow(v.dtype, v.shape, v.data, v.nbytes, impl_->output_what(i)));
  }
  // A kernel writing an output must not clobber an input or another output.
  auto overlap = [](const engine::Tensor& a, const engine::Tensor& b) {
    auto a0 = reinterpret_cast<uintptr_t>(a.raw()), b0 = reinterpret_cast<uintptr_t>(b.raw());
    return a.nbytes() > 0 && b.nbytes() > 0 && a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
  };
  for (size_t i = 0; i < out.size(); ++i) {
    for (size_t j = 0; j < in.size(); ++j)
      if (overlap(out[i], in[j]))
        throw InvalidArgumentError(impl_->output_what(i) + ": the buffer overlaps " + impl_->input_what(j));
    for (size_t j = 0; j < i; ++j)
      if (overlap(out[i], out[j]))
        throw InvalidArgumentError(impl_->output_what(i) + ": the buffer overlaps " + impl_->output_what(j));
  }
  impl_->executor->run_into(in, out);
  PYENGINE_GUARD_END
}

std::vector<Tensor> Engine::run(const std::vector<ConstTensorView>& inputs) {
  PYENGINE_GUARD_BEGIN
  std::vector<engine::Tensor> in = impl_->borrow_inputs(inputs, /*shape_only=*/false);
  std::vector<Tensor> result;
  for (const engine::Tensor& t : impl_->executor->run(in))
    result.emplace_back(static_cast<DType>(t.dtype()), to_public(t.shape()), t.holder(), const_cast<void*>(t.raw()));
  return result;
  PYENGINE_GUARD_END
}

}  // namespace pyengine
