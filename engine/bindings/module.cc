// pyengine._core: thin bindings only; the Python API lives in pyengine/.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

#include "bindings/common.h"
#include "core/checked_math.h"
#include "core/error.h"
#include "cpu/dispatch.h"
#include "cpu/kernel_table.h"
#include "cpu/thread_pool.h"

namespace engine::py_bind {

DType dtype_from_numpy(const py::dtype& dt, const std::string& what) {
  char kind = dt.kind();
  auto size = dt.itemsize();
  if (kind == 'f' && size == 4) return DType::kFloat32;
  if (kind == 'f' && size == 8) return DType::kFloat64;
  if (kind == 'f' && size == 2) return DType::kFloat16;
  if (kind == 'i' && size == 8) return DType::kInt64;
  if (kind == 'i' && size == 4) return DType::kInt32;
  if (kind == 'i' && size == 2) return DType::kInt16;
  if (kind == 'i' && size == 1) return DType::kInt8;
  if (kind == 'u' && size == 8) return DType::kUInt64;
  if (kind == 'u' && size == 4) return DType::kUInt32;
  if (kind == 'u' && size == 2) return DType::kUInt16;
  if (kind == 'u' && size == 1) return DType::kUInt8;
  if (kind == 'b' && size == 1) return DType::kBool;
  fail(ErrorKind::kDType, what, ": numpy dtype '", std::string(py::str(dt)), "' is not supported");
}

py::dtype numpy_dtype(DType t) {
  return py::dtype(std::string(dtype_name(t)) == "undefined" ? "float32" : dtype_name(t));
}

Tensor tensor_from_array(const py::array& input, const std::string& what) {
  DType dt = dtype_from_numpy(input.dtype(), what);
  py::array a = input;
  if (!(a.flags() & py::array::c_style) || (reinterpret_cast<uintptr_t>(a.data()) % dtype_size(dt)) != 0)
    a = py::array::ensure(input, py::array::c_style | py::array::forcecast);
  Shape shape(a.shape(), a.shape() + a.ndim());
  // The holder keeps the array alive; it may be released on a thread that
  // does not hold the GIL (after a run), so take it before decrementing.
  auto* keep = new py::object(a);
  std::shared_ptr<void> holder(keep, [](void* p) {
    py::gil_scoped_acquire gil;
    delete static_cast<py::object*>(p);
  });
  return Tensor::borrow(dt, shape, const_cast<void*>(a.data()), holder);
}

py::array array_from_tensor(const Tensor& t) {
  auto* keep = new std::shared_ptr<void>(t.holder());
  py::capsule base(keep, [](void* p) { delete static_cast<std::shared_ptr<void>*>(p); });
  std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end());
  std::vector<py::ssize_t> strides(shape.size());
  py::ssize_t stride = static_cast<py::ssize_t>(dtype_size(t.dtype()));
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = stride;
    stride *= std::max<py::ssize_t>(shape[i], 1);
  }
  return py::array(numpy_dtype(t.dtype()), shape, strides, t.raw(), base);
}

}  // namespace engine::py_bind

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  using namespace engine;
  m.doc() = "pyengine C++ core (graph IR, optimizer, CPU runtime, plan files)";

  // Map engine::Error kinds onto the Python hierarchy of pyengine.errors.
  py::module_ errors = py::module_::import("pyengine.errors");
  static py::object kClasses[7];
  kClasses[static_cast<int>(ErrorKind::kInvalidModel)] = errors.attr("InvalidModelError");
  kClasses[static_cast<int>(ErrorKind::kUnsupportedOperator)] = errors.attr("UnsupportedOperatorError");
  kClasses[static_cast<int>(ErrorKind::kShape)] = errors.attr("ShapeError");
  kClasses[static_cast<int>(ErrorKind::kDType)] = errors.attr("DTypeError");
  kClasses[static_cast<int>(ErrorKind::kPlanFormat)] = errors.attr("PlanFormatError");
  kClasses[static_cast<int>(ErrorKind::kInvalidArgument)] = errors.attr("InvalidArgumentError");
  kClasses[static_cast<int>(ErrorKind::kInternal)] = errors.attr("InternalError");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      // Messages quote names from files, which need not be valid UTF-8:
      // decode with replacement so the error is never a UnicodeDecodeError.
      const std::string msg = e.what();
      PyObject* text = PyUnicode_DecodeUTF8(msg.data(), static_cast<Py_ssize_t>(msg.size()), "replace");
      if (!text) return;  // leaves Python's own error set
      PyErr_SetObject(kClasses[static_cast<int>(e.kind())].ptr(), text);
      Py_DECREF(text);
    } catch (const std::bad_alloc&) {
      // A user can ask for more memory than there is (a huge batch).
      PyErr_SetString(kClasses[static_cast<int>(ErrorKind::kShape)].ptr(),
                      "pyengine: out of memory (a tensor or buffer of this model does not fit)");
    } catch (const std::length_error& e) {
      // std::vector / std::string asked for more than max_size().
      PyErr_SetString(kClasses[static_cast<int>(ErrorKind::kShape)].ptr(),
                      (std::string("pyengine: a size does not fit in memory (") + e.what() + ")").c_str());
    }
  });

  m.def("max_tensor_bytes", &max_tensor_bytes, "The per-tensor byte limit (core/checked_math.h).");
  m.def("set_max_tensor_bytes", &set_max_tensor_bytes, py::arg("bytes"),
        "Sets the per-tensor byte limit; <= 0 restores the default (physical memory).");
  m.def("max_dim", [] { return kMaxDim; }, "The largest dim, pad, stride, dilation or kernel size accepted.");
  m.def("cpu_info", [] {
    const CpuFeatures& f = cpu_features();
    py::dict d;
    d["brand"] = f.brand;
    d["avx2"] = f.avx2;
    d["fma"] = f.fma;
    d["f16c"] = f.f16c;
    d["avx512f"] = f.avx512f;
    d["avx512bw"] = f.avx512bw;
    d["avx512vl"] = f.avx512vl;
    d["avx512dq"] = f.avx512dq;
    d["avx512vnni"] = f.avx512vnni;
    d["avx_vnni"] = f.avx_vnni;
    d["amx_int8"] = f.amx_int8;
    d["amx_permitted"] = f.amx_permitted;
    if (!f.amx_note.empty()) d["amx_note"] = f.amx_note;
    const IsaSet& s = isa();
    d["isa"] = active_isa();               // the tier in use (after PYENGINE_ISA / caps)
    d["max_isa"] = tier_name(max_isa_tier());
    d["use_avx2"] = s.avx2;
    d["use_avx512"] = s.avx512;
    d["use_avx512_vnni"] = s.avx512vnni;
    d["use_avx_vnni"] = s.avx_vnni;
    d["use_amx"] = s.amx;
    d["avx_vnni_use"] = avx_vnni_use_name(avx_vnni_use());  // AVX-VNNI u8 kernel: off until tested (dispatch.h)
    d["avx2_u8_dot"] = avx2_u8_dot() == AvxVnniUse::kOff ? "vpmaddubsw" : avx_vnni_use_name(avx2_u8_dot());
    d["amx_use"] = amx_use_name(amx_use());  // AMX kernels: off until tested on AMX (dispatch.h)
    // The int8 activation layout (dispatch.h, Int8Layout) and whether the
    // int8 pipeline converts now; a bad PYENGINE_INT8_LAYOUT is reported,
    // not raised, here (builds raise it).
    try {
      d["int8_layout"] = int8_layout_name(int8_layout());
      d["int8_channels_last"] = int8_channels_last();
    } catch (const Error& e) {
      d["int8_layout"] = std::string("invalid: ") + e.what();
    }
    d["hardware_threads"] = ThreadPool::hardware_threads();
    const std::vector<int> cpus = process_cpus();
    if (!cpus.empty()) {
      const CpuBudget b = cpu_budget(cpus);
      d["allowed_cpus"] = b.cpus;
      d["physical_cores"] = b.cores;
      d["cpu_quota"] = b.quota;
    }
    d["default_threads"] = default_threads();  // what num_threads=0 gives (PYENGINE_NUM_THREADS, else the budget)
    return d;
  });

  m.def("default_threads", &default_threads,
        "Threads of a pool made with num_threads=0 (PYENGINE_NUM_THREADS, else one per physical core).");

  // cpu_budget over a made-up /sys and /proc tree (tests).
  m.def("_cpu_budget", [](const std::vector<int>& cpus, const std::string& root) {
    const CpuBudget b = cpu_budget(cpus, root);
    py::dict d;
    d["cpus"] = b.cpus;
    d["cores"] = b.cores;
    d["quota"] = b.quota;
    d["threads"] = b.threads;
    return d;
  });

  // The machine-state probe tools/bench.py prints: the round trip of one
  // cache line between two threads on the first two CPUs the process may use
  // (ns, median of 5 rounds of 20000), or -1 with fewer than two CPUs. About
  // 50 ns where the cores share a cache; VMs whose vCPUs land on cores that
  // do not, and multi-die CPUs across dies, read several hundred, and
  // multi-threaded runs slow down with it.
  m.def("core_to_core_ns", [] {
    double result = -1.0;
#if defined(__linux__)
    py::gil_scoped_release release;
    const std::vector<int> cpus = process_cpus();
    if (cpus.size() < 2) return result;
    auto pin = [](int cpu) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      pthread_setaffinity_np(pthread_self(), sizeof one, &one);
    };
    constexpr int kRounds = 5, kTrips = 20000;
    std::vector<double> ns;
    for (int r = 0; r < kRounds; ++r) {
      alignas(64) std::atomic<int> flag{0};
      std::thread echo([&] {
        pin(cpus[1]);
        for (int i = 0; i < kTrips; ++i) {
          while (flag.load(std::memory_order_acquire) != 2 * i + 1) {
          }
          flag.store(2 * i + 2, std::memory_order_release);
        }
      });
      cpu_set_t before;
      pthread_getaffinity_np(pthread_self(), sizeof before, &before);
      pin(cpus[0]);
      // Wait for the echo thread to start before timing.
      flag.store(1, std::memory_order_release);
      while (flag.load(std::memory_order_acquire) != 2) {
      }
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 1; i < kTrips; ++i) {
        flag.store(2 * i + 1, std::memory_order_release);
        while (flag.load(std::memory_order_acquire) != 2 * i + 2) {
        }
      }
      const auto t1 = std::chrono::steady_clock::now();
      echo.join();
      pthread_setaffinity_np(pthread_self(), sizeof before, &before);
      ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / (kTrips - 1));
    }
    std::sort(ns.begin(), ns.end());
    result = ns[ns.size() / 2];
