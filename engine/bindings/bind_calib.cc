// INT8 calibration and quantization: observers, the Calibrator that hooks an
// Executor, per-channel weight quantization and the insert_qdq rewrite.
// The Python driver is pyengine/quantize.py.
#include <set>

#include "bindings/common.h"
#include "cpu/executor.h"
#include "quant/gptq_block.h"
#include "quant/insert_qdq.h"
#include "quant/observers.h"
#include "quant/quantize_weights.h"

namespace engine::py_bind {
namespace {

// An ObserverSet, optionally attached to an Executor's node-observer hook.
// Without an executor it is fed tensor by tensor with update() (tensors
// computed elsewhere, e.g. by onnxruntime).
// A tap, optionally: a Python callable handed (name, array) for each
// tensor of tap_names as the run computes it (GPTQ's input statistics,
// pyengine/gptq.py), with the GIL taken for the call; the array views the run's memory, valid during
// the call only (copy what is kept).
class Calibrator {
 public:
  Calibrator(std::shared_ptr<Executor> executor, const std::vector<std::string>& names, int num_bins,
             py::object tap = py::none(), const std::vector<std::string>& tap_names = {})
      : executor_(std::move(executor)),
        set_(std::make_shared<ObserverSet>(names, num_bins)),
        tap_(std::move(tap)),
        tap_names_(tap_names.begin(), tap_names.end()) {
    if (tap_.is_none()) tap_names_.clear();
    if (executor_) {
      // (detach() clears the hook before this object goes away.)
      executor_->set_observer([this](const Node& n, int i, const Tensor& t) {
        set_->on_output(n, i, t);
        if (!tap_names_.empty() && n.output(i) && t.dtype() == DType::kFloat32) call_tap(n.output(i)->name(), t);
      });
    }
  }
  ~Calibrator() { detach(); }

  void detach() {
    if (executor_) executor_->set_observer(nullptr);
    executor_.reset();
  }

  // Runs the executor once; graph inputs that are calibrated (or tapped)
  // are observed here (the hook only sees node outputs). Returns the outputs.
  std::vector<Tensor> observe(const std::vector<Tensor>& inputs) {
    ENGINE_ENFORCE(executor_, kInvalidArgument,
                   "this Calibrator has no executor: feed it with update(name, array)");
    const auto& gin = executor_->graph().inputs();
    for (size_t i = 0; i < gin.size() && i < inputs.size(); ++i) {
      if (inputs[i].dtype() != DType::kFloat32) continue;
      if (set_->contains(gin[i]->name())) set_->update(gin[i]->name(), inputs[i]);
      call_tap(gin[i]->name(), inputs[i]);
    }
    return executor_->run(inputs);
  }

  // Called without the GIL (observe releases it).
  void call_tap(const std::string& name, const Tensor& t) {
    if (!tap_names_.count(name)) return;
    py::gil_scoped_acquire gil;
    tap_(name, array_from_tensor(t));
  }

  ObserverSet& set() { return *set_; }
  bool attached() const { return executor_ != nullptr; }

