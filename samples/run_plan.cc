// Embedding the runtime without Python, built in the tree (the out-of-tree
// samples, built against the installed package, are cpp_app/ and c_app/):
// load a plan, run it on random input, print the output shapes and a sum.
//   pyengine_run model.plan [batch]
#include <cstdio>
#include <cstdlib>
#include <random>

#include "pyengine/engine.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s model.plan [batch]\n", argv[0]);
    return 2;
  }
  try {
    pyengine::Engine engine = pyengine::Engine::load(argv[1]);
    int64_t batch = argc > 2 ? std::atoll(argv[2]) : 1;
    std::mt19937 rng(0);
    std::normal_distribution<float> dist;
    std::vector<pyengine::Tensor> inputs;
    std::vector<pyengine::ConstTensorView> views;
    for (const auto& info : engine.inputs()) {
      pyengine::Shape shape = info.shape;
      for (auto& d : shape) if (d < 0) d = batch;
      pyengine::Tensor t = pyengine::allocate_tensor(info.dtype, shape);
      if (info.dtype == pyengine::DType::kFloat32)
        for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = dist(rng);
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
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
