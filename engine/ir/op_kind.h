// OpKind: the enum every pass and kernel switches on. ONNX op-name strings
// appear only in ops.def (through op_schema.cc) and in pyengine/onnx_io.py.
#pragma once

#include <string>
#include <string_view>

namespace engine {

enum class OpKind : int {
  kUnknown = 0,
#define OP(kind, name, domain) kind,
#include "ir/ops.def"
#undef OP
  kNumOpKinds
};

// Name as written in ONNX ("Conv"), and its domain ("" or "pyengine").
const char* op_name(OpKind k);
const char* op_domain(OpKind k);
// Looks up an ONNX (domain, op_type); kUnknown when we do not know it.
// "ai.onnx" is treated as the default domain.
OpKind op_kind_from_name(std::string_view domain, std::string_view op_type);

}  // namespace engine
