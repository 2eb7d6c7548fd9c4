// The C API (include/pyengine/pyengine_c.h) over the C++ API. Every entry
// point catches everything: an exception becomes a status code and the
// thread's last-error text, never a C++ exception in a C caller's frame.
#include "pyengine/pyengine_c.h"

#include <exception>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "pyengine/engine.h"

struct pyengine_engine {
  pyengine::Engine engine;
  // Spec views for C: names and shapes point into the engine's specs.
  std::vector<pyengine_spec> inputs, outputs;
  explicit pyengine_engine(pyengine::Engine e) : engine(std::move(e)) {}
};

namespace {

thread_local std::string last_error;

pyengine_status status_of(pyengine::ErrorKind kind) {
  switch (kind) {
    case pyengine::ErrorKind::kInvalidModel: return PYENGINE_ERROR_INVALID_MODEL;
    case pyengine::ErrorKind::kUnsupportedOperator: return PYENGINE_ERROR_UNSUPPORTED_OPERATOR;
    case pyengine::ErrorKind::kShape: return PYENGINE_ERROR_SHAPE;
    case pyengine::ErrorKind::kDType: return PYENGINE_ERROR_DTYPE;
    case pyengine::ErrorKind::kPlanFormat: return PYENGINE_ERROR_PLAN_FORMAT;
    case pyengine::ErrorKind::kInvalidArgument: return PYENGINE_ERROR_INVALID_ARGUMENT;
    case pyengine::ErrorKind::kBackendUnavailable: return PYENGINE_ERROR_BACKEND_UNAVAILABLE;
    case pyengine::ErrorKind::kInternal: return PYENGINE_ERROR_INTERNAL;
  }
  return PYENGINE_ERROR_INTERNAL;
}

pyengine_status fail(pyengine_status status, const std::string& message) {
  // Assigning may itself throw bad_alloc; keep the status either way.
  try {
    last_error = message;
  } catch (...) {
    last_error.clear();
  }
  return status;
}

// Runs f (which returns nothing or throws) and turns what it throws into a status.
template <typename F>
pyengine_status guarded(F&& f) {
  try {
    last_error.clear();
    f();
    return PYENGINE_OK;
  } catch (const pyengine::Error& e) {
    return fail(status_of(e.kind()), e.what());
  } catch (const std::bad_alloc&) {
    return fail(PYENGINE_ERROR_SHAPE, "pyengine: out of memory");
  } catch (const std::exception& e) {
    return fail(PYENGINE_ERROR_INTERNAL, std::string("pyengine: unexpected error: ") + e.what());
  } catch (...) {
    return fail(PYENGINE_ERROR_INTERNAL, "pyengine: unexpected non-standard exception");
  }
}

void require(bool ok, const char* message) {
  if (!ok) throw pyengine::InvalidArgumentError(message);
}

std::vector<pyengine_spec> c_specs(const std::vector<pyengine::TensorSpec>& specs) {
  std::vector<pyengine_spec> out;
  for (const pyengine::TensorSpec& s : specs)
    out.push_back({s.name.c_str(), static_cast<int32_t>(s.dtype), s.has_shape ? static_cast<int32_t>(s.shape.size()) : -1,
                   s.shape.data()});
  return out;
}

pyengine_status load(pyengine_engine** engine, pyengine::Engine (*make)(const void*, size_t, const char*, int),
                     const void* data, size_t size, const char* path, int num_threads) {
  return guarded([&] {
    require(engine != nullptr, "the engine out-pointer is NULL");
    *engine = nullptr;
    auto* e = new pyengine_engine(make(data, size, path, num_threads));
    e->inputs = c_specs(e->engine.inputs());
    e->outputs = c_specs(e->engine.outputs());
    *engine = e;
  });
}

std::vector<pyengine::ConstTensorView> views(const pyengine_tensor* tensors, size_t n, const char* what) {
  if (n > 0 && tensors == nullptr) throw pyengine::InvalidArgumentError(std::string(what) + " is NULL");
  std::vector<pyengine::ConstTensorView> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const pyengine_tensor& t = tensors[i];
    if (t.rank < 0 || (t.rank > 0 && t.shape == nullptr))
      throw pyengine::InvalidArgumentError(std::string(what) + "[" + std::to_string(i) +
                                           "]: rank must be >= 0 with a non-NULL shape");
    out.emplace_back(static_cast<pyengine::DType>(t.dtype), pyengine::Shape(t.shape, t.shape + t.rank), t.data,
                     t.nbytes);
  }
  return out;
}

}  // namespace

