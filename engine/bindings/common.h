// Shared helpers for the binding files: numpy <-> Tensor without copies.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "core/tensor.h"

namespace engine::py_bind {

namespace py = pybind11;

// A numpy array as a Tensor that borrows its memory (C-contiguous arrays
// only; others are copied once). The array stays alive while the tensor does.
Tensor tensor_from_array(const py::array& a, const std::string& what);
// A Tensor as a numpy array sharing its storage.
py::array array_from_tensor(const Tensor& t);
DType dtype_from_numpy(const py::dtype& dt, const std::string& what);
py::dtype numpy_dtype(DType t);

void register_ir(py::module_& m);
void register_runtime(py::module_& m);
void register_plan(py::module_& m);
void register_passes(py::module_& m);
void register_quant(py::module_& m);
void register_calib(py::module_& m);

}  // namespace engine::py_bind