#endif
    return result;
  });

  // Testing hook for AffineTasks (thread_pool.h), n tasks over `threads`
  // slots: (which slot claimed each task, the order of slot 0's claims),
  // either on a real pool where every slot claims (all_slots; each task
  // then busy-waits task_us) or with slot 0 alone, as when the workers start
  // too late to take any.
  m.def(
      "_affine_claims",
      [](int64_t n, int threads, bool all_slots, double task_us) {
        std::vector<int> by(static_cast<size_t>(n), -1);
        std::vector<int64_t> order;
        {
          py::gil_scoped_release release;
          AffineTasks tasks(n, threads);
          if (all_slots) {
            ThreadPool pool(threads);
            std::vector<std::atomic<int>> who(static_cast<size_t>(n));
            for (auto& w : who) w.store(-1);
            std::atomic<int> twice{0};
            pool.run([&](int slot, int) {
              for (int64_t t = tasks.claim(slot); t >= 0; t = tasks.claim(slot)) {
                if (who[t].exchange(slot) != -1) twice.fetch_add(1);
                const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double, std::micro>(task_us);
                while (std::chrono::steady_clock::now() < until) {
                }
              }
            });
            ENGINE_ENFORCE(twice.load() == 0, kInternal, "a task was claimed twice");
            for (int64_t t = 0; t < n; ++t) by[t] = who[t].load();
          } else {
            for (int64_t t = tasks.claim(0); t >= 0; t = tasks.claim(0)) {
              ENGINE_ENFORCE(by[t] == -1, kInternal, "task ", t, " was claimed twice");
              by[t] = 0;
              order.push_back(t);
            }
          }
        }
        return py::make_tuple(by, order);
      },
      py::arg("n"), py::arg("threads"), py::arg("all_slots"), py::arg("task_us") = 0.0);

  m.def(
      "kernel_table",
      [] {
        py::list out;
        for (const KernelEntry& e : kernel_table()) {
          py::dict d;
          d["op"] = e.op;
          d["dtype"] = e.dtype;
          d["tier"] = tier_name(e.tier);
          d["symbol"] = e.symbol;
          d["width"] = e.width;
          d["usable"] = entry_usable(e);  // under the current cap, on this CPU and build
          out.append(d);
        }
        return out;
      },
      "Every kernel variant of cpu/kernels.def (op, dtype, tier, symbol, width, usable now).");
  m.def("set_force_ref", &set_force_ref,
        "Use only reference kernels in executors compiled from now on (for tests).");
  m.def(
      "set_isa_cap",
      [](const std::string& name) {
        IsaTier t;
        if (!parse_tier(name, &t))
          throw Error(ErrorKind::kInvalidArgument,
                      "unknown ISA tier '" + name + "' (expected ref, avx2, avx512, vnni or amx)");
        set_isa_cap(t);
      },
      "Caps the ISA tier for executors compiled from now on (like PYENGINE_ISA).");
  m.def("isa_cap", [] { return std::string(tier_name(isa_cap())); });
  m.def(
      "set_amx_use",
      [](const std::string& name) {
        AmxUse u;
        if (!parse_amx_use(name, &u))
          throw Error(ErrorKind::kInvalidArgument, "unknown AMX use '" + name + "' (expected off, on or emulated)");
        set_amx_use(u);
      },
      "Whether executors compiled from now on may run the AMX kernels (like PYENGINE_AMX): off (the default: "
      "they have not run on an AMX CPU yet), on (where the CPU has AMX-INT8), emulated (each tile instruction "
      "in plain C++, on AVX512-VNNI CPUs: for tests).");
  m.def("amx_use", [] { return std::string(amx_use_name(amx_use())); });
  m.def(
      "set_avx_vnni_use",
      [](const std::string& name) {
        AvxVnniUse u;
        if (!parse_avx_vnni_use(name, &u))
          throw Error(ErrorKind::kInvalidArgument, "unknown AVX-VNNI use '" + name + "' (expected off, on or evex)");
        set_avx_vnni_use(u);
      },
      "Whether QConv kernels created from now on may run the AVX2 u8 path on AVX-VNNI's vpdpbusd (like "
      "PYENGINE_AVXVNNI): off (the default: not yet run on an AVX-VNNI CPU), on (where the CPU has AVX-VNNI), "
      "evex (the same kernel EVEX-encoded, on AVX512-VNNI CPUs: for tests).");
  m.def("avx_vnni_use", [] { return std::string(avx_vnni_use_name(avx_vnni_use())); });
  m.def(
      "set_int8_layout",
      [](const std::string& name) {
        Int8Layout l;
        if (!parse_int8_layout(name, &l))
          throw Error(ErrorKind::kInvalidArgument, "unknown int8 layout '" + name + "' (expected auto, nchw or nhwc)");
        set_int8_layout(l);
      },
      "The activation layout between int8 convs for graphs lowered from now on (like PYENGINE_INT8_LAYOUT): "
      "auto (the default: channels-last where the QConv kernel is AVX512-VNNI without AMX), nchw (never), nhwc "
      "(always: other tiers run such convs through NCHW transposes; for tests).");
  m.def("int8_layout", [] { return std::string(int8_layout_name(int8_layout())); });

  py_bind::register_ir(m);
  py_bind::register_runtime(m);
  py_bind::register_plan(m);
  py_bind::register_passes(m);
  py_bind::register_quant(m);
  py_bind::register_calib(m);
}
