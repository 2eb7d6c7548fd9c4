// pyengine::Engine: plan file -> CPU executor, for C++ embedders.
#include "pyengine/engine.h"

#include "cpu/executor.h"
#include "plan/plan.h"

namespace pyengine {

Engine Engine::load(const std::string& path, int num_threads) {
  engine::PlanContents c = engine::load_plan(path);
  // CPU plans only: a TensorRT plan is run by the Python backend.
  if (c.metadata_json.find("\"backend\": \"tensorrt\"") != std::string::npos)
    engine::fail(engine::ErrorKind::kPlanFormat, "'", path, "' is a TensorRT plan; the C++ runtime runs CPU plans");
  Engine e;
  e.metadata_ = c.metadata_json;
  std::shared_ptr<const engine::Graph> g(std::move(c.graph));
  for (auto* v : g->inputs()) e.inputs_.push_back({v->name(), v->dtype(), v->shape()});
  for (auto* v : g->outputs()) e.outputs_.push_back({v->name(), v->dtype(), v->shape()});
  engine::ExecutorOptions opts;
  opts.num_threads = num_threads;
  try {
    e.executor_ = std::make_shared<engine::Executor>(g, opts);
  } catch (const engine::Error& err) {
    // The reader validated the graph; a plan whose graph still cannot be
    // compiled was edited or corrupted (format.md: a PlanFormatError).
    if (err.kind() == engine::ErrorKind::kPlanFormat) throw;
    engine::fail(engine::ErrorKind::kPlanFormat, "plan '", path, "' holds a graph that cannot be compiled: ",
                 err.what());
  }
  return e;
}

std::vector<Tensor> Engine::run(const std::vector<Tensor>& inputs) { return executor_->run(inputs); }

}  // namespace pyengine
