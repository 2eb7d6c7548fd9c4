// The CPU executor: compile a graph once, run it many times.
//
//   compile  (constructor) choose a kernel per node and pre-pack weights;
//            every unsupported operator of the model is reported at once.
//   plan     (first run at a new set of input shapes) infer every shape,
//            evaluate nodes whose inputs are all known (shape arithmetic
//            that depends on the batch size), and lay out one arena for all
//            intermediate tensors, reusing memory between values whose
//            lifetimes do not overlap. Plans are cached per input shapes
//            (and per value of small integer inputs, i.e. shape tensors).
//   run      bind inputs (zero-copy), run the remaining nodes in order.
// Thread-safety: run() may be called from several threads; calls are
// serialized (one arena). Use one Executor per thread for parallel streams.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cpu/kernel.h"
#include "ir/graph.h"
#include "ir/infer.h"

namespace engine {

struct ExecutorOptions {
  int num_threads = 0;  // 0: one per hardware thread
  // Bytes a run may need for the activation arena plus its outputs; a run
  // that needs more fails with Error(kShape) before allocating. 0: no limit.
  int64_t memory_limit = 0;
};

// Called after each executed node with each of its outputs (calibration).
using NodeObserver = std::function<void(const Node& node, int output_index, const Tensor& t)>;

struct LayerProfile {
  std::string name;    // node name
  std::string op;      // op type
  std::string kernel;  // kernel description
  double ms = 0;       // time in the last profiled run
  double flops = 0;    // multiply-adds x2 for Conv/Gemm/MatMul, 0 otherwise
  bool executed = false;             // false for nodes folded at plan time
  std::vector<std::string> origin;   // ONNX nodes this layer was made from
};

class Executor {
 public:
  Executor(std::shared_ptr<const Graph> graph, ExecutorOptions options = {});
  ~Executor();

  const Graph& graph() const { return *graph_; }
  // Whether graph input i is read as a value (a shape operand), not only
  // for its shape: output_shapes() needs its data.
  bool input_is_value(size_t i) const { return i < value_input_.size() && value_input_[i]; }
  int num_threads() const { return pool_.num_threads(); }

  // Inputs in the order of graph().inputs(); returns outputs in the order of
  // graph().outputs(). Outputs own fresh storage. Throws kShape / kDType for
  // inputs that do not match the model, naming the input.
  std::vector<Tensor> run(const std::vector<Tensor>& inputs);
  // As run(), but writes output i into outputs[i]: caller-owned storage of
  // exactly the output's dtype and shape for these inputs (checked: kDType /
  // kShape naming the output). Nothing is allocated for outputs. The buffers
  // must not overlap each other or the inputs.
  void run_into(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs);
  // The shapes of the outputs run(inputs) returns, in order. Plans (and
  // caches) as run() does, runs nothing; only inputs that feed a shape
  // operand are read.
  std::vector<Shape> output_shapes(const std::vector<Tensor>& inputs);

  // The setters and readers below take the run lock, so they may be called
  // while other threads run(): they wait for the run in progress.
  void set_observer(NodeObserver observer) {
    std::lock_guard<std::mutex> lock(mu_);
    observer_ = std::move(observer);
  }
  void set_profiling(bool on) {
    std::lock_guard<std::mutex> lock(mu_);
    profiling_ = on;
  }
  // Per-layer times of the last run made with profiling on.
  std::vector<LayerProfile> last_profile() const;
  // Bytes of the activation arena (the largest plan run so far).
  size_t arena_bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return arena_size_;
  }
  size_t num_plans() const {
    std::lock_guard<std::mutex> lock(mu_);
    return plans_.size();
  }
  // See ExecutorOptions::memory_limit (0: none). Thread-safe.
  void set_memory_limit(int64_t bytes) { memory_limit_.store(bytes > 0 ? bytes : 0); }
  int64_t memory_limit() const { return memory_limit_.load(); }

 private:
  struct Plan;
  std::shared_ptr<Plan> make_plan(const std::vector<Tensor>& inputs);
  // The cached plan for these inputs' shapes, made on a miss. Caller holds mu_.
  std::shared_ptr<Plan> plan_for(const std::vector<Tensor>& inputs);
  std::vector<Tensor> run_impl(const std::vector<Tensor>& inputs, const std::vector<Tensor>* outputs);
  void check_inputs(const std::vector<Tensor>& inputs) const;

  std::shared_ptr<const Graph> graph_;
  ThreadPool pool_;
  KernelContext kctx_;
  std::vector<Node*> nodes_;
  std::vector<Value*> values_;
  std::map<const Value*, int> value_index_;
  std::vector<std::unique_ptr<Kernel>> kernels_;
  std::vector<const KernelInfo*> infos_;
  std::vector<char> value_input_;  // per graph input: feeds a shape operand
  std::map<std::vector<Shape>, std::shared_ptr<Plan>> plans_;
  std::vector<std::vector<Shape>> plan_order_;
  std::shared_ptr<void> arena_;
  size_t arena_size_ = 0;
  mutable std::mutex mu_;  // run() and everything it writes below
  NodeObserver observer_;
  bool profiling_ = false;
  std::atomic<int64_t> memory_limit_{0};
  std::vector<double> node_ms_;
  std::shared_ptr<Plan> last_plan_;
};

}  // namespace engine
