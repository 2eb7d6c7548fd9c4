// The public C++ API for embedding pyengine's CPU runtime (video pipelines,
// services) without Python: load a plan file written by pyengine.build(...)
// .save(), run it on tensors.
//
// Thread-safety: Engine::run may be called from several threads; calls on
// one Engine are serialized. Create one Engine per stream for parallelism.
// Errors: every failure throws engine::Error (core/error.h) with a message.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace engine { class Executor; class Graph; }

namespace pyengine {

using engine::DType;
using engine::Shape;
using engine::Tensor;
using engine::shape_str;

struct TensorInfo {
  std::string name;
  DType dtype;
  Shape shape;  // -1 for dynamic axes
};

class Engine {
 public:
  // Loads a CPU plan. num_threads 0 = all hardware threads.
  static Engine load(const std::string& path, int num_threads = 0);

  const std::vector<TensorInfo>& inputs() const { return inputs_; }
  const std::vector<TensorInfo>& outputs() const { return outputs_; }
  const std::string& metadata_json() const { return metadata_; }
  // Inputs in the order of inputs(); outputs in the order of outputs().
  std::vector<Tensor> run(const std::vector<Tensor>& inputs);

 private:
  std::shared_ptr<engine::Executor> executor_;
  std::vector<TensorInfo> inputs_, outputs_;
  std::string metadata_;
};

}  // namespace pyengine
