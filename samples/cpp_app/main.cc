// cpp_app: runs a pyengine plan on an input read from a .npy file and writes
// the outputs, raw, to a file (all outputs, in order, native byte order).
//
//   cpp_app model.plan input.npy output.raw [num_threads]
//
// The engine reads the input in place and writes each output straight into
// a buffer this program owns (Engine::run with views: no copies).
// Exit status: 0 ok; 3 the plan cannot be loaded (PlanFormatError);
// 4 the input does not fit the model (ShapeError, DTypeError); 1 otherwise.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include <pyengine/engine.h>

namespace {

// A byte buffer aligned for any element type (8 bytes).
struct Buffer {
  std::vector<uint64_t> words;
  std::size_t nbytes = 0;
  explicit Buffer(std::size_t n) : words((n + 7) / 8), nbytes(n) {}
  void* data() { return words.data(); }
};

pyengine::DType dtype_from_descr(const std::string& descr) {
  // Little-endian ('<') or byte-sized ('|') descriptors; '=' is native.
  if (descr.size() < 3 || descr[0] == '>') throw std::runtime_error("unsupported .npy dtype " + descr);
  const std::string t = descr.substr(1);
  if (t == "f4") return pyengine::DType::kFloat32;
  if (t == "f2") return pyengine::DType::kFloat16;
  if (t == "f8") return pyengine::DType::kFloat64;
  if (t == "u1") return pyengine::DType::kUInt8;
  if (t == "i1") return pyengine::DType::kInt8;
  if (t == "u2") return pyengine::DType::kUInt16;
  if (t == "i2") return pyengine::DType::kInt16;
  if (t == "i4") return pyengine::DType::kInt32;
  if (t == "i8") return pyengine::DType::kInt64;
  if (t == "u4") return pyengine::DType::kUInt32;
  if (t == "u8") return pyengine::DType::kUInt64;
  if (t == "b1") return pyengine::DType::kBool;
  throw std::runtime_error("unsupported .npy dtype " + descr);
}

// The value of `key` in a .npy header dict ("{'descr': '<f4', ...}").
std::string header_field(const std::string& header, const std::string& key) {
  std::size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) throw std::runtime_error(".npy header has no '" + key + "'");
  std::size_t v = header.find(':', k);
  std::size_t start = header.find_first_not_of(' ', v + 1);
  std::size_t end = header[start] == '(' ? header.find(')', start) + 1 : header.find_first_of(",}", start);
  return header.substr(start, end - start);
}

// Reads a C-ordered .npy file (format versions 1-3).
Buffer read_npy(const std::string& path, pyengine::DType* dtype, pyengine::Shape* shape) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open '" + path + "'");
  char magic[8];
  if (!f.read(magic, 8) || std::string(magic, 6) != "\x93NUMPY") throw std::runtime_error("'" + path + "' is not a .npy file");
  uint32_t header_len = 0;
  unsigned char len[4] = {0, 0, 0, 0};
  f.read(reinterpret_cast<char*>(len), magic[6] == 1 ? 2 : 4);
  header_len = len[0] | (len[1] << 8) | (static_cast<uint32_t>(len[2]) << 16) | (static_cast<uint32_t>(len[3]) << 24);
  std::string header(header_len, '\0');
  if (!f.read(&header[0], header_len)) throw std::runtime_error("'" + path + "': truncated header");
  std::string descr = header_field(header, "descr");
  *dtype = dtype_from_descr(descr.substr(1, descr.size() - 2));
  if (header_field(header, "fortran_order") != "False") throw std::runtime_error("'" + path + "' is Fortran-ordered");
  shape->clear();
  std::string dims = header_field(header, "shape");  // "(2, 3, 64, 64)" or "(5,)"
  for (std::size_t i = 1; i < dims.size();) {
    std::size_t j = dims.find_first_of(",)", i);
    std::string d = dims.substr(i, j - i);
    if (d.find_first_not_of(' ') != std::string::npos) shape->push_back(std::stoll(d));
    i = j + 1;
  }
  Buffer buf(static_cast<std::size_t>(pyengine::numel(*shape)) * pyengine::dtype_size(*dtype));
  if (!f.read(static_cast<char*>(buf.data()), static_cast<std::streamsize>(buf.nbytes)))
    throw std::runtime_error("'" + path + "': truncated data");
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s model.plan input.npy output.raw [num_threads]\n", argv[0]);
    return 2;
  }
  try {
    pyengine::EngineOptions options;
    options.num_threads = argc > 4 ? std::atoi(argv[4]) : 0;
    pyengine::Engine engine = pyengine::Engine::load(argv[1], options);
    for (const pyengine::TensorSpec& s : engine.inputs())
      std::printf("input  %s %s %s\n", s.name.c_str(), pyengine::dtype_name(s.dtype), pyengine::shape_str(s.shape).c_str());
    if (engine.inputs().size() != 1) throw std::runtime_error("this sample runs single-input models");

    pyengine::DType dtype;
    pyengine::Shape shape;
    Buffer input = read_npy(argv[2], &dtype, &shape);
    const pyengine::ConstTensorView x(dtype, shape, input.data(), input.nbytes);

    // Caller-owned output buffers, sized for this input's batch.
    const std::vector<pyengine::Shape> shapes = engine.output_shapes({x});
    std::vector<Buffer> outputs;
    std::vector<pyengine::TensorView> views;
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      const pyengine::DType t = engine.outputs()[i].dtype;
      outputs.emplace_back(static_cast<std::size_t>(pyengine::numel(shapes[i])) * pyengine::dtype_size(t));
      views.push_back({t, shapes[i], outputs.back().data(), outputs.back().nbytes});
    }
    engine.run({x}, views);

    std::ofstream out(argv[3], std::ios::binary);
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      out.write(static_cast<const char*>(outputs[i].data()), static_cast<std::streamsize>(outputs[i].nbytes));
      std::printf("output %s %s %s\n", engine.outputs()[i].name.c_str(), pyengine::dtype_name(views[i].dtype),
                  pyengine::shape_str(views[i].shape).c_str());
    }
    if (!out) throw std::runtime_error(std::string("cannot write '") + argv[3] + "'");
  } catch (const pyengine::PlanFormatError& e) {
    std::fprintf(stderr, "cannot load the plan (PlanFormatError): %s\n", e.what());
    return 3;
  } catch (const pyengine::ShapeError& e) {
    std::fprintf(stderr, "the input does not fit the model (ShapeError): %s\n", e.what());
    return 4;
  } catch (const pyengine::DTypeError& e) {
    std::fprintf(stderr, "the input does not fit the model (DTypeError): %s\n", e.what());
    return 4;
  } catch (const pyengine::Error& e) {
    std::fprintf(stderr, "pyengine %s: %s\n", e.kind_name(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
