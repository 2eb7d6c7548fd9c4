// Embedding the runtime without Python, built in the tree (the out-of-tree
// samples, built against the installed package, are cpp_app/ and c_app/):
// load a plan, run it, print the output shapes and a sum.
//   pyengine_run model.plan [batch] [--input in.f32] [--output out.f32]
// Without --input the (float32) inputs are drawn at random (seed 0). With it,
// the first input is read from a raw little-endian float32 file holding
// exactly batch x (the input's other dims) values; --output writes the first
// output (float32) the same way. tools/ci/arm64.sh uses the two to check an
// aarch64 build under qemu against Python's x86 result.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>

#include "pyengine/engine.h"

namespace {

bool read_raw(const std::string& path, pyengine::Tensor& t) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return false;
  const std::streamoff want = t.numel() * static_cast<std::streamoff>(sizeof(float));
  if (f.tellg() != want) {
    std::fprintf(stderr, "error: %s holds %lld bytes, the input needs %lld\n", path.c_str(),
                 static_cast<long long>(f.tellg()), static_cast<long long>(want));
    return false;
  }
  f.seekg(0);
  return static_cast<bool>(f.read(reinterpret_cast<char*>(t.data_as<float>()), want));
}

bool write_raw(const std::string& path, const pyengine::Tensor& t) {
  std::ofstream f(path, std::ios::binary);
  return static_cast<bool>(f.write(reinterpret_cast<const char*>(t.data_as<float>()),
                                   static_cast<std::streamsize>(t.numel() * sizeof(float))));
}

}  // namespace

int main(int argc, char** argv) {
  std::string plan, input_path, output_path;
  int64_t batch = 1;
  int positional = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--input") == 0 && i + 1 < argc) {
      input_path = argv[++i];
    } else if (std::strcmp(argv[i], "--output") == 0 && i + 1 < argc) {
      output_path = argv[++i];
    } else if (positional == 0) {
      plan = argv[i], ++positional;
    } else if (positional == 1) {
      batch = std::atoll(argv[i]), ++positional;
    } else {
      plan.clear();
      break;
    }
  }
  if (plan.empty() || batch < 1) {
    std::fprintf(stderr, "usage: %s model.plan [batch] [--input in.f32] [--output out.f32]\n", argv[0]);
    return 2;
  }
  try {
    pyengine::Engine engine = pyengine::Engine::load(plan);
    std::mt19937 rng(0);
    std::normal_distribution<float> dist;
    std::vector<pyengine::Tensor> inputs;
    std::vector<pyengine::ConstTensorView> views;
    for (const auto& info : engine.inputs()) {
      pyengine::Shape shape = info.shape;
      for (auto& d : shape) if (d < 0) d = batch;
      pyengine::Tensor t = pyengine::allocate_tensor(info.dtype, shape);
      if (inputs.empty() && !input_path.empty()) {
        if (info.dtype != pyengine::DType::kFloat32) {
          std::fprintf(stderr, "error: --input needs a float32 first input\n");
          return 1;
        }
        if (!read_raw(input_path, t)) {
          std::fprintf(stderr, "error: cannot read %s\n", input_path.c_str());
          return 1;
        }
      } else if (info.dtype == pyengine::DType::kFloat32) {
        for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = dist(rng);
      }
      inputs.push_back(t);
      views.push_back(inputs.back().view());
    }
    std::vector<pyengine::Tensor> outputs = engine.run(views);
    for (size_t i = 0; i < outputs.size(); ++i) {
      double sum = 0;
      if (outputs[i].dtype() == pyengine::DType::kFloat32)
        for (int64_t k = 0; k < outputs[i].numel(); ++k) sum += outputs[i].data_as<float>()[k];
      std::printf("%s %s sum=%.6f\n", engine.outputs()[i].name.c_str(),
                  pyengine::shape_str(outputs[i].shape()).c_str(), sum);
    }
    if (!output_path.empty()) {
      if (outputs.at(0).dtype() != pyengine::DType::kFloat32) {
        std::fprintf(stderr, "error: --output needs a float32 first output\n");
        return 1;
      }
      if (!write_raw(output_path, outputs[0])) {
        std::fprintf(stderr, "error: cannot write %s\n", output_path.c_str());
        return 1;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