extern "C" {

const char* pyengine_last_error(void) { return last_error.c_str(); }

const char* pyengine_status_name(pyengine_status status) {
  switch (status) {
    case PYENGINE_OK: return "PYENGINE_OK";
    case PYENGINE_ERROR_INVALID_MODEL: return "PYENGINE_ERROR_INVALID_MODEL";
    case PYENGINE_ERROR_UNSUPPORTED_OPERATOR: return "PYENGINE_ERROR_UNSUPPORTED_OPERATOR";
    case PYENGINE_ERROR_SHAPE: return "PYENGINE_ERROR_SHAPE";
    case PYENGINE_ERROR_DTYPE: return "PYENGINE_ERROR_DTYPE";
    case PYENGINE_ERROR_PLAN_FORMAT: return "PYENGINE_ERROR_PLAN_FORMAT";
    case PYENGINE_ERROR_INVALID_ARGUMENT: return "PYENGINE_ERROR_INVALID_ARGUMENT";
    case PYENGINE_ERROR_BACKEND_UNAVAILABLE: return "PYENGINE_ERROR_BACKEND_UNAVAILABLE";
    case PYENGINE_ERROR_INTERNAL: return "PYENGINE_ERROR_INTERNAL";
  }
  return "PYENGINE_ERROR_UNKNOWN_STATUS";
}

const char* pyengine_version(void) { return pyengine::version(); }

size_t pyengine_dtype_size(int32_t dtype) { return pyengine::dtype_size(static_cast<pyengine::DType>(dtype)); }

const char* pyengine_dtype_name(int32_t dtype) { return pyengine::dtype_name(static_cast<pyengine::DType>(dtype)); }

pyengine_status pyengine_engine_load(const char* path, int num_threads, pyengine_engine** engine) {
  return load(
      engine,
      [](const void*, size_t, const char* p, int threads) {
        require(p != nullptr, "the plan path is NULL");
        pyengine::EngineOptions o;
        o.num_threads = threads;
        return pyengine::Engine::load(p, o);
      },
      nullptr, 0, path, num_threads);
}

pyengine_status pyengine_engine_load_memory(const void* data, size_t size, int num_threads, pyengine_engine** engine) {
  return load(
      engine,
      [](const void* d, size_t n, const char*, int threads) {
        pyengine::EngineOptions o;
        o.num_threads = threads;
        return pyengine::Engine::load_from_memory(d, n, o);
      },
      data, size, nullptr, num_threads);
}

void pyengine_engine_free(pyengine_engine* engine) { delete engine; }

size_t pyengine_engine_num_inputs(const pyengine_engine* engine) { return engine ? engine->inputs.size() : 0; }
size_t pyengine_engine_num_outputs(const pyengine_engine* engine) { return engine ? engine->outputs.size() : 0; }

int pyengine_engine_num_threads(const pyengine_engine* engine) { return engine ? engine->engine.num_threads() : 0; }

static pyengine_status get_spec(const pyengine_engine* engine, size_t index, pyengine_spec* spec, bool input) {
  return guarded([&] {
    require(engine != nullptr && spec != nullptr, "engine or spec is NULL");
    const std::vector<pyengine_spec>& specs = input ? engine->inputs : engine->outputs;
    if (index >= specs.size())
      throw pyengine::InvalidArgumentError(std::string(input ? "input" : "output") + " index " +
                                           std::to_string(index) + " is out of range: the model has " +
                                           std::to_string(specs.size()));
    *spec = specs[index];
  });
}

pyengine_status pyengine_engine_input(const pyengine_engine* engine, size_t index, pyengine_spec* spec) {
  return get_spec(engine, index, spec, true);
}

pyengine_status pyengine_engine_output(const pyengine_engine* engine, size_t index, pyengine_spec* spec) {
  return get_spec(engine, index, spec, false);
}

pyengine_status pyengine_engine_output_shape(pyengine_engine* engine, const pyengine_tensor* inputs, size_t num_inputs,
                                             size_t index, int64_t* dims, int32_t max_rank, int32_t* rank) {
  return guarded([&] {
    require(engine != nullptr && rank != nullptr, "engine or rank is NULL");
    require(index < engine->outputs.size(), "output index is out of range");
    std::vector<pyengine::Shape> shapes = engine->engine.output_shapes(views(inputs, num_inputs, "inputs"));
    const pyengine::Shape& s = shapes[index];
    if (static_cast<int64_t>(s.size()) > max_rank || (!s.empty() && dims == nullptr))
      throw pyengine::InvalidArgumentError("output '" + engine->engine.outputs()[index].name + "' has rank " +
                                           std::to_string(s.size()) + ", more than max_rank " +
                                           std::to_string(max_rank) + " (or dims is NULL)");
    for (size_t i = 0; i < s.size(); ++i) dims[i] = s[i];
    *rank = static_cast<int32_t>(s.size());
  });
}

pyengine_status pyengine_engine_run(pyengine_engine* engine, const pyengine_tensor* inputs, size_t num_inputs,
                                    const pyengine_tensor* outputs, size_t num_outputs) {
  return guarded([&] {
    require(engine != nullptr, "engine is NULL");
    std::vector<pyengine::ConstTensorView> in = views(inputs, num_inputs, "inputs");
    std::vector<pyengine::ConstTensorView> out_c = views(outputs, num_outputs, "outputs");
    std::vector<pyengine::TensorView> out;
    out.reserve(num_outputs);
    for (size_t i = 0; i < num_outputs; ++i)
      out.push_back({out_c[i].dtype, out_c[i].shape, outputs[i].data, out_c[i].nbytes});
    engine->engine.run(in, out);
  });
}

}  // extern "C"