 private:
  std::shared_ptr<Executor> executor_;
  std::shared_ptr<ObserverSet> set_;
  py::object tap_;
  std::set<std::string> tap_names_;
};

py::dict observer_stats(const TensorObserver& o) {
  py::dict d;
  d["count"] = o.count();
  d["nonfinite"] = o.nonfinite();
  d["absmax"] = o.absmax();
  d["min"] = o.min();
  d["max"] = o.max();
  d["range"] = o.range();
  d["num_bins"] = o.num_bins();
  d["histogram"] = py::array_t<int64_t>(o.histogram().size(), o.histogram().data());
  return d;
}

py::array_t<float> float_array(const std::vector<float>& v) {
  return py::array_t<float>(v.size(), v.data());
}

}  // namespace

void register_calib(py::module_& m) {
  m.def("calib_methods", [] { return std::vector<std::string>{"entropy", "percentile", "mse", "minmax"}; });

  m.def(
      "amax_from_histogram",
      [](const std::vector<int64_t>& hist, double range, const std::string& method, double percentile) {
        return amax_from_histogram(hist, range, calib_method_from_name(method), percentile);
      },
      py::arg("histogram"), py::arg("range"), py::arg("method"), py::arg("percentile") = kDefaultPercentile,
      "The threshold a method picks for a histogram of |x| with equal bins over [0, range].");

  py::class_<TensorObserver>(m, "TensorObserver", "Calibration statistics of one tensor (quant/observers.h).")
      .def(py::init<int>(), py::arg("num_bins") = kDefaultNumBins)
      .def("update",
           [](TensorObserver& o, const py::array& a) {
             Tensor t = tensor_from_array(a, "observed tensor");
             py::gil_scoped_release nogil;
             o.update(t);
           })
      .def("amax",
           [](const TensorObserver& o, const std::string& method, double percentile) {
             return o.amax(calib_method_from_name(method), percentile);
           },
           py::arg("method"), py::arg("percentile") = kDefaultPercentile)
      .def("set_eval_scale", &TensorObserver::set_eval_scale, py::arg("scale"), py::arg("statistics") = true)
      .def_property_readonly("sqnr_db", &TensorObserver::sqnr_db)
      .def_property_readonly("count", &TensorObserver::count)
      .def_property_readonly("nonfinite", &TensorObserver::nonfinite)
      .def_property_readonly("absmax", &TensorObserver::absmax)
      .def_property_readonly("integral", &TensorObserver::integral)
      .def_property_readonly("min", &TensorObserver::min)
      .def_property_readonly("max", &TensorObserver::max)
      .def_property_readonly("range", &TensorObserver::range)
      .def_property_readonly("num_bins", &TensorObserver::num_bins)
      .def("histogram", [](const TensorObserver& o) {
        return py::array_t<int64_t>(o.histogram().size(), o.histogram().data());
      });

  py::class_<Calibrator, std::shared_ptr<Calibrator>>(
      m, "Calibrator",
      "Observers for named tensors, fed by an Executor's runs (observe) or directly (update).\n"
      "Attaching takes over the executor's observer hook until detach() or destruction.")
      .def(py::init([](std::shared_ptr<Executor> ex, const std::vector<std::string>& names, int num_bins,
                       py::object tap, const std::vector<std::string>& tap_names) {
             return std::make_shared<Calibrator>(std::move(ex), names, num_bins, std::move(tap), tap_names);
           }),
           py::arg("executor"), py::arg("names"), py::arg("num_bins") = kDefaultNumBins, py::arg("tap") = py::none(),
           py::arg("tap_names") = std::vector<std::string>{})
      .def("observe",
           [](Calibrator& c, const std::vector<py::array>& arrays) {
             std::vector<Tensor> inputs;
             inputs.reserve(arrays.size());
             for (size_t i = 0; i < arrays.size(); ++i)
               inputs.push_back(tensor_from_array(arrays[i], "calibration input " + std::to_string(i)));
             std::vector<Tensor> outputs;
             {
               py::gil_scoped_release nogil;
               outputs = c.observe(inputs);
               inputs.clear();
             }
             py::list l;
             for (const Tensor& t : outputs) l.append(array_from_tensor(t));
             return l;
           },
           "Runs the executor on one batch (inputs in graph order, GIL released); returns its outputs.")
      .def("update",
           [](Calibrator& c, const std::string& name, const py::array& a) {
             Tensor t = tensor_from_array(a, "tensor '" + name + "'");
             py::gil_scoped_release nogil;
             c.set().update(name, t);
           })
      .def("amax",
           [](Calibrator& c, const std::string& method, double percentile) {
             CalibMethod m = calib_method_from_name(method);
             py::gil_scoped_release nogil;
             return c.set().amax(m, percentile);
           },
           py::arg("method") = "entropy", py::arg("percentile") = kDefaultPercentile,
           "{tensor name: amax} for every tensor that saw finite data.")
      .def("nonfinite", [](Calibrator& c) { return c.set().nonfinite(); })
      .def("stats", [](Calibrator& c, const std::string& name) { return observer_stats(c.set().get(name)); })
      .def(
          "set_eval_scales",
          [](Calibrator& c, const std::map<std::string, float>& s, bool statistics) {
            c.set().set_eval_scales(s, statistics);
          },
          py::arg("scales"), py::arg("statistics") = true)
      .def("sqnr_db", [](Calibrator& c) { return c.set().sqnr_db(); })
      .def_property_readonly("names", [](Calibrator& c) { return c.set().names(); })
      .def_property_readonly("attached", &Calibrator::attached)
      .def("detach", &Calibrator::detach);

  m.def(
      "quantize_weights",
      [](const py::array& w, int axis) {
        Tensor t = tensor_from_array(w, "weights");
        QuantizedWeights q = quantize_weights(t, axis);
        return py::make_tuple(array_from_tensor(q.values), float_array(q.scale));
      },
      py::arg("weights"), py::arg("axis") = 0,
      "Symmetric per-channel int8: returns (int8 values, float32 scales along axis).");

  m.def(
      "gptq_block",
      [](py::array_t<float, py::array::c_style> w, py::array_t<float, py::array::c_style | py::array::forcecast> u,
         py::array_t<float, py::array::c_style | py::array::forcecast> scale) {
        ENGINE_ENFORCE(w.ndim() == 3 && u.ndim() == 3 && scale.ndim() == 2 && u.shape(0) == w.shape(0) &&
                           scale.shape(0) == w.shape(0) && scale.shape(1) == w.shape(1) &&
                           u.shape(1) == w.shape(2) && u.shape(2) == w.shape(2),
                       kInvalidArgument, "gptq_block: w [G, M, B], u [G, B, B] and scale [G, M] expected");
        const int64_t g = w.shape(0), rows = w.shape(1), b = w.shape(2);
        py::array_t<float> q({g, rows, b}), err({g, rows, b});
        float* wp = w.mutable_data();
        {
          py::gil_scoped_release release;
          for (int64_t i = 0; i < g; ++i)
            gptq_block(wp + i * rows * b, rows, b, b, u.data() + i * b * b, b, scale.data() + i * rows,
                       q.mutable_data() + i * rows * b, err.mutable_data() + i * rows * b);
        }
        return py::make_tuple(q, err);
      },
      py::arg("w").noconvert(), py::arg("u"), py::arg("scale"),
      "GPTQ's column sweep of one block (quant/gptq_block.h), for G groups: updates w [G, M, B] (float32, "
      "C-contiguous) in place; returns (levels, errors), float32 [G, M, B].");

  m.def(
      "insert_qdq",
      [](Graph& g, const std::map<std::string, float>& amax, const std::vector<std::string>& keep_fp32,
         bool asymmetric) {
        InsertQdqOptions options;
        options.amax = amax;
        options.asymmetric_nonnegative = asymmetric;
        options.keep_fp32.insert(keep_fp32.begin(), keep_fp32.end());
        InsertQdqResult r = insert_qdq(g, options);
        py::dict d;
        d["quantized_nodes"] = r.quantized_nodes;
        py::list skipped;
        for (auto& [node, reason] : r.skipped) skipped.append(py::make_tuple(node, reason));
        d["skipped"] = skipped;
        d["activation_scales"] = r.activation_scales;
        d["activation_zero_points"] = r.activation_zero_points;
        d["activation_consumers"] = r.activation_consumers;
        d["weight_consumers"] = r.weight_consumers;
        d["num_activation_pairs"] = r.num_activation_pairs;
        d["num_weights"] = r.num_weights;
        return d;
      },
      py::arg("graph"), py::arg("amax"), py::arg("keep_fp32") = std::vector<std::string>{},
      py::arg("asymmetric") = false,
      "Places Q/DQ pairs in `graph` (in place) as TensorRT wants them (quant/insert_qdq.h).");
}

}  // namespace engine::py_bind
