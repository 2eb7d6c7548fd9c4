/* c_app: runs a pyengine plan through the C API on a raw input file and
 * writes the outputs, raw, to a file (all outputs, in order).
 *
 *   c_app model.plan input.raw output.raw [num_threads]
 *
 * The input file holds the model's single input in its dtype, row-major,
 * native byte order; its size sets the dynamic (batch) dim. The buffer is
 * handed to the engine as read, so the engine checks its size against the
 * shape. Exit status: 0 ok, 2 usage or I/O error, otherwise the
 * pyengine_status of the failing call (5: the plan, 3: the input's size or
 * shape, ...), with pyengine_last_error() on stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pyengine/pyengine_c.h>

#define MAX_RANK 8

static void* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  void* data;
  long n;
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    return NULL;
  }
  /* malloc's alignment suits every element type. */
  data = malloc(n > 0 ? (size_t)n : 1);
  if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
    free(data);
    data = NULL;
  }
  fclose(f);
  *size = (size_t)n;
  return data;
}

static int report(pyengine_status status, const char* what) {
  fprintf(stderr, "%s failed: %s: %s\n", what, pyengine_status_name(status), pyengine_last_error());
  return (int)status;
}

int main(int argc, char** argv) {
  pyengine_engine* engine = NULL;
  pyengine_spec in_spec, out_spec;
  pyengine_status st;
  int64_t in_dims[MAX_RANK];
  size_t in_bytes = 0, sample_bytes, i, n_out;
  void* in_data;
  void** out_data;
  int64_t(*out_dims)[MAX_RANK];
  pyengine_tensor input;
  pyengine_tensor* outputs;
  FILE* out;
  int32_t d, rc = 0;

  if (argc < 4) {
    fprintf(stderr, "usage: %s model.plan input.raw output.raw [num_threads]\n", argv[0]);
    return 2;
  }
  st = pyengine_engine_load(argv[1], argc > 4 ? atoi(argv[4]) : 0, &engine);
  if (st != PYENGINE_OK) return report(st, "pyengine_engine_load");
  if (pyengine_engine_num_inputs(engine) != 1 || pyengine_engine_input(engine, 0, &in_spec) != PYENGINE_OK ||
      in_spec.rank < 0 || in_spec.rank > MAX_RANK) {
    fprintf(stderr, "this sample runs single-input models of known rank\n");
    pyengine_engine_free(engine);
    return 2;
  }
  in_data = read_file(argv[2], &in_bytes);
  if (!in_data) {
    fprintf(stderr, "cannot read '%s'\n", argv[2]);
    pyengine_engine_free(engine);
    return 2;
  }
  /* Dynamic dims (-1) take the batch the file's size implies. */
  sample_bytes = pyengine_dtype_size(in_spec.dtype);
  for (d = 0; d < in_spec.rank; ++d)
    if (in_spec.shape[d] >= 0) sample_bytes *= (size_t)in_spec.shape[d];
  for (d = 0; d < in_spec.rank; ++d)
    in_dims[d] = in_spec.shape[d] >= 0 ? in_spec.shape[d] : (int64_t)(sample_bytes ? in_bytes / sample_bytes : 0);
  input.dtype = in_spec.dtype;
  input.rank = in_spec.rank;
  input.shape = in_dims;
  input.data = in_data;
  input.nbytes = in_bytes;
  printf("input  %s %s batch %lld\n", in_spec.name, pyengine_dtype_name(in_spec.dtype),
         (long long)(in_spec.rank > 0 ? in_dims[0] : 1));

  /* Caller-owned output buffers, sized with pyengine_engine_output_shape. */
  n_out = pyengine_engine_num_outputs(engine);
  outputs = calloc(n_out, sizeof *outputs);
  out_data = calloc(n_out, sizeof *out_data);
  out_dims = calloc(n_out, sizeof *out_dims);
  for (i = 0; i < n_out && rc == 0; ++i) {
    int32_t rank = 0;
    size_t bytes;
    pyengine_engine_output(engine, i, &out_spec);
    st = pyengine_engine_output_shape(engine, &input, 1, i, out_dims[i], MAX_RANK, &rank);
    if (st != PYENGINE_OK) {
      rc = report(st, "pyengine_engine_output_shape");
      break;
    }
    bytes = pyengine_dtype_size(out_spec.dtype);
    for (d = 0; d < rank; ++d) bytes *= (size_t)out_dims[i][d];
    out_data[i] = malloc(bytes ? bytes : 1);
    outputs[i].dtype = out_spec.dtype;
    outputs[i].rank = rank;
    outputs[i].shape = out_dims[i];
    outputs[i].data = out_data[i];
    outputs[i].nbytes = bytes;
  }
  if (rc == 0) {
    st = pyengine_engine_run(engine, &input, 1, outputs, n_out);
    if (st != PYENGINE_OK) rc = report(st, "pyengine_engine_run");
  }
  if (rc == 0) {
    out = fopen(argv[3], "wb");
    for (i = 0; out && i < n_out; ++i) {
      pyengine_engine_output(engine, i, &out_spec);
      fwrite(out_data[i], 1, outputs[i].nbytes, out);
      printf("output %s %s, %lu bytes\n", out_spec.name, pyengine_dtype_name(out_spec.dtype),
             (unsigned long)outputs[i].nbytes);
    }
    if (!out || fclose(out) != 0) {
      fprintf(stderr, "cannot write '%s'\n", argv[3]);
      rc = 2;
    }
  }
  for (i = 0; i < n_out; ++i) free(out_data[i]);
  free(out_data);
  free(out_dims);
  free(outputs);
  free(in_data);
  pyengine_engine_free(engine);
  return rc;
}
