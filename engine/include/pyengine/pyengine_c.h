/* pyengine C API: run pyengine CPU plans from C, GStreamer, FFmpeg or Rust.
 *
 * A thin layer over the C++ API (pyengine/engine.h); this header is C99 and
 * needs only <stddef.h> and <stdint.h>. Link with the CMake package
 * (find_package(pyengine) + pyengine::pyengine) or with -lpyengine.
 *
 *   pyengine_engine* e = NULL;
 *   if (pyengine_engine_load("m.plan", 2, &e) != PYENGINE_OK) {
 *     fprintf(stderr, "%s\n", pyengine_last_error());
 *     return 1;
 *   }
 *   int64_t xshape[4] = {1, 3, 224, 224};
 *   pyengine_tensor x = {PYENGINE_FLOAT32, 4, xshape, xdata, sizeof xdata};
 *   int64_t yshape[8]; int32_t yrank;
 *   pyengine_engine_output_shape(e, &x, 1, 0, yshape, 8, &yrank);
 *   pyengine_tensor y = {PYENGINE_FLOAT32, yrank, yshape, ydata, ybytes};
 *   pyengine_engine_run(e, &x, 1, &y, 1);
 *   pyengine_engine_free(e);
 *
 * Status codes: every function that can fail returns a pyengine_status;
 * PYENGINE_OK is 0, and each error kind of Python's pyengine.errors has its
 * own code. The message of the last failure on the calling thread is kept
 * in thread-local storage (pyengine_last_error()). No C++ exception crosses
 * this boundary.
 *
 * Ownership: a pyengine_engine is created by pyengine_engine_load* and
 * released by pyengine_engine_free. Tensor buffers are the caller's: inputs
 * are read in place, outputs written in place, and no pointer is kept after
 * a call returns. Spec strings and shapes belong to the engine and stay
 * valid until it is freed.
 *
 * Thread-safety: one engine may be used from several threads at once;
 * pyengine_engine_run and pyengine_engine_output_shape calls on one engine
 * are serialized (one activation arena per engine), each run using the
 * engine's thread pool. For parallel streams, load one engine per stream.
 */
#ifndef PYENGINE_C_H_
#define PYENGINE_C_H_

#include <stddef.h>
#include <stdint.h>

#include "pyengine/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One code per error kind (the Python class in parentheses). */
typedef enum pyengine_status {
  PYENGINE_OK = 0,
  PYENGINE_ERROR_INVALID_MODEL = 1,         /* InvalidModelError */
  PYENGINE_ERROR_UNSUPPORTED_OPERATOR = 2,  /* UnsupportedOperatorError */
  PYENGINE_ERROR_SHAPE = 3,                 /* ShapeError: wrong shape or buffer size; out of memory */
  PYENGINE_ERROR_DTYPE = 4,                 /* DTypeError */
  PYENGINE_ERROR_PLAN_FORMAT = 5,           /* PlanFormatError: missing, corrupt or incompatible plan */
  PYENGINE_ERROR_INVALID_ARGUMENT = 6,      /* InvalidArgumentError: NULL pointer, bad index, bad count */
  PYENGINE_ERROR_BACKEND_UNAVAILABLE = 7,   /* BackendUnavailableError: a TensorRT plan */
  PYENGINE_ERROR_INTERNAL = 8               /* InternalError: a bug in pyengine */
} pyengine_status;

/* Element types: ONNX TensorProto.DataType codes, as in the C++ API. */
typedef enum pyengine_dtype {
  PYENGINE_UNDEFINED = 0,
  PYENGINE_FLOAT32 = 1,
  PYENGINE_UINT8 = 2,
  PYENGINE_INT8 = 3,
  PYENGINE_UINT16 = 4,
  PYENGINE_INT16 = 5,
  PYENGINE_INT32 = 6,
  PYENGINE_INT64 = 7,
  PYENGINE_BOOL = 9,
  PYENGINE_FLOAT16 = 10,
  PYENGINE_FLOAT64 = 11,
  PYENGINE_UINT32 = 12,
  PYENGINE_UINT64 = 13
} pyengine_dtype;

/* An opaque engine handle. */
typedef struct pyengine_engine pyengine_engine;

/* A caller-owned dense, row-major buffer. `nbytes` must equal the product
 * of the dims times the element size (checked: PYENGINE_ERROR_SHAPE), and
 * `data` must be aligned to the element size. `dtype` is a pyengine_dtype. */
typedef struct pyengine_tensor {
  int32_t dtype;
  int32_t rank;
  const int64_t* shape;
  void* data;
  size_t nbytes;
} pyengine_tensor;

/* An input or output of an engine; owned by the engine. Dynamic dims (the
 * batch axis) are -1; rank is -1 when not even the rank is known. */
typedef struct pyengine_spec {
  const char* name;
  int32_t dtype;
  int32_t rank;
  const int64_t* shape;
} pyengine_spec;

/* The message of the calling thread's last failure ("" if none). Valid
 * until the next pyengine call on this thread. */
PYENGINE_API const char* pyengine_last_error(void);
/* "PYENGINE_OK", "PYENGINE_ERROR_SHAPE", ... */
PYENGINE_API const char* pyengine_status_name(pyengine_status status);
PYENGINE_API const char* pyengine_version(void);
/* Bytes per element of a pyengine_dtype (0 if unknown); its numpy name. */
PYENGINE_API size_t pyengine_dtype_size(int32_t dtype);
PYENGINE_API const char* pyengine_dtype_name(int32_t dtype);

/* Loads a CPU plan file written by pyengine (Python: engine.save(path)).
 * num_threads: 0 = one per hardware thread. On failure *engine is NULL. */
PYENGINE_API pyengine_status pyengine_engine_load(const char* path, int num_threads, pyengine_engine** engine);
/* Loads a plan from memory; the bytes are copied, so the buffer may be
 * freed after this returns. */
PYENGINE_API pyengine_status pyengine_engine_load_memory(const void* data, size_t size, int num_threads,
                                                         pyengine_engine** engine);
/* Releases an engine (NULL is ignored). */
PYENGINE_API void pyengine_engine_free(pyengine_engine* engine);

PYENGINE_API size_t pyengine_engine_num_inputs(const pyengine_engine* engine);
PYENGINE_API size_t pyengine_engine_num_outputs(const pyengine_engine* engine);
PYENGINE_API pyengine_status pyengine_engine_input(const pyengine_engine* engine, size_t index, pyengine_spec* spec);
PYENGINE_API pyengine_status pyengine_engine_output(const pyengine_engine* engine, size_t index, pyengine_spec* spec);
PYENGINE_API int pyengine_engine_num_threads(const pyengine_engine* engine);

/* The shape of output `index` for these inputs: writes its dims to
 * dims[0..*rank) (max_rank entries available). Inputs' data may be NULL
 * unless the model reads that input as a value (a shape tensor). */
PYENGINE_API pyengine_status pyengine_engine_output_shape(pyengine_engine* engine, const pyengine_tensor* inputs,
                                                          size_t num_inputs, size_t index, int64_t* dims,
                                                          int32_t max_rank, int32_t* rank);

/* Runs on caller-owned buffers without copying: inputs in the order of the
 * engine's inputs, read in place; output i is written into outputs[i],
 * whose dtype and shape must be exactly the output's for these inputs
 * (pyengine_engine_output_shape). Buffers must not overlap. */
PYENGINE_API pyengine_status pyengine_engine_run(pyengine_engine* engine, const pyengine_tensor* inputs,
                                                 size_t num_inputs, const pyengine_tensor* outputs,
                                                 size_t num_outputs);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif /* PYENGINE_C_H_ */
